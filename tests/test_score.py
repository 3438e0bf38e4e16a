"""fairseq-kd-score equals sacrebleu run directly; misaligned files are refused by name."""
import io
import json
import sys

import pytest
import sacrebleu

from fairseq_kd import scoring
from fairseq_kd.cli import score as cli

HYPS = ["The cat sat on the mat.", "A dog, running fast!", "Hello world", "ein Test mit Umlauten: äöü."]
REFS = ["The cat sat on a mat.", "A dog runs fast!", "Hello, world.", "ein Test mit Umlauten: äöü."]
REFS2 = ["A cat was sitting on the mat.", "A dog running quickly!", "Hello world!", "Ein Test."]


@pytest.fixture
def files(tmp_path):
    for name, lines in (("hyp", HYPS), ("ref", REFS), ("ref2", REFS2)):
        (tmp_path / name).write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return tmp_path


def test_matches_sacrebleu_api_on_the_same_files(files, capsys):
    assert cli.cli_main(["-r", str(files / "ref"), str(files / "ref2"), "-i", str(files / "hyp")]) == 0
    got = json.loads(capsys.readouterr().out)
    hyps = (files / "hyp").read_text(encoding="utf-8").splitlines()
    refs = [(files / n).read_text(encoding="utf-8").splitlines() for n in ("ref", "ref2")]
    bleu = sacrebleu.corpus_bleu(hyps, refs)
    chrf = sacrebleu.corpus_chrf(hyps, refs)
    tok = sacrebleu.corpus_bleu(hyps, refs, tokenize="none")
    assert got["bleu"]["score"] == pytest.approx(bleu.score, abs=1e-4)
    assert got["chrf"]["score"] == pytest.approx(chrf.score, abs=1e-4)
    assert got["tok_bleu"]["score"] == pytest.approx(tok.score, abs=1e-4)
    assert got["tok_bleu"]["score"] != got["bleu"]["score"]  # glued punctuation counts differently
    assert "tok:13a" in got["bleu"]["signature"] and "nrefs:2" in got["bleu"]["signature"]
    assert "tok:none" in got["tok_bleu"]["signature"] and got["chrf"]["signature"].startswith("nrefs:2")
    assert got["nlines"] == 4


def test_perfect_and_lowercase(files):
    res = scoring.score_lines(REFS, [REFS])
    assert res["bleu"]["score"] == pytest.approx(100.0) and res["chrf"]["score"] == pytest.approx(100.0)
    lower = scoring.score_lines([h.lower() for h in HYPS], [REFS], scoring.ScoreConfig(lowercase=True))
    assert lower["bleu"]["score"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=True).score)


def test_stdin_and_text_format(files, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(h + "\n" for h in HYPS)))
    assert cli.cli_main(["-r", str(files / "ref"), "--format", "text", "--metrics", "bleu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bleu: BLEU = ") and "tok:13a" in out
    assert f"{sacrebleu.corpus_bleu(HYPS, [REFS]).score:.2f}" in out


def test_misaligned_files_are_refused_naming_both(files, capsys):
    (files / "short").write_text("one line\n")
    assert cli.cli_main(["-r", str(files / "short"), "-i", str(files / "hyp"), "-o", str(files / "out.json")]) == 2
    err = capsys.readouterr().err
    assert "hyp have 4 lines" in err and "short have 1" in err
    assert not (files / "out.json").exists()
    assert cli.cli_main(["-r", str(files / "missing"), "-i", str(files / "hyp")]) == 2
    assert "missing: no such file" in capsys.readouterr().err
