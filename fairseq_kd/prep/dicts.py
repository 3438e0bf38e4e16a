"""A checkpoint against the data-bin it is about to decode: ``--data-bin``'s dictionaries may not
hold the symbols the checkpoint was trained with (found through the data dir stored in it) under
other ids (every id would decode to another word: BLEU near 0, no error), and its stored language
pair must be the decoding direction. Other symbols altogether (another vocabulary, or pieces renamed
id for id: not told apart) are refused too, unless the caller says that a dictionary of the same
size was renamed on purpose (``allow_renamed``: then a warning). ``scripts/decode.sh`` runs this
before ``fairseq-generate`` (``--allow-renamed-dicts true`` there).
"""
import logging
import os
from typing import Dict, List

from fairseq_kd.errors import KDInputError

logger = logging.getLogger(__name__)


def read_symbols(path: str) -> List[str]:
    """A fairseq ``dict.txt``'s symbols in id order (the four specials first, as fairseq loads it)."""
    from fairseq.data import Dictionary

    return list(Dictionary.load(path).symbols)


def first_difference(a: List[str], b: List[str]) -> int:
    """Index of the first symbol that differs (the shorter length when one is a prefix); -1 if equal."""
    if a == b:
        return -1
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def check_checkpoint_dicts(checkpoint: str, data_bin: str, src: str, tgt: str, allow_renamed: bool = False) -> Dict:
    """Refuse (``KDInputError``) a checkpoint whose own dictionaries or direction differ from ``data_bin``'s;
    ``allow_renamed``: other symbols in a dictionary of the same size are only warned about (renamed id for id)."""
    from fairseq_kd.checkpoint_safety import load_checkpoint
    from fairseq_kd.langpair import check_teacher_pair, stored_pair

    state = load_checkpoint(checkpoint)
    cfg = state.get("cfg") or {"task": state.get("args")}
    check_teacher_pair(cfg, src, tgt, checkpoint, data_bin)
    task = cfg["task"] if hasattr(cfg, "__getitem__") else cfg.task
    data = getattr(task, "data", None) if not isinstance(task, dict) else task.get("data")
    own_dir = (data or "").split(os.pathsep)[0]
    langs = stored_pair(cfg)
    checked = []
    for side, own_lang, lang in (("source", langs[0] or src, src), ("target", langs[1] or tgt, tgt)):
        own, mine = os.path.join(own_dir, f"dict.{own_lang}.txt"), os.path.join(data_bin, f"dict.{lang}.txt")
        if not own_dir or not os.path.isfile(own):
            logger.warning("%s: its training dictionaries (%s) are not there to compare with %s: the %s "
                           "dictionary is not checked", checkpoint, own or "no data dir stored", mine, side)
            continue
        a, b = read_symbols(own), read_symbols(mine)
        i = first_difference(a, b)
        sym = lambda s: repr(s[i]) if i < len(s) else "<end>"  # noqa: E731
        other = i >= 0 and sorted(a) != sorted(b)  # other symbols: another vocabulary, or renamed pieces
        if other and allow_renamed and len(a) == len(b):  # renamed id for id, as the caller says
            logger.warning("%s: %s holds other symbols than %s (first at id %d): decoding assumes they were "
                           "renamed id for id", checkpoint, mine, own, i)
        elif other:
            hint = ("; if its symbols were renamed id for id on purpose, pass --allow-renamed-dicts true to "
                    "scripts/decode.sh (prep dicts: --allow-renamed)" if len(a) == len(b) else "")
            raise KDInputError(f"{mine} ({len(b)} symbols) holds other symbols than the {side} dictionary "
                               f"{checkpoint} was trained with ({own}, {len(a)} symbols): first difference at id "
                               f"{i}, {sym(b)} vs {sym(a)}; the checkpoint's ids would be read and written as "
                               f"other words. Decode with the checkpoint's own data-bin (or binarize with "
                               f"fairseq-preprocess --srcdict/--tgtdict {own_dir}/dict.*.txt){hint}")
        elif i >= 0:  # the same symbols under other ids: every id decodes to another word
            raise KDInputError(f"{mine} ({len(b)} symbols) is not the {side} dictionary {checkpoint} was trained "
                               f"with ({own}, {len(a)} symbols): first difference at id {i}, {sym(b)} vs {sym(a)}; "
                               f"every id would decode to another word. Decode with the checkpoint's own data-bin "
                               f"(or binarize with fairseq-preprocess --srcdict/--tgtdict {own_dir}/dict.*.txt)")
        checked.append(side)
    return {"checkpoint": checkpoint, "data_bin": data_bin, "checked": checked}
