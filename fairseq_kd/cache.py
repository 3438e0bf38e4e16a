"""Offline teacher cache: top-k target distributions of every target token of a split.

Layout of ``DIR`` for a split ``S`` (n sentences, N target tokens incl. EOS, top-k K):

    S.meta.json     format, k, counts, fingerprint (teacher, dictionaries, split), file sizes
    S.offsets.i64   n + 1 row offsets: sentence i owns rows offsets[i]:offsets[i+1]
    S.ids.i32       N x K token ids (descending probability)
    S.probs.f16     N x K teacher probabilities at T = 1 (re-tempered on read)
    S.gold.f32      N     teacher log-probability of the gold token (for logging its NLL)

Rows are aligned to the dataset's indices (``sample["id"]``), not to batch order.
Writing happens in ``S.partial/`` with a per-sentence ``done`` map, flushed as it goes,
so a killed run resumes where it stopped; the files move into place and ``S.meta.json``
is written (atomically, last) only when every sentence is done. Opening checks the
fingerprint and the exact file sizes, so a stale or truncated cache is refused.
"""
import errno
import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from fairseq_kd import fingerprint as fp_mod
from fairseq_kd.errors import KDInputError, disk_error, is_disk_error
from fairseq_kd.fileio import atomic_write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: split fingerprint over token content (1: lengths only)
ARRAYS = {"ids": (np.int32, "i32"), "probs": (np.float16, "f16"), "gold": (np.float32, "f32")}


def dictionary_hash(d) -> str:
    return fp_mod.dictionary_fingerprint(d)


def split_hash(dataset) -> str:
    """Identifies a binarized split by its token content (source and target), not only its lengths."""
    return fp_mod.dataset_fingerprint(dataset)


def fingerprint(task, split: str, dataset, teacher_fp: Optional[str],
                teacher_files: Optional[Sequence[str]] = None) -> Dict:
    fp = {
        "teacher": teacher_fp,
        "source_dictionary": dictionary_hash(task.source_dictionary),
        "target_dictionary": dictionary_hash(task.target_dictionary),
        "split": split,
        "split_data": split_hash(dataset),
    }
    if teacher_files:  # stored so that a read without --teacher-path can still check the teacher's bytes
        fp["teacher_files"] = [os.path.abspath(p) for p in teacher_files]
    return fp


def check_stored_teacher(have: Dict, meta_path: str) -> None:
    """Without --teacher-path: re-hash the checkpoint(s) the cache was made from, if still there."""
    files = have.get("teacher_files") or []
    if files and all(os.path.isfile(f) for f in files):
        if fp_mod.files_fingerprint(files) != have.get("teacher"):
            raise KDInputError(f"teacher cache {meta_path} is stale: the teacher checkpoint(s) it was made from "
                               f"({':'.join(files)}) changed since. Re-run fairseq-kd-cache with that teacher.")
    else:
        logger.warning("teacher cache %s: the teacher checkpoint(s) it was made from (%s) are not there to check; "
                       "pass --teacher-path to verify the cache belongs to your teacher", meta_path,
                       ":".join(files) or "unrecorded")


def target_offsets(dataset) -> np.ndarray:
    """Row offsets from the dataset's target lengths (EOS included, as in ``sample['target']``)."""
    sizes = np.asarray(dataset.tgt_sizes, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _path(folder: str, split: str, name: str) -> str:
    ext = ARRAYS[name][1] if name in ARRAYS else {"offsets": "i64", "meta": "json", "done": "u8"}[name]
    return os.path.join(folder, f"{split}.{name}.{ext}")


def _expected_sizes(n_sent: int, n_tok: int, k: int) -> Dict[str, int]:
    sizes = {"offsets": (n_sent + 1) * 8}
    for name, (dtype, _) in ARRAYS.items():
        sizes[name] = n_tok * (k if name != "gold" else 1) * np.dtype(dtype).itemsize
    return sizes


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
        plan = {"format": FORMAT_VERSION, "k": k, "n_sentences": self.n_sent, "n_tokens": self.n_tok, "fingerprint": fp}
        plan_path = _path(self.partial, split, "meta")
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
                allocate(_path(self.partial, split, name), int(np.prod(shape)) * np.dtype(dtypes[name]).itemsize,
                         fresh=not resume)
            self.arrays = {name: np.memmap(_path(self.partial, split, name), dtype=dtypes[name], mode="r+",
                                           shape=shapes[name]) for name in ARRAYS}
            self.done = np.memmap(_path(self.partial, split, "done"), dtype=np.uint8, mode="r+", shape=shapes["done"])
            if not resume:
                self.offsets.tofile(_path(self.partial, split, "offsets"))
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
            src = _path(self.partial, self.split, name)
            if self.n_tok == 0 and name in ARRAYS:  # memmap needs >= 1 row; publish empty files
                open(src, "wb").close()
            dst = _path(self.folder, self.split, name)
            tmp = dst + ".tmp"
            if os.path.lexists(tmp):
                os.remove(tmp)
            try:
                os.link(src, tmp)
            except OSError:  # no hard links here: a copy, same bytes
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        meta = {"format": FORMAT_VERSION, "k": self.k, "n_sentences": self.n_sent, "n_tokens": self.n_tok,
                "fingerprint": self.fp, "sizes": _expected_sizes(self.n_sent, self.n_tok, self.k)}
        atomic_write_json(_path(self.folder, self.split, "meta"), meta)
        shutil.rmtree(self.partial)
        return _path(self.folder, self.split, "meta")


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
        done = np.fromfile(_path(src, split, "done"), dtype=np.uint8)[: writer.n_sent].astype(bool)
        clash = np.nonzero(done & (owner >= 0))[0]
        if len(clash):
            raise KDInputError(f"--merge: sentence {int(clash[0])} of {split} is in two parts ({part_folders[owner[clash[0]]]} "
                               f"and {part}): the parts come from different plans; delete them and re-run")
        owner[done] = p
        rows = np.repeat(done, sizes)  # N: which rows this part wrote
        for name, (dtype, _) in ARRAYS.items():
            shape = (max(writer.n_tok, 1), k) if name != "gold" else (max(writer.n_tok, 1),)
            arr = np.memmap(_path(src, split, name), dtype=dtype, mode="r", shape=shape)
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
        path = _path(folder, split, name)
        if os.path.lexists(path):
            os.remove(path)
    for sub in (f"{split}.partial", split) if parts else (f"{split}.partial",):
        if os.path.isdir(os.path.join(folder, sub)):
            shutil.rmtree(os.path.join(folder, sub))


@dataclass
class TeacherCache:
    """Read-only view of a finished split cache, checked against the task's data."""

    folder: str
    split: str
    k: int
    offsets: np.ndarray
    ids: np.ndarray
    probs: np.ndarray
    gold: np.ndarray

    @staticmethod
    def exists(folder: str, split: str) -> bool:
        return os.path.exists(_path(folder, split, "meta"))

    @classmethod
    def open(cls, folder: str, split: str, dataset, task, teacher_paths: Optional[str] = None) -> "TeacherCache":
        meta_path = _path(folder, split, "meta")
        if not os.path.exists(meta_path):
            partial = os.path.join(folder, f"{split}.partial")
            hint = " (an unfinished run is in .partial: re-run fairseq-kd-cache to resume it)" if os.path.isdir(partial) else ""
            raise KDInputError(f"teacher cache {meta_path} not found{hint}")
        from fairseq_kd import integrity  # no NaN, repeated keys or negative counts; one line naming the file

        meta = integrity.load_json(meta_path, f"the teacher cache is corrupt: delete {folder} and re-run "
                                   "fairseq-kd-cache", counts=("k", "n_sentences", "n_tokens"), what="cache meta")
        if meta.get("format") != FORMAT_VERSION:
            raise KDInputError(f"teacher cache {meta_path} has format {meta.get('format')}, expected {FORMAT_VERSION}: re-run fairseq-kd-cache with --overwrite")
        teacher_fp = None
        if teacher_paths:
            from fairseq_kd.teacher import split_paths

            teacher_fp = fp_mod.files_fingerprint(split_paths(teacher_paths))
        want = fingerprint(task, split, dataset, teacher_fp)
        have = meta["fingerprint"]
        if teacher_fp is None:
            check_stored_teacher(have, meta_path)
        for key, value in want.items():
            if key == "teacher" and value is None:
                continue  # no --teacher-path given: checked against the stored checkpoint files above
            if have.get(key) != value:
                raise KDInputError(
                    f"teacher cache {meta_path} is stale: its {key} fingerprint does not match the current "
                    f"{'teacher checkpoint(s)' if key == 'teacher' else key.replace('_', ' ')}. Re-run "
                    f"fairseq-kd-cache --split {split} --overwrite into {folder} (or point --teacher-cache elsewhere)."
                )
        n_sent, n_tok, k = meta["n_sentences"], meta["n_tokens"], meta["k"]
        for name, size in _expected_sizes(n_sent, n_tok, k).items():
            path = _path(folder, split, name)
            actual = os.path.getsize(path) if os.path.exists(path) else None
            if actual != size:
                raise KDInputError(f"teacher cache file {path} is {'missing' if actual is None else f'truncated or corrupt ({actual} bytes, expected {size})'}: "
                                   f"re-run fairseq-kd-cache --split {split} --overwrite")
        offsets = np.fromfile(_path(folder, split, "offsets"), dtype=np.int64)
        if not np.array_equal(offsets, target_offsets(dataset)):
            raise KDInputError(f"teacher cache {folder} ({split}) is not aligned with the dataset's targets: re-run fairseq-kd-cache with --overwrite")

        def mm(name, shape):
            dtype = ARRAYS[name][0]
            return np.memmap(_path(folder, split, name), dtype=dtype, mode="r", shape=shape) if n_tok else np.zeros(shape, dtype)

        logger.info("teacher cache: %s split %s, %d sentences, %d tokens, top-%d", folder, split, n_sent, n_tok, k)
        return cls(folder, split, k, offsets, mm("ids", (n_tok, k)), mm("probs", (n_tok, k)), mm("gold", (n_tok,)))

    def check_topk(self, topk: int, flag: str = "--kd-topk") -> None:
        """Refuse a top-k this cache cannot give (it holds the teacher's top ``k`` only)."""
        if topk > self.k:
            raise KDInputError(f"{flag} {topk} exceeds the {self.k} tokens per position the teacher cache "
                               f"{self.folder} ({self.split}) holds: pass {flag} {self.k} or less, or rebuild the "
                               f"cache with fairseq-kd-cache --topk {topk} --overwrite")

    @property
    def n_sentences(self) -> int:
        return len(self.offsets) - 1

    def lookup(self, sample, target: torch.Tensor, pad: int, prefix: int = 0):
        """Top-k ids, probabilities (T=1) and gold log-probs aligned to ``target`` (B x T).

        Returns ids B x T x K (long), probs B x T x K (fp32), gold B x T (fp32); padded
        positions hold token 0 with probability 1 (their KL is masked by the caller).
        """
        sample_ids = sample["id"].cpu().numpy().astype(np.int64)  # B
        B, T = target.shape
        full_len = sample["target"].ne(pad).sum(-1).cpu().numpy()  # B
        bad = np.nonzero((sample_ids < 0) | (sample_ids >= self.n_sentences))[0]
        if len(bad):
            raise KDInputError(f"teacher cache {self.folder} ({self.split}) has no entry for sentence "
                               f"{int(sample_ids[bad[0]])} (it holds {self.n_sentences}): re-run fairseq-kd-cache")
        lo, hi = self.offsets[sample_ids], self.offsets[sample_ids + 1]  # B
        bad = np.nonzero(hi - lo != full_len)[0]
        if len(bad):
            b = bad[0]
            raise KDInputError(f"teacher cache {self.folder} ({self.split}): sentence {int(sample_ids[b])} has "
                               f"{int(hi[b] - lo[b])} cached tokens but the batch has {int(full_len[b])}: the cache "
                               f"is stale, re-run fairseq-kd-cache")
        n = hi - lo - prefix  # B: cached positions per row
        rows = np.arange(int(n.sum())) + np.repeat(lo + prefix - (np.cumsum(n) - n), n)  # their rows, row-major
        filled = np.arange(T)[None, :] < n[:, None]  # B x T
        ids = np.zeros((B, T, self.k), dtype=np.int64)
        probs = np.zeros((B, T, self.k), dtype=np.float32)
        probs[..., 0] = 1.0
        gold = np.zeros((B, T), dtype=np.float32)
        ids[filled], probs[filled], gold[filled] = self.ids[rows], self.probs[rows], self.gold[rows]
        dev = target.device
        return torch.from_numpy(ids).to(dev), torch.from_numpy(probs).to(dev), torch.from_numpy(gold).to(dev)
