"""Writing an offline teacher cache (its format and reader: ``fairseq_kd.cache``).

Writing happens in ``S.partial/`` with a per-sentence ``done`` map, flushed as it goes,
so a killed run resumes where it stopped; the files move into place and ``S.meta.json``
is written (atomically, last) only when every sentence is done (a killed write's temporary
is deleted when the run resumes). Worker parts (``fairseq-kd-cache --part I/N``) are merged
into the same files (``merge_parts``); ``remove_split`` deletes a split's cache.
"""
import errno
import json
import logging
import os
import shutil
from typing import Dict, Sequence

import numpy as np
import torch

from fairseq_kd.cache import ARRAYS, FORMAT_VERSION, expected_sizes, split_file, target_offsets
from fairseq_kd.errors import KDInputError, disk_error, is_disk_error
from fairseq_kd.fileio import atomic_write_json
from fairseq_kd.guard import remove_stale_temporaries

logger = logging.getLogger(__name__)


def allocate(path: str, nbytes: int, fresh: bool) -> None:
    """``path`` with ``nbytes`` really allocated on disk (``ENOSPC`` now, not a SIGBUS later);
    zeros when ``fresh``, else its bytes are kept (a resumed run)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0), 0o644)
    try:
        if os.fstat(fd).st_size > nbytes:
            os.ftruncate(fd, nbytes)
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(fd, nbytes)  # a filesystem without fallocate: sparse, as before
    finally:
        os.close(fd)


class TeacherCacheWriter:
    """Fills a split's cache batch by batch; resumable; publishes atomically in ``finish``."""

    def __init__(self, folder: str, split: str, dataset, k: int, fp: Dict):
        self.folder, self.split, self.k, self.fp = folder, split, k, fp
        self.partial = os.path.join(folder, f"{split}.partial")
        self.offsets = target_offsets(dataset)
        self.n_sent, self.n_tok = len(dataset), int(self.offsets[-1])
        os.makedirs(self.partial, exist_ok=True)
        for held in (folder, self.partial):  # temporaries of a run killed mid-write (its pid is gone)
            remove_stale_temporaries(held)
        plan = {"format": FORMAT_VERSION, "k": k, "n_sentences": self.n_sent, "n_tokens": self.n_tok, "fingerprint": fp}
        plan_path = split_file(self.partial, split, "meta")
        if os.path.exists(plan_path):
            with open(plan_path) as f:
                if json.load(f) != plan:
                    logger.warning("cache: %s was started for another teacher/split/k: starting over", self.partial)
                    shutil.rmtree(self.partial)
                    os.makedirs(self.partial)
        resume = os.path.exists(plan_path)
        shapes = {name: (max(self.n_tok, 1), k) if name != "gold" else (max(self.n_tok, 1),) for name in ARRAYS}
        shapes["done"] = (max(self.n_sent, 1),)
        dtypes = {**{name: dtype for name, (dtype, _) in ARRAYS.items()}, "done": np.uint8}
        try:  # every byte allocated up front: a full disk is an error here, never a SIGBUS mid-run
            for name, shape in shapes.items():
                allocate(split_file(self.partial, split, name), int(np.prod(shape)) * np.dtype(dtypes[name]).itemsize,
                         fresh=not resume)
            self.arrays = {name: np.memmap(split_file(self.partial, split, name), dtype=dtypes[name], mode="r+",
                                           shape=shapes[name]) for name in ARRAYS}
            self.done = np.memmap(split_file(self.partial, split, "done"), dtype=np.uint8, mode="r+", shape=shapes["done"])
            if not resume:
                self.offsets.tofile(split_file(self.partial, split, "offsets"))
        except OSError as err:
            if not resume:
                shutil.rmtree(self.partial, ignore_errors=True)
            if is_disk_error(err):
                raise disk_error(err, self.partial) from None
            raise
        if not resume:
            atomic_write_json(plan_path, plan)  # written after the arrays exist: marks a resumable run

    def todo(self) -> np.ndarray:
        """Dataset indices still to compute."""
        return np.nonzero(self.done[: self.n_sent] == 0)[0]

    def write(self, sample_ids: Sequence[int], lengths: Sequence[int], ids: torch.Tensor,
              probs: torch.Tensor, gold: torch.Tensor) -> None:
        """Store one batch. ids/probs: B x T x K; gold: B x T; lengths: non-pad targets per row."""
        ids, probs, gold = ids.cpu().numpy(), probs.float().cpu().numpy(), gold.float().cpu().numpy()
        for b, (i, n) in enumerate(zip(sample_ids, lengths)):
            lo, hi = self.offsets[i], self.offsets[i + 1]
            if hi - lo != n:
                raise RuntimeError(f"cache: sentence {i} has {n} target tokens, expected {hi - lo}")
            self.arrays["ids"][lo:hi] = ids[b, :n]
            self.arrays["probs"][lo:hi] = probs[b, :n]
            self.arrays["gold"][lo:hi] = gold[b, :n]

    def mark_done(self, sample_ids: Sequence[int]) -> None:
        """Flush the arrays first, then the done map: a done sentence is always on disk."""
        for arr in self.arrays.values():
            arr.flush()
        self.done[np.asarray(sample_ids)] = 1
        self.done.flush()

    def finish(self) -> str:
        left = len(self.todo())
        if left:
            raise RuntimeError(f"cache: {left} sentences of {self.split} are not done yet")
        for arr in self.arrays.values():
            arr.flush()
        del self.arrays, self.done
        # publish by hard links, so SPLIT.partial/ stays whole until meta.json is written: a run killed
        # (or out of disk) anywhere in here resumes with every sentence done and publishes again
        for name in ["offsets", *ARRAYS]:
            src = split_file(self.partial, self.split, name)
            if self.n_tok == 0 and name in ARRAYS:  # memmap needs >= 1 row; publish empty files
                open(src, "wb").close()
            dst = split_file(self.folder, self.split, name)
            tmp = dst + ".tmp"
            if os.path.lexists(tmp):
                os.remove(tmp)
            try:
                os.link(src, tmp)
            except OSError:  # no hard links here: a copy, same bytes
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
            if os.path.lexists(tmp):  # a resumed publish: tmp and dst were links to one file, rename did nothing
                os.remove(tmp)
        meta = {"format": FORMAT_VERSION, "k": self.k, "n_sentences": self.n_sent, "n_tokens": self.n_tok,
                "fingerprint": self.fp, "sizes": expected_sizes(self.n_sent, self.n_tok, self.k)}
        atomic_write_json(split_file(self.folder, self.split, "meta"), meta)
        shutil.rmtree(self.partial)
        return split_file(self.folder, self.split, "meta")


def merge_parts(folder: str, split: str, dataset, k: int, fp: Dict, part_folders: Sequence[str]) -> str:
    """Publish a split's cache from worker parts (``fairseq-kd-cache --part I/N`` then ``--merge``).

    Each part folder holds a writer's ``SPLIT.partial/`` (full-size arrays, only its own
    sentences written, marked in its ``done`` map). The parts' sentence sets must be
    disjoint and cover the split; rows are copied into a fresh writer, which publishes
    exactly as a single worker would (same files, same bytes).
    """
    writer = TeacherCacheWriter(folder, split, dataset, k, fp)
    sizes = np.diff(writer.offsets)
    owner = np.full(writer.n_sent, -1, dtype=np.int64)
    for p, part in enumerate(part_folders):
        src = os.path.join(part, f"{split}.partial")
        done = np.fromfile(split_file(src, split, "done"), dtype=np.uint8)[: writer.n_sent].astype(bool)
        clash = np.nonzero(done & (owner >= 0))[0]
        if len(clash):
            raise KDInputError(f"--merge: sentence {int(clash[0])} of {split} is in two parts ({part_folders[owner[clash[0]]]} "
                               f"and {part}): the parts come from different plans; delete them and re-run")
        owner[done] = p
        rows = np.repeat(done, sizes)  # N: which rows this part wrote
        for name, (dtype, _) in ARRAYS.items():
            shape = (max(writer.n_tok, 1), k) if name != "gold" else (max(writer.n_tok, 1),)
            arr = np.memmap(split_file(src, split, name), dtype=dtype, mode="r", shape=shape)
            for lo in range(0, writer.n_tok, 1 << 20):  # chunks of rows: bounded memory
                hi = min(lo + (1 << 20), writer.n_tok)
                m = rows[lo:hi]
                writer.arrays[name][lo:hi][m] = arr[lo:hi][m]
            del arr
        writer.mark_done(np.nonzero(done)[0])
    missing = np.nonzero(owner < 0)[0]
    if len(missing):
        raise KDInputError(f"--merge: {len(missing)} sentences of {split} (first: {int(missing[0])}) are in no part: "
                           f"a part is incomplete; re-run its fairseq-kd-cache --part I/N (it resumes)")
    return writer.finish()


def remove_split(folder: str, split: str, parts: bool = True) -> None:
    """Delete a split's cache (meta first: never a meta beside missing arrays), its partial and (``parts``)
    the workers' parts."""
    for name in ["meta", "offsets", *ARRAYS]:
        path = split_file(folder, split, name)
        if os.path.lexists(path):
            os.remove(path)
    for sub in (f"{split}.partial", split) if parts else (f"{split}.partial",):
        if os.path.isdir(os.path.join(folder, sub)):
            shutil.rmtree(os.path.join(folder, sub))
