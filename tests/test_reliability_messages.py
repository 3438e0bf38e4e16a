"""One line naming the file and the fix instead of a traceback.

Bad files of each kind (checkpoints: empty, truncated, text, a torch file that is no fairseq
checkpoint; text: non-UTF-8; results: malformed rows) are given to every tool that reads them;
each must exit 2 with ``error:`` and the file's name, and print no traceback.
"""

import pytest

from tests.reliability_helpers import run_cli as _run


pytestmark = pytest.mark.unit


def bad_checkpoints(tmp_path, real=None):
    """name -> path of a file that is not a usable fairseq checkpoint."""
    import torch

    files = {"empty": b"", "text": b"not a checkpoint\n", "pickle-garbage": b"\x80\x04garbage"}
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / f"{name}.pt"
        out[name].write_bytes(data)
    out["torch-not-fairseq"] = tmp_path / "dict.pt"
    torch.save({"x": torch.zeros(2)}, out["torch-not-fairseq"])
    if real is not None:
        out["truncated"] = tmp_path / "truncated.pt"
        out["truncated"].write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    return out


CHECKPOINT_TOOLS = {
    "distill": ("fairseq_kd.cli.distill", lambda ck, d, o: ["--data", d, "--teacher", ck, "-o", o, "--cpu"]),
    "cache": ("fairseq_kd.cli.cache", lambda ck, d, o: [d, "--teacher-path", ck, "--out-dir", o]),
    "prune": ("fairseq_kd.cli.prune", lambda ck, d, o: ["-i", ck, "-o", f"{o}.pt"]),
}


@pytest.mark.integration
@pytest.mark.parametrize("tool", sorted(CHECKPOINT_TOOLS))
def test_unusable_checkpoints_get_one_line(tool, tiny_teacher, tmp_path, capsys):
    module, argv = CHECKPOINT_TOOLS[tool]
    for name, ckpt in bad_checkpoints(tmp_path, tiny_teacher.checkpoint).items():
        rc, err = _run(module, argv(str(ckpt), str(tiny_teacher.data_bin), str(tmp_path / f"out-{name}")), capsys)
        assert rc == 2 and "Traceback" not in err, (name, err[-800:])
        line = [x for x in err.splitlines() if "error:" in x]
        assert len(line) == 1 and str(ckpt) in line[0], (name, err[-800:])
        assert "checkpoint" in line[0] and ("copy it again" in line[0] or "fairseq-train" in line[0]), line[0]


TEXT_TOOLS = {
    "noise": ("fairseq_kd.cli.noise", lambda f, t: ["-i", f, "-o", str(t / "o"), "--deletion", "0.1"]),
    "noise-parallel": ("fairseq_kd.cli.noise", lambda f, t: ["--source", str(t / "ok"), "--target", f,
                                                             "--output-source", str(t / "a"),
                                                             "--output-target", str(t / "b")]),
    "score-hyp": ("fairseq_kd.cli.score", lambda f, t: ["-i", f, "-r", str(t / "ok")]),
    "score-ref": ("fairseq_kd.cli.score", lambda f, t: ["-i", str(t / "ok"), "-r", f]),
    "report": ("fairseq_kd.cli.report", lambda f, t: [f, "--out-dir", str(t / "rep")]),
}


@pytest.mark.parametrize("tool", sorted(TEXT_TOOLS))
def test_non_utf8_text_gets_one_line(tool, tmp_path, capsys):
    module, argv = TEXT_TOOLS[tool]
    (tmp_path / "ok").write_text("ein Haus\n")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("ein Haus\nsch\xf6n\n".encode("latin-1"))
    rc, err = _run(module, argv(str(bad), tmp_path), capsys)
    assert rc == 2 and "Traceback" not in err, err[-800:]
    assert f"{bad}: not valid UTF-8" in err and "iconv" in err, err


def test_non_utf8_to_prep_commands(tmp_path, capsys):
    from fairseq_kd.prep.__main__ import main

    bad = tmp_path / "latin1.de"
    bad.write_bytes("sch\xf6n\n".encode("latin-1"))
    (tmp_path / "ok.en").write_text("fine\n")
    for argv in (["clean", "--pair", str(bad), str(tmp_path / "ok.en"), str(tmp_path / "a"), str(tmp_path / "b")],
                 ["hyps", "--gen", str(bad), "--n", "1", "--out", str(tmp_path / "h")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{bad}: not valid UTF-8" in err and "Traceback" not in err, err


@pytest.mark.parametrize("rows", [
    "method,noise,arch,parameters,decoding,lr,seed,bleu,chrf\nnone,0.0,t,100,-,0.0005,1,abc,30\n",  # not a number
    "method,noise,arch,parameters,decoding,lr,seed,bleu,chrf\nnone,0.0,t\n",  # a cut row
    "method,noise\nnone,0.0\n",  # missing columns
])
def test_malformed_results_rows_get_one_line(rows, tmp_path, capsys):
    results = tmp_path / "results.csv"
    results.write_text(rows)
    rc, err = _run("fairseq_kd.cli.report", [str(results), "--out-dir", str(tmp_path / "rep")], capsys)
    assert rc == 2 and "Traceback" not in err and str(results) in err, err


def test_malformed_generate_output_gets_one_line(tmp_path, capsys):
    from fairseq_kd.prep.__main__ import main

    gen = tmp_path / "gen.out"
    gen.write_text("H-0\t-0.1\tgood\nH-1\tnot-a-score\tbad\n")
    assert main(["hyps", "--gen", str(gen), "--n", "2", "--out", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err
    assert f"{gen}: line 2 is not a fairseq-generate hypothesis line" in err


def test_study_refuses_a_cut_results_row(tmp_path):
    from fairseq_kd.errors import KDInputError
    from fairseq_kd.study.records import read_csv

    results = tmp_path / "results.csv"
    results.write_text("method,noise,bleu\nnone,0.0,30.1\nword,0.1\n")
    with pytest.raises(KDInputError, match=r"results.csv:3: the row has a different number of fields"):
        read_csv(str(results))
