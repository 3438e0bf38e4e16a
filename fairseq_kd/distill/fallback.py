"""Per-sentence fallback of ``fairseq-kd-distill``: what the decoder raises on one sentence
(NaN scores -> ``AssertionError`` in fairseq's search, out of memory, ...) costs that sentence
only: it falls back to its gold target, counted by cause, and the run fails only when more
than ``--max-failed-fraction`` of the split failed (then nothing is published)."""
import logging
import math
from typing import Dict, Iterable, List, Tuple

from fairseq_kd.errors import KDRunError

logger = logging.getLogger(__name__)


def cause_of(err: BaseException) -> str:
    """A short, countable cause: the exception type (``AssertionError``, ``RuntimeError``, ...)."""
    return type(err).__name__


def decode_with_fallback(backend, batch: List[int]) -> Tuple[Dict[int, List[Dict]], Dict[int, str]]:
    """``backend.decode(batch)``; if the batch raises, each sentence alone. Returns the hypotheses
    and ``{id: cause}`` for the sentences that still raised (KeyboardInterrupt/SystemExit pass)."""
    try:
        return backend.decode(batch), {}
    except Exception as err:  # noqa: BLE001 (any decoder error is per sentence until proven otherwise)
        logger.warning("batch of %d failed (%s: %s): decoding its sentences one by one", len(batch),
                       cause_of(err), err)
    hyps, failed = {}, {}
    for i in batch:
        try:
            hyps.update(backend.decode([i]))
        except Exception as err:  # noqa: BLE001
            failed[i] = cause_of(err)
            logger.warning("sentence %d failed (%s: %s): its gold target is used", i, failed[i], err)
    return hyps, failed


def nan_score(hyps: List[Dict]) -> bool:
    """A hypothesis whose score is NaN (a backend that does not raise on NaN log-probs)."""
    return any(h.get("score") is not None and math.isnan(float(h["score"])) for h in hyps)


def failed_by_cause(records: Iterable[Dict]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for r in records:
        if r.get("fallback") == "failed":
            cause = r.get("cause", "no hypothesis")
            counts[cause] = counts.get(cause, 0) + 1
    return dict(sorted(counts.items()))


def check_failures(counts: Dict[str, int], n_sentences: int, max_fraction: float, where: str) -> None:
    """Raise ``KDRunError`` when the failed sentences exceed ``max_fraction`` of ``n_sentences``."""
    failed = sum(counts.values())
    if n_sentences and failed > max_fraction * n_sentences:
        causes = ", ".join(f"{c}: {n}" for c, n in counts.items())
        raise KDRunError(f"{where}: {failed} of {n_sentences} sentences could not be decoded ({causes}), more than "
                         f"--max-failed-fraction {max_fraction:g}; the teacher is broken for this data (NaN: "
                         f"try fp32 / --cpu) or raise --max-failed-fraction to accept gold targets for them")
