"""docs/results/tools/curve_diff.py: a rerun's curve (from a fairseq log through log_curve.py) against
a committed one, where the update at which they part is known by construction."""
import csv
import json

import pytest

from tests.helpers import load_results_tool

diff = load_results_tool("curve_diff")
log_curve = load_results_tool("log_curve")
FIELDS = ["model", "code_commit", "updates", "valid_bleu_greedy", "valid_loss"]
OLD = [(250, 13.87, 5.698), (500, 24.07, 4.665), (750, 29.5, 4.2)]


def _write(path, curve):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for n, bleu, loss in curve:
            w.writerow({"model": "teacher", "code_commit": "abc1234", "updates": n, "valid_bleu_greedy": bleu,
                        "valid_loss": loss})
    return str(path)


def _rerun(tmp_path, capsys, curve):
    """The rerun's curve as the study's fairseq log holds it, turned into CSV by log_curve.py."""
    log = tmp_path / "train.log"
    log.write_text("".join(
        f'2026-12-06 10:00:00,000 | INFO | valid | {json.dumps({"valid_loss": str(l), "valid_bleu": str(b), "valid_num_updates": str(n)})}\n'
        for n, b, l in curve))
    assert log_curve.main([str(log)]) == 0
    new = tmp_path / "new.csv"
    new.write_text(capsys.readouterr().out)
    return str(new)


def test_same_run_to_the_digit(tmp_path, capsys):
    old = _write(tmp_path / "old.csv", OLD)
    new = _rerun(tmp_path, capsys, OLD[:2])  # a rerun still running: two validations so far
    assert diff.main([old, new, "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "The same run: all 2 shared validations agree to the digit (through update 500)" in out
    assert "| 500 | 24.07 | 24.07 | +0.00 | 4.665 | 4.665 | +0.000 |" in out
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["shared"] == [250, 500] and c["first_difference"] is None and c["same_through"] == 500


def test_part_at_the_first_differing_validation(tmp_path, capsys):
    old = _write(tmp_path / "old.csv", OLD)
    # equal BLEU at 500 but a loss one digit off: that is already another run
    new = _rerun(tmp_path, capsys, [(250, 13.87, 5.698), (500, 24.07, 4.666), (750, 30.0, 4.1)])
    assert diff.main([old, new, "--names", "A", "B"]) == 0
    out = capsys.readouterr().out
    assert "Agree through update 250; part at update 500." in out
    assert "| 750 | 29.50 | 30.00 | +0.50 | 4.200 | 4.100 | -0.100 |" in out and "BLEU A | BLEU B" in out


def test_different_from_the_start_and_bad_inputs(tmp_path, capsys):
    old = _write(tmp_path / "old.csv", OLD)
    new = _rerun(tmp_path, capsys, [(250, 15.23, 5.48)])
    assert diff.main([old, new]) == 0
    assert "Different runs from the first shared validation (update 250)." in capsys.readouterr().out
    assert diff.main([old, str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv not found" in capsys.readouterr().err
    later = _write(tmp_path / "later.csv", [(1000, 30.0, 4.0)])
    assert diff.main([old, later]) == 2
    assert "no update is in both curves" in capsys.readouterr().err
    (tmp_path / "empty.csv").write_text("updates,valid_loss\n")
    assert diff.main([old, str(tmp_path / "empty.csv")]) == 2
    assert "holds no validation" in capsys.readouterr().err


@pytest.mark.parametrize("a,b,first", [({1: (1.0, 2.0)}, {1: (1.0, 2.0)}, None), ({1: (1.0, 2.0)}, {1: (None, 2.0)}, 1)])
def test_compare_reads_a_missing_bleu_as_a_difference(a, b, first):
    assert diff.compare(a, b)["first_difference"] == first
