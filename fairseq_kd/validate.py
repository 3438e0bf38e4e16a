"""Option checks shared by the tools and criteria: every option validated before any work starts.

Each helper raises ``KDInputError`` (a ``ValueError``) naming the flag, the value and the valid
range, so a tool exits 2 with one line and fairseq-train stops before its first update.
"""
import math
from typing import Optional

from fairseq_kd.errors import KDInputError


def in_range(flag: str, value, lo: Optional[float] = None, hi: Optional[float] = None,
             lo_open: bool = False, hi_open: bool = False, what: str = "out of range") -> None:
    """``lo <= value <= hi`` (``<`` where open); NaN is never in range."""
    bad = value is None or (isinstance(value, float) and math.isnan(value))
    if not bad and lo is not None:
        bad = value <= lo if lo_open else value < lo
    if not bad and hi is not None:
        bad = value >= hi if hi_open else value > hi
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise KDInputError(f"{flag} {value} is {what}: pass a value in {span}")


def positive(flag: str, value) -> None:
    in_range(flag, value, lo=0, lo_open=True)


def finite_positive(flag: str, value) -> None:
    """``0 < value < inf`` (NaN and inf refused)."""
    in_range(flag, value, lo=0, lo_open=True)
    if math.isinf(value):
        raise KDInputError(f"{flag} {value} is not finite: pass a finite value > 0")


def non_negative(flag: str, value) -> None:
    in_range(flag, value, lo=0)


def probability(flag: str, value, open_low: bool = False, open_high: bool = False) -> None:
    in_range(flag, value, 0.0, 1.0, open_low, open_high, what="not a probability")


def topk_within(flag: str, k: int, vocab_size: int, what: str = "the target dictionary", zero_means_all=True) -> None:
    """``k`` tokens of a ``vocab_size`` distribution (0 = all, where allowed)."""
    if zero_means_all and k == 0:
        return
    if not 1 <= k <= vocab_size:
        extra = " (0 = all)" if zero_means_all else ""
        raise KDInputError(f"{flag} {k} must be between 1 and the {vocab_size} symbols of {what}{extra}")


def kd_criterion_options(vocab_size: Optional[int], label_smoothing: float = 0.0, kd_topk: int = 0,
                         kd_selection_ratio: Optional[float] = None, kd_selection_queue_size: Optional[int] = None,
                         kd_temperature: Optional[float] = None) -> None:
    """The options the KD criteria share, checked against the size of the target dictionary at build time."""
    in_range("--label-smoothing", label_smoothing, 0.0, 1.0, hi_open=True)
    if kd_temperature is not None:
        finite_positive("--kd-temperature", kd_temperature)
    if vocab_size is not None:
        topk_within("--kd-topk", kd_topk, vocab_size)
    elif kd_topk < 0:
        raise KDInputError(f"--kd-topk {kd_topk} must be >= 0 (0 = all tokens)")
    if kd_selection_ratio is not None:
        probability("--kd-selection-ratio", kd_selection_ratio, open_low=True)
    if kd_selection_queue_size is not None:
        positive("--kd-selection-queue-size", kd_selection_queue_size)


def kd_loss_options(spec, vocab_size: Optional[int], cache_dir: Optional[str] = None) -> None:
    """A criterion's ``losses.KDLossSpec`` (temperature, top-k, label smoothing, divergence, tail),
    also against a teacher cache (``cache_dir``): it holds only a renormalised top-k."""
    from fairseq_kd.losses import divergences

    kd_criterion_options(vocab_size, spec.label_smoothing, spec.topk, kd_temperature=spec.temperature)
    divergences.check_options(spec.divergence, spec.jsd_beta, max(spec.topk, 1) if cache_dir else spec.topk,
                              spec.topk_tail)
    if cache_dir and spec.topk_tail == "keep":
        raise KDInputError(f"--kd-topk-tail keep needs the teacher's full distribution, but --teacher-cache "
                           f"{cache_dir} holds only its renormalised top-k: use --kd-topk-tail renormalize")
