"""A cell's decode log is appended to: a fairseq-generate killed part-way, then re-run into the same
generate.*.log, must give the re-run's hypotheses only (never the killed run's for the ids it reached)."""
import json
import sys

import pytest

from fairseq_kd.errors import KDInputError
from fairseq_kd.study.logs import parse_generate, parse_train_log, run_header
from fairseq_kd.study.processes import run_logged

KILLED = "H-1\t-0.5\tOLD one\nH-0\t-0.4\tOLD zero\n"  # batch order; killed before id 2
RERUN = "S-1\tb\nH-1\t-0.3\tnew one\nH-1\t-0.9\tnew one nbest2\nH-0\t-0.2\tnew zero\nH-2\t-0.1\tnew two\n"
GEN = ["fairseq-generate", "d", "--path", "c.pt"]


@pytest.mark.unit
def test_a_killed_decode_then_a_rerun_gives_the_reruns_hypotheses_in_order():
    log = run_header(GEN) + KILLED + run_header(GEN) + RERUN
    assert parse_generate(log) == ["new zero", "new one", "new two"]  # best of the n-best per id
    assert parse_generate(KILLED + "H-0\t-0.1\tlater\n") == ["OLD zero", "OLD one"]  # no header: the whole text


@pytest.mark.unit
def test_run_logged_appends_and_the_parser_reads_the_last_run(tmp_path):
    """The real writer: a decode that dies after two hypotheses, then a complete re-run into the same log."""
    log = tmp_path / "generate.beam.log"

    def tool(out, code):
        return [sys.executable, "-c", f"import sys; sys.stdout.write({out!r}); sys.stdout.flush(); sys.exit({code})"]

    with pytest.raises(RuntimeError, match="exit 1"):
        run_logged(tool(KILLED, 1), str(log))
    run_logged(tool(RERUN, 0), str(log))
    text = log.read_text(encoding="utf-8")
    assert "OLD one" in text  # appended, not overwritten
    assert parse_generate(text) == ["new zero", "new one", "new two"]


@pytest.mark.unit
def test_a_bad_line_of_the_last_run_is_reported_at_its_line_in_the_file():
    log = run_header(GEN) + KILLED + run_header(GEN) + "H-0\tnot-a-score\tx\n"
    bad_line = log.split("\n").index("H-0\tnot-a-score\tx") + 1
    with pytest.raises(KDInputError, match=f"line {bad_line} is not a fairseq-generate hypothesis line"):
        parse_generate(log)


@pytest.mark.unit
def test_a_resumed_train_log_keeps_the_earlier_runs_records():
    """Only decode logs are cut to their last run: a resumed fairseq-train continues the earlier curve."""
    def valid(n, loss):
        rec = {"valid_loss": str(loss), "valid_num_updates": str(n)}
        return f"2026-01-01 | INFO | valid | {json.dumps(rec)}\n"

    log = run_header(["fairseq-train"]) + valid(10, 5.0) + run_header(["fairseq-train"]) + valid(20, 4.0)
    assert parse_train_log(log)["curve"] == [[10, {"valid_loss": 5.0}], [20, {"valid_loss": 4.0}]]
