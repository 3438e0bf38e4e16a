"""fairseq-generate output -> hypotheses in input order.

fairseq-generate prints ``H-<id>\\t<score>\\t<text>`` in batch (length-sorted) order; the id is
the 0-based index of the input sentence, so sorting by id restores the input order.
"""
import struct
from pathlib import Path
from typing import Dict, List, Sequence

from fairseq_kd.errors import KDInputError


def parse_hypotheses(lines: Sequence[str]) -> Dict[int, str]:
    """First (best) ``H-`` hypothesis per sentence id."""
    hyps: Dict[int, str] = {}
    for line in lines:
        if line.startswith("H-"):
            head, _score, *text = line.split("\t", 2)
            idx = int(head[2:])
            hyps.setdefault(idx, text[0] if text else "")
    return hyps


def remove_sentencepiece(line: str) -> str:
    """Pieces -> text without a model (fairseq's rule): drop spaces, ``▁`` becomes a space."""
    return line.replace(" ", "").replace("\u2581", " ").strip()


def restore_order(hyps: Dict[int, str], n: int, source="fairseq-generate output") -> List[str]:
    """Hypotheses for ids ``0..n-1``; refuses missing or extra ids."""
    missing = [i for i in range(n) if i not in hyps]
    extra = [i for i in hyps if not 0 <= i < n]
    if missing or extra:
        raise KDInputError(f"{source}: expected hypotheses for ids 0..{n - 1} but "
                           f"{len(missing)} are missing (e.g. {missing[:5]}) and {len(extra)} are "
                           f"out of range; was decoding interrupted or run on another subset?")
    return [hyps[i] for i in range(n)]


def binarized_size(prefix) -> int:
    """Number of sentences in ``prefix.idx`` (fairseq's mmap index header: magic, version,
    dtype code, length), read without importing fairseq; other formats go through fairseq."""
    idx = Path(f"{prefix}.idx")
    if not idx.is_file():
        raise KDInputError(f"{idx}: binarized dataset not found")
    with open(idx, "rb") as f:
        head = f.read(26)
    if len(head) == 26 and head[:9] == b"MMIDIDX\x00\x00" and struct.unpack("<Q", head[9:17]) == (1,):
        return struct.unpack("<Q", head[18:26])[0]
    from fairseq.data import data_utils  # legacy formats
    ds = data_utils.load_indexed_dataset(str(prefix), None)
    if ds is None:
        raise KDInputError(f"{idx}: not a fairseq indexed dataset")
    return len(ds)
