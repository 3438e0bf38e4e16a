"""Sharded, resumable, atomic storage of a distilled corpus.

The split is cut into fixed shards of consecutive sentence ids. Each finished shard is
one JSON-lines file written to a temporary name and ``os.replace``-d into place, so a
shard is either complete or absent: a run killed at any point (even SIGKILL) redoes at
most the shard it was in (the temporary of its killed write is deleted when the work directory
is opened again). ``meta.json`` pins everything that changes the outputs
(teacher fingerprint, data, decoding settings); a re-run with other settings is refused
instead of mixing two corpora. ``publish`` checks alignment (every id exactly once, in
order, count = split size) before any final file is written, and writes each final file
atomically too. Because shard boundaries and the batching inside a shard depend only on
the settings, a resumed run's final files are byte-identical to an uninterrupted run's.
"""
import json
import os
from typing import Dict, List

from fairseq_kd.errors import KDInputError
from fairseq_kd.fileio import atomic_write_lines, atomic_write_text  # noqa: F401  (used by publish/run)
from fairseq_kd.guard import remove_stale_temporaries


def shard_ranges(n: int, shard_size: int) -> List[range]:
    """Consecutive id ranges of at most ``shard_size`` covering ``0..n-1``."""
    if shard_size <= 0:
        raise ValueError("--shard-size must be > 0")
    return [range(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


class ShardStore:
    """A work directory of finished shards plus the settings they were made with."""

    def __init__(self, workdir: str, meta: Dict):
        self.workdir, self.meta = workdir, meta
        os.makedirs(workdir, exist_ok=True)
        remove_stale_temporaries(workdir)  # of a run killed mid-write (its pid is gone); never read
        meta_file = os.path.join(workdir, "meta.json")
        if os.path.exists(meta_file):
            from fairseq_kd import integrity

            old = integrity.load_json(meta_file, "use another --output-dir, or pass --overwrite to start over")
            if old != meta:
                diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
                raise KDInputError(
                    f"{meta_file} was written with other settings ({', '.join(diff)} differ): these shards "
                    f"belong to another distillation. Use another --output-dir, or pass --overwrite to start over.")
        else:
            atomic_write_text(meta_file, json.dumps(meta, indent=1, sort_keys=True) + "\n")

    def path(self, k: int) -> str:
        return os.path.join(self.workdir, f"shard-{k:06d}.jsonl")

    def done(self, k: int) -> bool:
        return os.path.exists(self.path(k))

    def write(self, k: int, ids: range, records: Dict[int, Dict]) -> None:
        """Store shard ``k``: one record per id of ``ids``, in id order."""
        missing = [i for i in ids if i not in records]
        if missing:
            raise RuntimeError(f"shard {k}: no output for sentence ids {missing[:5]}")
        atomic_write_lines(self.path(k), (json.dumps({"id": i, **records[i]}, sort_keys=True) for i in ids))

    def read(self, k: int, ids: range) -> List[Dict]:
        """Records of shard ``k``, checked to be exactly ``ids`` in order."""
        with open(self.path(k), encoding="utf-8") as f:
            recs = [json.loads(line) for line in f]
        got = [r["id"] for r in recs]
        if got != list(ids):
            raise KDInputError(f"{self.path(k)} is misaligned (expected ids {ids.start}..{ids.stop - 1}); "
                               f"delete it and re-run to redo this shard")
        return recs
