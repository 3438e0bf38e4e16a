"""A teacher's language pair against the data's: a teacher trained in the other direction
(``en->de`` for ``de->en`` data) shares a joined dictionary with the data, so no dictionary
check sees it; its checkpoint's stored ``source_lang``/``target_lang`` do.

Rule: the pairs must be equal. Languages named in another scheme altogether (``src``/``tgt``
against ``de``/``en``: no name in common) cannot be compared and pass with a warning;
as soon as one name is shared, any difference (reversed, one side another language) is
refused.
"""
import logging
import os
from typing import Optional, Tuple

from fairseq_kd.errors import KDInputError

logger = logging.getLogger(__name__)

Pair = Tuple[Optional[str], Optional[str]]


def stored_pair(cfg) -> Pair:
    """``(source_lang, target_lang)`` stored in a checkpoint's cfg (or its task cfg / old args)."""
    task = getattr(cfg, "task", None)
    if task is None and hasattr(cfg, "get") and not hasattr(cfg, "source_lang"):
        task = cfg.get("task")
    task = cfg if task is None else task
    get = (lambda k: task.get(k)) if isinstance(task, dict) else (lambda k: getattr(task, k, None))
    return get("source_lang"), get("target_lang")


def pair_conflict(teacher: Pair, data: Pair) -> Optional[str]:
    """Why ``teacher``'s pair cannot translate ``data``'s (None when it can or cannot be told)."""
    if None in teacher or None in data or tuple(teacher) == tuple(data):
        return None
    if not set(teacher) & set(data):
        return None
    if tuple(teacher) == tuple(reversed(data)):
        return "it was trained in the other direction"
    return "its languages differ from the data's"


def check_teacher_pair(cfg, source_lang: Optional[str], target_lang: Optional[str], teacher: str,
                       data: str = "the data") -> None:
    """Refuse (``KDInputError``) a teacher whose stored pair disagrees with ``source_lang -> target_lang``."""
    t_pair, d_pair = stored_pair(cfg), (source_lang, target_lang)
    why = pair_conflict(t_pair, d_pair)
    if why:
        raise KDInputError(f"teacher {teacher} translates {t_pair[0]}->{t_pair[1]} but {data} is "
                           f"{d_pair[0]}->{d_pair[1]}: {why}. Use a teacher trained {d_pair[0]}->{d_pair[1]} "
                           f"(or pass -s/-t to name the data's direction)")
    if None not in t_pair and None not in d_pair and tuple(t_pair) != tuple(d_pair):
        logger.warning("teacher %s stores languages %s->%s, the data %s->%s: not comparable, not checked",
                       teacher, t_pair[0], t_pair[1], d_pair[0], d_pair[1])


def split_prefix(data: str, split: str, src: str, tgt: str, lang: str) -> Optional[str]:
    """Where fairseq's translation task finds ``lang``'s side of a binarized split: ``SPLIT.SRC-TGT.LANG``
    or, binarized for the other direction, ``SPLIT.TGT-SRC.LANG`` (fairseq reads either, in this order);
    None when neither exists."""
    from fairseq.data import indexed_dataset

    for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
        prefix = os.path.join(data, f"{split}.{pair}.{lang}")
        if indexed_dataset.dataset_exists(prefix, impl="mmap"):
            return prefix
    return None
