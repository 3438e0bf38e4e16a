"""Cleaning a distilled corpus before the student sees it (``fairseq-kd-distill --filter``).

``--filter`` is a comma-separated list; each pair of the split is dropped for the first reason,
in this order, that it meets:

* ``empty``: the teacher's output was empty (without the filter its gold target is used);
* ``copy``: the published target equals the source (detokenized text with ``--spm-model``,
  else pieces; whitespace runs collapsed);
* ``ratio=R``: ``max(ls, lt) / max(min(ls, lt), 1) > R``, with ``ls`` / ``lt`` the source /
  target lengths in the student's tokens (EOS not counted);
* ``score=P``: among the pairs whose target is the teacher's hypothesis (no fallback), the
  ``floor(P / 100 * n)`` with the lowest teacher score (length-normalized log-probability:
  ``score / len^lenpen``), ties broken by sentence id; the ranking covers all ``n`` such pairs,
  whatever the other filters drop.

Filtering happens when publishing finished shards, so another ``--filter`` on the same output
directory re-publishes without decoding again.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from fairseq_kd.errors import KDInputError

REASONS = ("empty", "copy", "ratio", "score")


@dataclass(frozen=True)
class FilterSpec:
    empty: bool = False
    copy: bool = False
    ratio: Optional[float] = None  # drop when the length ratio exceeds it (>= 1)
    score_percent: Optional[float] = None  # drop this share (0 < P < 100) of the lowest teacher scores

    @property
    def active(self) -> bool:
        return self.empty or self.copy or self.ratio is not None or self.score_percent is not None


def _number(name: str, value: str, spec: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if math.isnan(x) or math.isinf(x):
        raise KDInputError(f"--filter {spec!r}: {name}= wants a number, got {value!r}")
    return x


def parse_filters(spec: str) -> FilterSpec:
    """``"empty,copy,ratio=3,score=10"`` -> ``FilterSpec``; ``""`` filters nothing."""
    out: Dict = {}
    for item in (s.strip() for s in (spec or "").split(",")):
        if not item:
            continue
        name, _, value = item.partition("=")
        if name in ("empty", "copy") and not value:
            out[name] = True
        elif name == "ratio" and value:
            out["ratio"] = _number(name, value, spec)
            if out["ratio"] < 1:
                raise KDInputError(f"--filter ratio={value}: a length ratio is >= 1 (e.g. ratio=3)")
        elif name == "score" and value:
            out["score_percent"] = _number(name, value, spec)
            if not 0 < out["score_percent"] < 100:
                raise KDInputError(f"--filter score={value}: the share of lowest scores to drop is a percent in (0, 100)")
        else:
            raise KDInputError(f"--filter: unknown item {item!r}; use empty, copy, ratio=R, score=P (comma-separated)")
    return FilterSpec(**out)


def length_ratio(ls: int, lt: int) -> float:
    return max(ls, lt) / max(min(ls, lt), 1)


def lowest_scores(records: Sequence[Dict], percent: float) -> set:
    """Ids of the ``floor(percent / 100 * n)`` lowest-scored teacher hypotheses (ties: lower id first)."""
    scored = [(float(r["score"]), r["id"]) for r in records if r.get("fallback") is None and r.get("score") is not None]
    k = int(math.floor(percent / 100.0 * len(scored) + 1e-9))
    return {i for _, i in sorted(scored)[:k]}


def drop_reasons(records: Sequence[Dict], src_text: Sequence[str], tgt_text: Sequence[str],
                 src_len: Sequence[int], tgt_len: Sequence[int], spec: FilterSpec) -> List[Optional[str]]:
    """Per pair (in ``records`` order) the reason it is dropped, or None when kept."""
    low = lowest_scores(records, spec.score_percent) if spec.score_percent is not None else set()
    out: List[Optional[str]] = []
    for r, s, t, ls, lt in zip(records, src_text, tgt_text, src_len, tgt_len):
        if spec.empty and r.get("fallback") == "empty":
            out.append("empty")
        elif spec.copy and " ".join(s.split()) == " ".join(t.split()):
            out.append("copy")
        elif spec.ratio is not None and length_ratio(ls, lt) > spec.ratio:
            out.append("ratio")
        elif r["id"] in low:
            out.append("score")
        else:
            out.append(None)
    return out


def counts(reasons: Sequence[Optional[str]]) -> Dict[str, int]:
    """``{"empty": n, "copy": n, "ratio": n, "score": n, "kept": n}`` for ``summary.json``."""
    c = {r: 0 for r in REASONS}
    for r in reasons:
        if r is not None:
            c[r] += 1
    c["kept"] = sum(r is None for r in reasons)
    return c
