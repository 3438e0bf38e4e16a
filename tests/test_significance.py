"""Paired bootstrap: identities, a hand-checkable case, and sacrebleu's own test as the reference."""
import random

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from fairseq_kd.significance import contrast_bootstrap, paired_bootstrap, significance_mark


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


# ---- contrast_bootstrap: a weighted sum of systems on one resample (e.g. a difference of differences)

BETTER = [REFS[i] if i % 2 else NOISY[i] for i in range(len(REFS))]  # fixes half of NOISY's cut lines


def test_a_two_term_contrast_is_the_paired_difference():
    pair = paired_bootstrap([NOISY, OTHER], [BETTER], REFS, n_samples=500, seed=7)
    con = contrast_bootstrap([(-1.0, [NOISY, OTHER]), (1.0, [BETTER])], REFS, n_samples=500, seed=7)
    assert (con["delta"], con["ci_low"], con["ci_high"], con["p_value"]) == \
        (pair["delta"], pair["ci_low"], pair["ci_high"], pair["p_value"])
    assert [t["score"] for t in con["terms"]] == [pair["base"], pair["system"]]


def test_a_difference_of_differences_by_hand_and_against_the_pair_it_reduces_to():
    """(B_noisy - B_clean) - (A_noisy - A_clean): its value is four sacrebleu corpus scores combined;
    with one clean system for both methods the clean terms cancel on every resample, leaving the
    paired test of B_noisy against A_noisy."""
    score = {name: sacrebleu.corpus_bleu(h, [REFS]).score for name, h in
             {"a_c": REFS, "a_n": NOISY, "b_c": BETTER, "b_n": OTHER}.items()}
    did = contrast_bootstrap([(1.0, [REFS]), (-1.0, [NOISY]), (-1.0, [BETTER]), (1.0, [OTHER])], REFS)
    assert did["delta"] == pytest.approx((score["b_n"] - score["b_c"]) - (score["a_n"] - score["a_c"]))
    assert did["ci_low"] <= did["delta"] <= did["ci_high"]
    same_clean = contrast_bootstrap([(1.0, [BETTER]), (-1.0, [NOISY]), (-1.0, [BETTER]), (1.0, [OTHER])], REFS)
    pair = paired_bootstrap([NOISY], [OTHER], REFS)
    for key in ("delta", "ci_low", "ci_high", "p_value"):
        assert same_clean[key] == pytest.approx(pair[key], abs=1e-9)


def test_perfect_minus_empty_is_100_on_every_resample():
    res = contrast_bootstrap([(1.0, [REFS]), (-1.0, [[""] * len(REFS)])], REFS)
    assert res["delta"] == pytest.approx(100.0)
    assert res["ci_low"] == pytest.approx(100.0) and res["ci_high"] == pytest.approx(100.0) and res["p_value"] == 0.0


def test_a_contrast_refuses_misaligned_or_missing_systems():
    with pytest.raises(ValueError, match="59 lines but the reference has 60"):
        contrast_bootstrap([(1.0, [NOISY]), (-1.0, [NOISY[:-1]])], REFS)
    with pytest.raises(ValueError, match="at least one hypothesis list"):
        contrast_bootstrap([(1.0, [NOISY]), (-1.0, [])], REFS)
