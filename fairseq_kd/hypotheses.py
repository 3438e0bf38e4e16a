"""fairseq-generate output: ``H-<id>\\t<score>\\t<text>`` lines -> hypotheses by id, or in input order.

fairseq-generate prints its hypotheses in batch (length-sorted) order; the id is the 0-based
index of the input sentence, so ordering by id restores the input order. A malformed ``H-``
line or a missing id is refused with a ``KDInputError`` naming the output.
"""
from typing import Dict, Iterable, List, Optional, Union

from fairseq_kd.errors import KDInputError


def parse_hypotheses(lines: Union[str, Iterable[str]], source: str = "fairseq-generate output") -> Dict[int, str]:
    """First (best) ``H-<id>\\t<score>\\t<text>`` hypothesis per sentence id.

    ``lines`` is the output text or its lines. A malformed ``H-`` line is refused with a
    KDInputError naming ``source`` (a truncated or interleaved log)."""
    if isinstance(lines, str):
        from fairseq_kd.fileio import split_lines  # here: fileio re-exports this module's names

        lines = split_lines(lines)
    hyps: Dict[int, str] = {}
    for n, line in enumerate(lines, 1):
        if not line.startswith("H-"):
            continue
        fields = line.rstrip("\r").split("\t", 2)
        try:
            idx = int(fields[0][2:])
            float(fields[1])
        except (ValueError, IndexError):
            raise KDInputError(f"{source}: line {n} is not a fairseq-generate hypothesis line "
                               f"(H-<id><TAB><score><TAB><text>): {line[:80]!r}; re-run the decoding "
                               f"(was the log truncated or written by two processes?)") from None
        hyps.setdefault(idx, fields[2] if len(fields) > 2 else "")
    return hyps


def order_hypotheses(hyps: Dict[int, str], n: Optional[int] = None,
                     source: str = "fairseq-generate output") -> List[str]:
    """Hypotheses for ids ``0..n-1`` (``n`` defaults to the number found); gaps are refused."""
    if n is None:
        n = len(hyps)
    missing = [i for i in range(n) if i not in hyps]
    extra = sorted(i for i in hyps if not 0 <= i < n)
    if missing or extra:
        raise KDInputError(f"{source}: expected hypotheses for ids 0..{n - 1} but {len(missing)} are missing "
                           f"(e.g. {missing[:5]}) and {len(extra)} are out of range (e.g. {extra[:5]}); was "
                           f"decoding interrupted, filtered (--max-len, --skip-invalid-size-inputs-valid-test) "
                           f"or run on another subset?")
    return [hyps[i] for i in range(n)]


def hypotheses_in_order(lines: Union[str, Iterable[str]], n: Optional[int] = None,
                        source: str = "fairseq-generate output") -> List[str]:
    """``H-`` lines -> hypotheses for ids ``0..n-1`` in input order."""
    return order_hypotheses(parse_hypotheses(lines, source), n, source)
