"""Per-sentence fallback of fairseq-kd-distill.

A teacher whose embedding turns one word into NaN makes fairseq's own search raise
(``AssertionError``) on exactly the sentences holding that word. Truth: those sentences
get their gold target, every other line equals the healthy teacher's output, the summary
counts them by cause, and past ``--max-failed-fraction`` the run fails with nothing published.
"""
import json

import pytest

pytestmark = pytest.mark.integration

BAD = "w3"


def nan_teacher(monkeypatch):
    """Load teachers whose encoder embedding of ``BAD`` is NaN (a broken embedding row)."""
    from fairseq_kd import teacher as T

    real = T.load_teacher

    def broken(*args, **kwargs):
        t = real(*args, **kwargs)
        bad = t.src_dict.index(BAD)
        t.models[0].encoder.embed_tokens.register_forward_hook(
            lambda m, inp, out: out.masked_fill((inp[0] == bad).unsqueeze(-1), float("nan")))
        return t

    monkeypatch.setattr(T, "load_teacher", broken)


def config(tt, out, **kw):
    from fairseq_kd.distill.decoding import DecodingConfig
    from fairseq_kd.distill.run import DistillConfig

    return DistillConfig(data=str(tt.data_bin), teacher_path=str(tt.checkpoint), output_dir=str(out), split="valid",
                         decoding=DecodingConfig(decoding="beam", beam=3), cpu=True, progress=False, shard_size=16,
                         **kw)


def test_nan_sentences_fall_back_to_gold_counted_by_cause(tiny_teacher, tmp_path, monkeypatch):
    from fairseq_kd import fileio
    from fairseq_kd.distill.run import distill
    from fairseq_kd.errors import KDRunError

    healthy = distill(config(tiny_teacher, tmp_path / "healthy"))
    assert healthy["failed_hypotheses"] == 0
    gold = fileio.read_lines(tiny_teacher.raw / "valid.tgt")
    hit = [i for i, line in enumerate(fileio.read_lines(tiny_teacher.raw / "valid.src")) if BAD in line.split()]
    assert 0 < len(hit) < len(gold)

    nan_teacher(monkeypatch)
    summary = distill(config(tiny_teacher, tmp_path / "nan", max_failed_fraction=0.5))
    assert summary["failed_by_cause"] == {"AssertionError": len(hit)}
    assert summary["fallback_to_gold"] == len(hit)
    want = fileio.read_lines(tmp_path / "healthy" / "valid.tgt")
    for i in hit:
        want[i] = gold[i]
    assert fileio.read_lines(tmp_path / "nan" / "valid.tgt") == want

    fraction = len(hit) / len(gold)
    out = tmp_path / "strict"
    with pytest.raises(KDRunError, match=rf"{len(hit)} of {len(gold)} sentences could not be decoded \(AssertionError"):
        distill(config(tiny_teacher, out, max_failed_fraction=fraction / 2))
    assert not (out / "summary.json").exists() and not (out / "bin").exists() and not (out / "valid.tgt").exists()

    # the teacher's BLEU is taken on the sentences it translated: a gold fallback scores 100 against itself
    import sacrebleu

    own = [i for i in range(len(gold)) if i not in hit]
    assert summary["bleu_sentences"] == len(own)
    assert summary["bleu"] == round(sacrebleu.corpus_bleu([want[i] for i in own], [[gold[i] for i in own]]).score, 2)

    # the refused run had written the shard it stopped at: resumed with room for the failures, every shard
    # has its decoding time (it was saved after the check, so the resumed summary counted that shard as 0 s)
    resumed = distill(config(tiny_teacher, out, max_failed_fraction=0.5))
    assert "untimed_shards" not in resumed and resumed["decode_seconds"] > 0
    timing = json.loads((out / "shards" / "timing.json").read_text())
    assert sorted(timing) == [str(k) for k in range(len(timing))] and len(timing) == -(-len(gold) // 16)
