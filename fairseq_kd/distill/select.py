"""Sequence-level interpolation (Kim & Rush 2016): of the teacher's n-best, keep the
hypothesis closest to the reference, by sacrebleu's sentence BLEU or chrF.

``top`` keeps the teacher's best-scoring hypothesis (plain seq-KD). Ties keep the
earlier (higher-ranked) hypothesis, so the choice is deterministic.
"""
from typing import Callable, List, Optional

SELECT_CHOICES = ("top", "sentence_bleu", "chrf")


def similarity_fn(select: str) -> Optional[Callable[[str, str], float]]:
    """``(hypothesis, reference) -> score`` for ``select``; None for ``top``."""
    import sacrebleu

    if select == "top":
        return None
    if select == "sentence_bleu":
        return lambda hyp, ref: sacrebleu.sentence_bleu(hyp, [ref]).score
    if select == "chrf":
        return lambda hyp, ref: sacrebleu.sentence_chrf(hyp, [ref]).score
    raise ValueError(f"unknown --select {select!r}; choose from {SELECT_CHOICES}")


def select_index(hyps: List[str], reference: Optional[str], select: str) -> int:
    """Index of the chosen hypothesis among ``hyps`` (best first)."""
    fn = similarity_fn(select)
    if fn is None or reference is None or len(hyps) <= 1:
        return 0
    scores = [fn(h, reference) for h in hyps]
    return max(range(len(hyps)), key=lambda i: (scores[i], -i))

