"""fairseq-generate output -> hypotheses in input order.

fairseq-generate prints ``H-<id>\\t<score>\\t<text>`` in batch (length-sorted) order; the id is
the 0-based index of the input sentence, so sorting by id restores the input order.
"""
import struct
from pathlib import Path

from fairseq_kd.errors import KDInputError
from fairseq_kd.hypotheses import order_hypotheses as restore_order, parse_hypotheses  # noqa: F401  (prep hyps)


def remove_sentencepiece(line: str) -> str:
    """Pieces -> text without a model (fairseq's rule): drop spaces, ``▁`` becomes a space."""
    return line.replace(" ", "").replace("\u2581", " ").strip()


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
