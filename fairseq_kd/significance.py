"""Paired bootstrap resampling of a corpus metric (Koehn 2004), as sacrebleu does it, over seeds.

sacrebleu's ``paired-bs`` (``sacrebleu.significance._paired_bs_test``): draw ``n_samples``
resamples of the test sentences with replacement (``numpy.random.default_rng(12345)``,
sacrebleu's default seed), recompute both systems' corpus scores from their per-sentence
sufficient statistics on every resample, and compare the centred absolute differences
with the observed one::

    d_i = score_sys(i) - score_base(i)
    p   = (#{ |d_i| - mean_j |d_j|  >=  |observed difference| } + 1) / (n_samples + 1)

sacrebleu counts ``>`` where this counts ``>=``, so a system compared with itself (all
differences 0) gets p = 1, where sacrebleu reports p = 1/(n+1) ("significant"); that value is
kept as ``p_value_sacrebleu`` (for systems that differ the two agree; a test checks it).

**One test.** The reported ``p_value`` and the ``*`` come from the same percentile bootstrap
as the 95% interval: p = 2 min(#{d_i <= 0}, #{d_i >= 0}) / n_samples (at most 1), so
p <= 0.05 exactly when the interval excludes 0 (``significance_mark``; a test checks the
equivalence). sacrebleu's centred test can disagree with the interval near the boundary,
which would put a ``*`` beside an interval that covers 0.

Several seeds: each side is the *mean* score of its seeds' systems, every seed evaluated on
the same resample (paired by sentence), so with one seed this is exactly the above. The
95% interval is the 2.5/97.5 percentile pair of ``d_i`` (sacrebleu's index rule, n // 40).

``contrast_bootstrap`` is the same test of any weighted sum of systems' scores on one resample, e.g.
the difference of two methods' losses to source noise, ``(B_noisy - B_clean) - (A_noisy - A_clean)``.
"""
from typing import Dict, Sequence, Tuple

import numpy as np

SACREBLEU_SEED = 12345


def _metric(name: str):
    from sacrebleu.metrics import BLEU, CHRF

    if name == "bleu":
        return BLEU()
    if name == "chrf":
        return CHRF()
    raise ValueError(f"unknown metric {name!r}: bleu or chrf")


def sentence_stats(metric, hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """Per-sentence sufficient statistics (sacrebleu's own extraction).  # N x S"""
    return np.asarray(metric._extract_corpus_statistics(list(hyps), [list(refs)]), dtype=np.float64)


def resampled_scores(metric, stats: np.ndarray, idxs: np.ndarray) -> np.ndarray:
    """Corpus score on every resample.  # stats N x S, idxs R x N -> R"""
    sums = np.stack([stats[row].sum(0) for row in idxs])  # R x S
    return np.array([metric._compute_score_from_stats(s.tolist()).score for s in sums])


def _check_lists(hyp_lists: Sequence[Sequence[str]], n: int) -> None:
    for hyps in hyp_lists:
        if len(hyps) != n:
            raise ValueError(f"hypotheses have {len(hyps)} lines but the reference has {n}")


def _bootstrap(terms: Sequence[Tuple[float, Sequence[Sequence[str]]]], refs: Sequence[str], metric: str,
               n_samples: int, seed: int):
    """Each term's seed-averaged score on the whole test set, and the weighted sum of the terms'
    seed-averaged scores on every resample.  # -> [K], R"""
    if not terms or any(not hyp_lists for _, hyp_lists in terms):
        raise ValueError("a bootstrap needs at least one hypothesis list per system")
    n = len(refs)
    for _, hyp_lists in terms:
        _check_lists(hyp_lists, n)
    m = _metric(metric)
    stats = [[sentence_stats(m, h, refs) for h in hyp_lists] for _, hyp_lists in terms]
    full = np.arange(n)[None, :]
    observed = [float(np.mean([resampled_scores(m, st, full)[0] for st in seeds])) for seeds in stats]
    idxs = np.random.default_rng(seed).choice(n, size=(n_samples, n), replace=True)  # one draw for every system
    resampled = [np.mean([resampled_scores(m, st, idxs) for st in seeds], axis=0) for seeds in stats]  # K x R
    combined = np.zeros(n_samples)
    for (weight, _), rs in zip(terms, resampled):
        combined = combined + weight * rs
    return observed, combined


def _percentile_test(diffs: np.ndarray, n_samples: int) -> Dict:
    """The percentile interval (sacrebleu's index rule) and the p of the same test."""
    p = min(1.0, 2 * min(int(np.sum(diffs <= 0)), int(np.sum(diffs >= 0))) / n_samples)
    ordered = np.sort(diffs)
    lo = n_samples // 40
    return {"p_value": p, "ci_low": float(ordered[lo]), "ci_high": float(ordered[n_samples - lo - 1])}


def paired_bootstrap(base: Sequence[Sequence[str]], system: Sequence[Sequence[str]], refs: Sequence[str],
                     metric: str = "bleu", n_samples: int = 1000, seed: int = SACREBLEU_SEED) -> Dict:
    """Difference ``system - base`` of seed-averaged corpus scores, its p-value and 95% interval.

    ``base`` and ``system``: one hypothesis list per seed (each aligned with ``refs``)."""
    if not base or not system:
        raise ValueError("paired_bootstrap needs at least one hypothesis list per side")
    (base_score, sys_score), diffs = _bootstrap([(-1.0, base), (1.0, system)], refs, metric, n_samples, seed)
    observed = sys_score - base_score
    centred = np.abs(diffs) - np.abs(diffs).mean()
    p_sacrebleu = (int(np.sum(centred >= abs(observed))) + 1) / (n_samples + 1)
    return {"metric": metric, "base": base_score, "system": sys_score, "delta": observed,
            **_percentile_test(diffs, n_samples), "p_value_sacrebleu": p_sacrebleu, "n_samples": n_samples,
            "seed": seed, "seeds_base": len(base), "seeds_system": len(system)}


def contrast_bootstrap(terms: Sequence[Tuple[float, Sequence[Sequence[str]]]], refs: Sequence[str],
                       metric: str = "bleu", n_samples: int = 1000, seed: int = SACREBLEU_SEED) -> Dict:
    """A weighted sum of systems' seed-averaged corpus scores, ``sum_k w_k score_k``, with the percentile
    interval and p of the paired bootstrap: every resample draws the test sentences once for all systems.

    ``terms``: ``(weight, one hypothesis list per seed)`` per system, all aligned with ``refs``. With
    weights (-1, +1) this is ``paired_bootstrap``'s difference; with (+1, -1, -1, +1) over (A clean, A noisy,
    B clean, B noisy) it is how much less B loses to the noise than A, a difference of differences."""
    observed, combined = _bootstrap(terms, refs, metric, n_samples, seed)
    delta = sum(w * o for (w, _), o in zip(terms, observed))
    return {"metric": metric, "delta": delta, **_percentile_test(combined, n_samples), "n_samples": n_samples,
            "seed": seed, "terms": [{"weight": w, "score": o, "seeds": len(h)} for (w, h), o in zip(terms, observed)]}


def format_p(p: float, n_samples: int) -> str:
    """``p`` to 3 decimals; 0 (no resample on the other side of 0) as ``<2/R``, the smallest p that
    ``n_samples`` resamples can show (``0.000`` would claim a certainty they do not give)."""
    return f"<{2 / n_samples:.3f}" if p == 0 else f"{p:.3f}"


def significance_mark(p: float, alpha: float = 0.05) -> str:
    """'*' when p <= alpha: with ``paired_bootstrap``'s p-value, exactly when its 95% interval excludes 0."""
    return "*" if p <= alpha else ""

