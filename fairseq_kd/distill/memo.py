"""On-disk memo of the teacher's targets for online seq-KD: each sentence decoded once per run.

Layout: ``<save_dir>/seq_kd_memo/<key>/seg-*.json``, where ``key`` hashes the teacher
fingerprint, the decoding settings and the training data, so a new teacher or new
settings never reuse stale targets. New targets are buffered and flushed as a new
segment file (temporary name + ``os.replace``: a segment is complete or absent). On
resume every segment is read back; what was lost since the last flush is re-decoded,
which gives the same targets (decoding is deterministic).
"""
import glob
import hashlib
import json
import logging
import os
from typing import Dict, List, Optional

from fairseq_kd.fileio import atomic_write_json

logger = logging.getLogger(__name__)


def memo_key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


class TargetMemo:
    """Sample index -> target ids (ending in EOS), persisted as atomic segment files."""

    def __init__(self, folder: Optional[str], flush_every: int = 1000, rank: int = 0):
        self.folder, self.flush_every, self.rank = folder, flush_every, rank
        self.targets: Dict[int, List[int]] = {}
        self.pending: Dict[int, List[int]] = {}
        self._segments = 0
        if folder:
            os.makedirs(folder, exist_ok=True)
            for path in sorted(glob.glob(os.path.join(folder, "seg-*.json"))):
                with open(path, encoding="utf-8") as f:
                    self.targets.update({int(k): v for k, v in json.load(f).items()})
                self._segments += 1
            if self.targets:
                logger.info("seq_kd memo: %d targets restored from %s", len(self.targets), folder)

    def __contains__(self, idx: int) -> bool:
        return idx in self.targets

    def __len__(self) -> int:
        return len(self.targets)

    def get(self, idx: int) -> List[int]:
        return self.targets[idx]

    def put(self, idx: int, tokens: List[int]) -> None:
        self.targets[idx] = tokens
        if self.folder:
            self.pending[idx] = tokens
            if len(self.pending) >= self.flush_every:
                self.flush()

    def flush(self) -> None:
        """Write the pending targets as one new segment (atomically)."""
        if not self.folder or not self.pending:
            return
        while True:
            path = os.path.join(self.folder, f"seg-r{self.rank}-{self._segments:06d}.json")
            if not os.path.exists(path):
                break
            self._segments += 1
        atomic_write_json(path, {str(k): v for k, v in sorted(self.pending.items())}, indent=None)
        self._segments += 1
        self.pending = {}
