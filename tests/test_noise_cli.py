"""fairseq-kd-noise: parallel and stream modes agree, alignment, JSON summary, clear errors."""
import io
import json
import sys

import pytest

from fairseq_kd import noise as N
from fairseq_kd.cli import noise as cli
from tests.test_noise import corpus


def write(path, lines):
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return str(path)


def test_parallel_mode_side_source_copies_target_and_reports_json(tmp_path, capsys):
    src = write(tmp_path / "a.de", corpus(2000, seed=1))
    tgt = write(tmp_path / "a.en", corpus(2000, seed=2))
    rc = cli.cli_main(["--deletion", "0.2", "--swap", "0.1", "--substitution", "0.1", "--side", "source",
                       "--source", src, "--target", tgt, "--output-source", str(tmp_path / "n.de"),
                       "--output-target", str(tmp_path / "n.en"), "--summary-json", str(tmp_path / "s.json"),
                       "--quiet"])
    assert rc == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary == json.loads((tmp_path / "s.json").read_text())
    assert list(summary["sides"]) == ["source"]
    assert abs(summary["sides"]["source"]["rates"]["deletion"] - 0.2) < 0.02
    assert "[source]" in out.err and "deletion=" in out.err
    noisy = (tmp_path / "n.de").read_text().splitlines()
    assert len(noisy) == 2000 and all(noisy)
    assert (tmp_path / "n.en").read_text() == (tmp_path / "a.en").read_text()


def test_stream_mode_reproduces_the_parallel_side(tmp_path, monkeypatch, capsys):
    lines = corpus(300, seed=4)
    src = write(tmp_path / "a.de", lines)
    tgt = write(tmp_path / "a.en", lines)
    args = ["--deletion", "0.1", "--substitution", "0.2", "--swap", "0.2", "--seed", "9", "--quiet"]
    assert cli.cli_main(args + ["--side", "both", "--source", src, "--target", tgt,
                                "--output-source", str(tmp_path / "n.de"), "--output-target", str(tmp_path / "n.en"),
                                "--write-vocab", str(tmp_path / "vocab")]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(l + "\n" for l in lines)))
    assert cli.cli_main(args + ["--side", "target"]) == 0
    assert capsys.readouterr().out == (tmp_path / "n.en").read_text()
    # a single line regenerated alone (with the saved corpus vocabulary) equals its line in the full run
    i = 137
    full = (tmp_path / "n.de").read_text().splitlines()
    cfg = N.NoiseConfig(0.1, 0.2, 0.2)
    alone, _ = N.noise_line(lines[i], cfg, 9, i, "source", "word", N.read_vocab(str(tmp_path / "vocab.source"), "word"))
    assert alone == full[i]
    assert (tmp_path / "n.de").read_text() != (tmp_path / "n.en").read_text()  # independent streams per side


def test_misaligned_input_is_refused_without_output(tmp_path, capsys):
    src = write(tmp_path / "a.de", ["a b", "c d", "e"])
    tgt = write(tmp_path / "a.en", ["a b", "c d"])
    rc = cli.cli_main(["--deletion", "0.1", "--source", src, "--target", tgt,
                       "--output-source", str(tmp_path / "n.de"), "--output-target", str(tmp_path / "n.en")])
    err = capsys.readouterr().err
    assert rc == 2 and "a.de has 3 lines" in err and "a.en has 2" in err
    assert not (tmp_path / "n.de").exists() and not (tmp_path / "n.en").exists()
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("argv,needle", [
    (["--deletion", "2"], "not a probability"),
    (["--side", "both"], "parallel mode"),
    (["--input", "/nonexistent/x.txt"], "/nonexistent/x.txt"),
])
def test_usage_errors_are_clear(argv, needle, capsys):
    assert cli.cli_main(argv) == 2
    assert needle in capsys.readouterr().err
