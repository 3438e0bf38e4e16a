"""Offline teacher cache: top-k target distributions of every target token of a split.

Layout of ``DIR`` for a split ``S`` (n sentences, N target tokens incl. EOS, top-k K):

    S.meta.json     format, k, counts, fingerprint (teacher, dictionaries, split), file sizes
    S.offsets.i64   n + 1 row offsets: sentence i owns rows offsets[i]:offsets[i+1]
    S.ids.i32       N x K token ids (descending probability)
    S.probs.f16     N x K teacher probabilities at T = 1 (re-tempered on read)
    S.gold.f32      N     teacher log-probability of the gold token (for logging its NLL)

Rows are aligned to the dataset's indices (``sample["id"]``), not to batch order.
This module holds the format (file names and sizes, fingerprint) and the reader,
``TeacherCache``: opening checks the fingerprint and the exact file sizes, so a stale or
truncated cache is refused. Writing (resumable, published atomically, worker parts merged)
is ``fairseq_kd.cache_writer``.
"""
import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from fairseq_kd import fingerprint as fp_mod
from fairseq_kd.errors import KDInputError

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


def split_file(folder: str, split: str, name: str) -> str:
    ext = ARRAYS[name][1] if name in ARRAYS else {"offsets": "i64", "meta": "json", "done": "u8"}[name]
    return os.path.join(folder, f"{split}.{name}.{ext}")


def expected_sizes(n_sent: int, n_tok: int, k: int) -> Dict[str, int]:
    sizes = {"offsets": (n_sent + 1) * 8}
    for name, (dtype, _) in ARRAYS.items():
        sizes[name] = n_tok * (k if name != "gold" else 1) * np.dtype(dtype).itemsize
    return sizes


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
        return os.path.exists(split_file(folder, split, "meta"))

    @classmethod
    def open(cls, folder: str, split: str, dataset, task, teacher_paths: Optional[str] = None) -> "TeacherCache":
        meta_path = split_file(folder, split, "meta")
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
        for name, size in expected_sizes(n_sent, n_tok, k).items():
            path = split_file(folder, split, name)
            actual = os.path.getsize(path) if os.path.exists(path) else None
            if actual != size:
                raise KDInputError(f"teacher cache file {path} is {'missing' if actual is None else f'truncated or corrupt ({actual} bytes, expected {size})'}: "
                                   f"re-run fairseq-kd-cache --split {split} --overwrite")
        offsets = np.fromfile(split_file(folder, split, "offsets"), dtype=np.int64)
        if not np.array_equal(offsets, target_offsets(dataset)):
            raise KDInputError(f"teacher cache {folder} ({split}) is not aligned with the dataset's targets: re-run fairseq-kd-cache with --overwrite")

        def mm(name, shape):
            dtype = ARRAYS[name][0]
            return np.memmap(split_file(folder, split, name), dtype=dtype, mode="r", shape=shape) if n_tok else np.zeros(shape, dtype)

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
