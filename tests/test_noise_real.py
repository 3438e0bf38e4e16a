"""Slow tier: noise and scoring on the real Multi30k files (../shared/data)."""
import json

import pytest
import sacrebleu

from fairseq_kd.cli import noise as noise_cli
from fairseq_kd.cli import score as score_cli


@pytest.mark.slow
def test_noise_and_score_on_multi30k(shared_data, tmp_path, capsys):
    src, tgt = shared_data / "multi30k" / "train.de", shared_data / "multi30k" / "train.en"
    rates = {"deletion": 0.1, "substitution": 0.1, "swap": 0.1}
    assert noise_cli.cli_main(["--deletion", "0.1", "--substitution", "0.1", "--swap", "0.1", "--side", "both",
                               "--source", str(src), "--target", str(tgt), "--quiet",
                               "--output-source", str(tmp_path / "n.de"), "--output-target", str(tmp_path / "n.en")]) == 0
    summary = json.loads(capsys.readouterr().out)
    n = len(src.read_text(encoding="utf-8").splitlines())
    for side, path in (("source", tmp_path / "n.de"), ("target", tmp_path / "n.en")):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == n and all(l.strip() for l in lines)
        for op, want in rates.items():
            assert abs(summary["sides"][side]["rates"][op] - want) <= 0.1 * want, (side, op)

    # score the noised test references against the real ones: same numbers as sacrebleu's API
    ref = shared_data / "multi30k" / "test_2016_flickr.en"
    hyp = tmp_path / "hyp.en"
    assert noise_cli.cli_main(["--deletion", "0.15", "--swap", "0.1", "--side", "target", "--quiet",
                               "-i", str(ref), "-o", str(hyp)]) == 0
    capsys.readouterr()
    assert score_cli.cli_main(["-r", str(ref), "-i", str(hyp)]) == 0
    got = json.loads(capsys.readouterr().out)
    hyps, refs = hyp.read_text(encoding="utf-8").splitlines(), ref.read_text(encoding="utf-8").splitlines()
    assert got["bleu"]["score"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-4)
    assert got["chrf"]["score"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-4)
    assert 20 < got["bleu"]["score"] < 90
