"""The study's preflight: what is checked before any cell trains (``StudyConfig.validate`` calls these).

A reference must have as many lines as its binarized split has sentences; a teacher, and a
``--student-init`` checkpoint, must load as a fairseq checkpoint of the study's direction; the
``--student-init`` checkpoint must be of the students' arch.
"""
import os
from typing import Sequence

from fairseq_kd.errors import KDInputError


def check_reference_lines(data: str, split: str, src: str, tgt: str, ref: str, flag: str) -> None:
    """The raw reference must have one line per sentence of the binarized split it scores (checked before
    any training: a wrong file would only fail after the first cell's hours of training)."""
    from fairseq.data import indexed_dataset

    from fairseq_kd import fileio

    prefix = os.path.join(data, f"{split}.{src}-{tgt}.{src}")
    if not indexed_dataset.dataset_exists(prefix, impl="mmap"):
        raise KDInputError(f"{data} has no binarized split {split!r} ({prefix}.idx): check --gen-subset / "
                           f"--extra-test and the languages")
    n_ref, n_bin = fileio.count_lines(ref), len(indexed_dataset.MMapIndexedDataset(prefix))
    if n_ref != n_bin:
        raise KDInputError(f"{flag}{ref} has {n_ref} lines but the binarized split {split!r} of {data} has {n_bin} "
                           f"sentences: pass the raw reference of that split (prepare_multi30k.sh writes it as "
                           f"raw/{split}.{tgt})")


def check_teacher(path: str, src: str, tgt: str) -> None:
    """The teacher must load as a fairseq checkpoint and translate the study's direction (checked before any
    cell: a bad teacher would only fail when the first KD cell starts, after the baselines)."""
    from fairseq_kd.checkpoint_safety import load_checkpoint
    from fairseq_kd.langpair import check_teacher_pair

    state = load_checkpoint(path)  # KDInputError naming the file when it is not a fairseq checkpoint
    check_teacher_pair(state.get("cfg") or {}, src, tgt, path, data="the study")


def check_student_init(path: str, archs: Sequence[str], src: str, tgt: str) -> None:
    """``--student-init`` must be a fairseq checkpoint of the study's direction and of every student's arch
    (fairseq would otherwise fail at the first cell, or load the wrong model's weights by name)."""
    from fairseq_kd.checkpoint_safety import load_checkpoint
    from fairseq_kd.langpair import check_teacher_pair

    if not os.path.isfile(path):
        raise KDInputError(f"--student-init {path}: no such file; pass a trained student's checkpoint")
    state = load_checkpoint(path)
    if not isinstance(state.get("model"), dict):
        raise KDInputError(f"--student-init {path}: no model weights in this checkpoint")
    model_cfg = (state.get("cfg") or {}).get("model") or {}
    arch = model_cfg.get("arch") if hasattr(model_cfg, "get") else getattr(model_cfg, "arch", None)
    if arch and any(a != arch for a in archs):
        raise KDInputError(f"--student-init {path} is a {arch} model but the study trains {', '.join(archs)}: "
                           f"pass --archs {arch} (and the same architecture flags) or another checkpoint")
    check_teacher_pair(state.get("cfg") or {}, src, tgt, path, data="the study")
