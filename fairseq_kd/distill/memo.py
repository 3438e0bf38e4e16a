"""On-disk memo of the teacher's targets for online seq-KD: each sentence decoded once per run.

Layout: ``<save_dir>/seq_kd_memo/<key>/seg-r<rank>-<n>.npy``. The task builds ``key`` from
the teacher fingerprint, the decoding settings, the *content* fingerprint of the training
shard being read (``fairseq_kd.fingerprint.dataset_fingerprint``: fairseq's sharded
``--data a:b:c`` restarts sample indices at 0 in every shard, and a re-binarized split
must not reuse stale targets) and, when the teacher reads noisy input, the noise settings
and epoch. A new teacher, new settings or new data never reuse old targets.

Each worker (rank) writes only its own segment files, so workers never race on a file: new
targets are buffered and flushed as one segment, written atomically (complete or absent).
A segment is a single int32 ``.npy`` array ``[n, ids(n), offsets(n+1), tokens...]``.
Reading is lazy: opening the memo maps every segment read-only and indexes it in two dense
numpy arrays (segment and row per sample index: 8 bytes per sentence); tokens are read
from the mapped file only when a sentence is asked for (no Python lists of every target).
On resume, what was lost since the last flush is re-decoded, which gives the same targets
(decoding is deterministic).
"""
import glob
import hashlib
import io
import logging
import os
import re
from typing import Dict, List, Optional

import numpy as np

from fairseq_kd.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

SEGMENT = re.compile(r"seg-r(\d+)-(\d+)\.npy$")


def memo_key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def encode_segment(targets: Dict[int, List[int]]) -> np.ndarray:
    """``{index: tokens}`` -> one int32 array ``[n, ids, offsets, tokens]`` (ids sorted)."""
    ids = sorted(targets)
    lengths = [len(targets[i]) for i in ids]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = [t for i in ids for t in targets[i]]
    return np.concatenate([[len(ids)], ids, offsets, tokens]).astype(np.int32)


class TargetMemo:
    """Sample index -> target ids (ending in EOS), persisted as per-rank atomic segment files."""

    def __init__(self, folder: Optional[str], flush_every: int = 1000, rank: int = 0):
        self.folder, self.flush_every, self.rank = folder, flush_every, rank
        self.segments: List[np.ndarray] = []  # memory-mapped segment arrays
        self.where = np.full(0, -1, dtype=np.int32)  # sample index -> segment number (-1: not memoized)
        self.row = np.zeros(0, dtype=np.int32)  # sample index -> row inside its segment
        self.pending: Dict[int, List[int]] = {}
        self._next = 0  # next segment number of this rank
        if folder:
            os.makedirs(folder, exist_ok=True)
            for path in sorted(glob.glob(os.path.join(folder, "seg-r*-*.npy"))):
                m = SEGMENT.search(os.path.basename(path))
                if m is None:
                    continue
                self._add_segment(np.load(path, mmap_mode="r"))
                if int(m.group(1)) == rank:
                    self._next = max(self._next, int(m.group(2)) + 1)
            if len(self):
                logger.info("seq_kd memo: %d targets in %d segments at %s", len(self), len(self.segments), folder)

    def _grow(self, n: int) -> None:
        if n > len(self.where):
            size = max(n, 2 * len(self.where))
            self.where = np.concatenate([self.where, np.full(size - len(self.where), -1, dtype=np.int32)])
            self.row = np.concatenate([self.row, np.zeros(size - len(self.row), dtype=np.int32)])

    def _add_segment(self, seg: np.ndarray) -> None:
        n = int(seg[0])
        ids = np.asarray(seg[1:1 + n], dtype=np.int64)
        if n:
            self._grow(int(ids.max()) + 1)
            self.where[ids] = len(self.segments)
            self.row[ids] = np.arange(n, dtype=np.int32)
        self.segments.append(seg)

    def __contains__(self, idx: int) -> bool:
        return idx in self.pending or (0 <= idx < len(self.where) and self.where[idx] >= 0)

    def __len__(self) -> int:
        return int((self.where >= 0).sum()) + sum(1 for i in self.pending if not (i < len(self.where) and self.where[i] >= 0))

    def get(self, idx: int) -> List[int]:
        if idx in self.pending:
            return self.pending[idx]
        seg = self.segments[int(self.where[idx])]
        n, r = int(seg[0]), int(self.row[idx])
        lo, hi = int(seg[1 + n + r]), int(seg[2 + n + r])
        start = 2 + 2 * n
        return seg[start + lo:start + hi].tolist()

    @property
    def targets(self) -> Dict[int, List[int]]:
        """Every memoized target as a dict (reads them all: for tests and inspection)."""
        out = {int(i): self.get(int(i)) for i in np.nonzero(self.where >= 0)[0]}
        out.update(self.pending)
        return out

    def put(self, idx: int, tokens: List[int]) -> None:
        self.pending[idx] = list(tokens)
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the pending targets as one new segment of this rank (atomically)."""
        if not self.folder or not self.pending:
            return
        path = os.path.join(self.folder, f"seg-r{self.rank}-{self._next:06d}.npy")
        buf = io.BytesIO()
        np.save(buf, encode_segment(self.pending))
        atomic_write_bytes(path, buf.getvalue())
        self._next += 1
        self._add_segment(np.load(path, mmap_mode="r"))
        self.pending = {}
