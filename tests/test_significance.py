"""Paired bootstrap: identities, a hand-checkable case, and sacrebleu's own test as the reference."""
import random

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from fairseq_kd.significance import paired_bootstrap, significance_mark


def corpus(n, seed, words="the a cat dog sat on mat red big small ran".split()):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]


REFS = corpus(60, 1)
NOISY = [r if i % 3 else " ".join(r.split()[:-1]) for i, r in enumerate(REFS)]  # a third of the lines lose a word
OTHER = corpus(60, 2)


def test_identical_systems_are_not_different():
    res = paired_bootstrap([NOISY], [NOISY], REFS)
    assert res["delta"] == 0.0 and res["p_value"] == 1.0 and res["ci_low"] == res["ci_high"] == 0.0
    assert significance_mark(res["p_value"]) == ""


def test_empty_against_perfect_by_hand():
    """Empty output scores BLEU 0 on every resample and the references 100: every resampled
    difference is exactly 100, so the interval is [100, 100], no difference is <= 0 (p = 0) and no
    centred difference (all 0) reaches 100 (sacrebleu's p = 1 / (1000 + 1))."""
    res = paired_bootstrap([[""] * len(REFS)], [REFS], REFS)
    assert res["base"] == 0.0 and res["system"] == pytest.approx(100.0) and res["delta"] == pytest.approx(100.0)
    assert res["ci_low"] == pytest.approx(100.0) and res["ci_high"] == pytest.approx(100.0)
    assert res["p_value"] == 0.0 and res["p_value_sacrebleu"] == pytest.approx(1 / 1001)
    assert significance_mark(res["p_value"]) == "*"


def test_one_seed_agrees_with_sacrebleu_paired_bs():
    sys_a, sys_b = NOISY, OTHER
    _, got = PairedTest([("base", sys_a), ("sys", sys_b)], {"BLEU": BLEU()}, references=[REFS], test_type="bs",
                        n_samples=1000)()
    ref_result = got["BLEU"][1]
    res = paired_bootstrap([sys_a], [sys_b], REFS)
    assert res["system"] == pytest.approx(ref_result.score) and res["base"] == pytest.approx(got["BLEU"][0].score)
    assert res["p_value_sacrebleu"] == pytest.approx(ref_result.p_value)
    assert res["delta"] == pytest.approx(sacrebleu.corpus_bleu(sys_b, [REFS]).score
                                         - sacrebleu.corpus_bleu(sys_a, [REFS]).score)
    assert res["ci_low"] <= res["delta"] <= res["ci_high"]


def test_seeds_average_and_a_repeated_seed_changes_nothing():
    one = paired_bootstrap([NOISY], [OTHER], REFS)
    twice = paired_bootstrap([NOISY, NOISY], [OTHER, OTHER], REFS)
    assert twice == {**one, "seeds_base": 2, "seeds_system": 2}
    mixed = paired_bootstrap([NOISY], [OTHER, REFS], REFS)
    assert mixed["system"] == pytest.approx((sacrebleu.corpus_bleu(OTHER, [REFS]).score + 100.0) / 2)


def test_misaligned_hypotheses_are_refused():
    with pytest.raises(ValueError, match="59 lines but the reference has 60"):
        paired_bootstrap([NOISY[:-1]], [NOISY], REFS)


@pytest.mark.parametrize("n_samples", [1000, 100, 250])
def test_the_mark_and_the_interval_are_one_test(n_samples):
    """'*' exactly when the 95% interval excludes 0, over systems from clearly better to tied; the
    p-value is the share of resampled differences on the other side of 0, doubled (counted by hand)."""
    rng = random.Random(3)
    marks = set()
    for trial in range(40):
        k = rng.randint(0, len(REFS))  # the system fixes k lines of NOISY: small k ~ tied, large k ~ better
        fixed = set(rng.sample(range(len(REFS)), k))
        system = [REFS[i] if i in fixed else NOISY[i] for i in range(len(REFS))]
        res = paired_bootstrap([NOISY], [system], REFS, n_samples=n_samples, seed=trial)
        excludes = res["ci_low"] > 0 or res["ci_high"] < 0
        assert (significance_mark(res["p_value"]) == "*") == excludes, res
        marks.add(excludes)
    assert marks == {True, False}  # both outcomes were exercised
