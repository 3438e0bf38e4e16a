"""fairseq-kd-distill --filter (empty outputs, copies, length ratio, lowest teacher scores) and
seq-inter selection by chrF.

Truths: drops worked out by hand from the rules in ``fairseq_kd/distill/filters.py``; chrF
ignores whitespace (a hypothesis with the reference's characters scores 100); on the tiny
CTranslate2 teacher, the published lines are the unfiltered run's lines at the kept ids, and the
ids dropped by ``score=P`` are the ``floor(P/100 * n)`` lowest scores of the unfiltered shards.
"""
import json
import math

import pytest

from tests import tiny_marian


def rec(i, score=None, fallback=None):
    return {"id": i, "score": score, "fallback": fallback}


# ids:        0 empty        1 copy         2 ratio 7/2      3 lowest score  4 kept         5 gold (failed)
RECORDS = [rec(0, None, "empty"), rec(1, -0.5), rec(2, -0.1), rec(3, -2.0), rec(4, -0.3), rec(5, None, "failed")]
SRC = ["a b", "x  y z", "p q", "c d e", "f g", "h i"]
TGT = ["b a", "x y z", "p q r s t u v", "e d c", "g f", "i h"]
LS = [2, 3, 2, 3, 2, 2]
LT = [2, 3, 7, 3, 2, 2]


@pytest.mark.unit
def test_parse_filters():
    from fairseq_kd.distill.filters import FilterSpec, parse_filters
    from fairseq_kd.errors import KDInputError

    assert parse_filters("") == FilterSpec() and not FilterSpec().active
    assert parse_filters("empty, copy,ratio=3,score=12.5") == FilterSpec(True, True, 3.0, 12.5)
    for bad, msg in (("ratio=0.5", ">= 1"), ("score=100", "percent"), ("score=0", "percent"), ("ratio=x", "number"),
                     ("copies", "unknown item"), ("ratio", "unknown item"), ("empty=1", "unknown item")):
        with pytest.raises(KDInputError, match=msg):
            parse_filters(bad)


@pytest.mark.unit
def test_drop_reasons_by_hand():
    from fairseq_kd.distill.filters import counts, drop_reasons, parse_filters

    def reasons(spec):
        return drop_reasons(RECORDS, SRC, TGT, LS, LT, parse_filters(spec))

    assert reasons("") == [None] * 6
    # score=40: 4 scored pairs (ids 1-4), floor(1.6) = 1 dropped: id 3 (-2.0)
    got = reasons("empty,copy,ratio=3,score=40")
    assert got == ["empty", "copy", "ratio", "score", None, None]
    assert counts(got) == {"empty": 1, "copy": 1, "ratio": 1, "score": 1, "kept": 2}
    # score=50: floor(2.0) = 2 lowest: ids 3 (-2.0) and 1 (-0.5); id 1 is counted once, as a copy (first reason)
    assert reasons("copy,score=50") == [None, "copy", None, "score", None, None]
    assert reasons("score=50") == [None, "score", None, "score", None, None]
    # ratio 7/2 = 3.5: kept at 3.5, dropped above 3.4; an empty target counts as length 1
    assert reasons("ratio=3.5") == [None] * 6 and reasons("ratio=3.4")[2] == "ratio"
    assert drop_reasons([rec(0, -1.0)], ["a b c"], [""], [3], [0], parse_filters("ratio=2.9")) == ["ratio"]
    # ties: the lower id goes first
    tied = [rec(0, -1.0), rec(1, -1.0), rec(2, -1.0)]
    assert drop_reasons(tied, ["s"] * 3, ["t"] * 3, [1] * 3, [1] * 3, parse_filters("score=34")) == ["score", None, None]
    assert drop_reasons(tied, ["s"] * 3, ["t"] * 3, [1] * 3, [1] * 3, parse_filters("score=33")) == [None] * 3


@pytest.mark.unit
def test_seq_inter_selects_by_chrf_or_sentence_bleu():
    import sacrebleu

    from fairseq_kd.distill.select import select_index

    ref = "the cat sat on the mat"
    hyps = ["the dog sat by a rug", "thecat saton themat", "the cats sat on mats"]
    assert sacrebleu.sentence_chrf(hyps[1], [ref]).score == pytest.approx(100.0)  # same characters
    assert select_index(hyps, ref, "chrf") == 1
    bleu = [sacrebleu.sentence_bleu(h, [ref]).score for h in hyps]
    assert bleu[1] == 0.0 and select_index(hyps, ref, "sentence_bleu") == max(range(3), key=bleu.__getitem__) == 2


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    return tiny_marian.world(tmp_path_factory)


def distil(w, out, *extra):
    from fairseq_kd.cli import distill

    return distill.main(["--data", str(w["bin"]), "--split", "train", "--teacher-ct2", str(w["other"]), "-o", str(out),
                         "--spm-model", str(w["spm"]), "--ct2-compute-type", "float32", "--cpu", "--no-progress",
                         "--beam", "2", "--max-len-a", "1", "--max-len-b", "2", "--shard-size", "16", *extra])


@pytest.mark.integration
def test_filters_on_a_distilled_corpus(w, tmp_path, monkeypatch):
    from fairseq_kd.distill import run as run_mod

    out = tmp_path / "o"
    full = distil(w, out)
    assert "filtered" not in full and not (out / "train.ids").exists()
    src = (out / "train.src").read_text(encoding="utf-8").splitlines()
    tgt = (out / "train.tgt").read_text(encoding="utf-8").splitlines()
    recs = [json.loads(x) for f in sorted((out / "shards").glob("shard-*.jsonl")) for x in f.read_text().splitlines()]

    def no_decoding(*a, **k):
        raise AssertionError("filters act on finished shards: nothing is decoded again")

    monkeypatch.setattr(run_mod, "decode_shard", no_decoding)
    summary = distil(w, out, "--filter", "score=25")
    scored = sorted((r["score"], r["id"]) for r in recs if r["fallback"] is None)
    dropped = {i for _, i in scored[: math.floor(0.25 * len(scored))]}
    kept = [int(x) for x in (out / "train.ids").read_text().split()]
    assert kept == [i for i in range(len(src)) if i not in dropped] and len(dropped) == 12
    assert summary["filtered"] == {"empty": 0, "copy": 0, "ratio": 0, "score": 12, "kept": 36, "spec": "score=25"}
    assert (out / "train.tgt").read_text(encoding="utf-8").splitlines() == [tgt[i] for i in kept]
    assert (out / "train.src").read_text(encoding="utf-8").splitlines() == [src[i] for i in kept]

    summary = distil(w, out, "--filter", "ratio=1.5")
    ratio = [max(a, b) / max(min(a, b), 1) for a, b in ((len(s.split()), len(t.split())) for s, t in zip(src, tgt))]
    kept = [int(x) for x in (out / "train.ids").read_text().split()]
    assert kept == [i for i, r in enumerate(ratio) if r <= 1.5] and summary["filtered"]["ratio"] == 48 - len(kept)
    assert 0 < len(kept) < 48
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(str(out / "bin" / "dict.tgt.txt"))
    ds = data_utils.load_indexed_dataset(str(out / "bin" / "train.src-tgt.tgt"), d, "mmap")
    assert [d.string(ds[j]) for j in range(len(ds))] == [tgt[i] for i in kept]

    distil(w, out)  # no filter again: every line, no ids file
    assert (out / "train.tgt").read_text(encoding="utf-8").splitlines() == tgt and not (out / "train.ids").exists()
