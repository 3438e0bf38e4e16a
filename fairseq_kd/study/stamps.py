"""What each hypothesis file of a cell was decoded from: a stamp beside it, compared before the file is reused.

``hyp.[SPLIT.]SEARCH.txt`` is written, after it, with ``hyp.[SPLIT.]SEARCH.stamp.json`` (``stamp_path``) holding
``decode_stamp``: the decoding's version (``commands.DECODE_VERSION``: the length-limit rule and whatever else
the code decides beyond the flags), the fairseq-generate flags that decide the output (``generate_args``: all
but the paths of the data, the checkpoint and the plugins, and the worker count), the sha256 of the split's
binarized source and of the dictionaries, and the checkpoint decoded (``checkpoint_identity``: size and
sha256, so one decoding stamps the same bytes). ``changes`` lists what differs from this run's decoding; a file
is reused only when nothing does. A file with no stamp was decoded by code before the stamps (before 8394f95
with ``--task translation``, whose length limit is the padded batch's) and differs. The device (``--cpu``) is
recorded, not compared: a study may resume on another device, as for its training.

``Decodes`` (a ``Study`` mixin) decodes a hypothesis file unless its stamp matches, and finds the recorded rows
whose files differ (``stale_recorded``): a resume decodes them again and replaces their rows.
"""
import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from fairseq_kd import fileio, integrity
from fairseq_kd.errors import KDInputError
from fairseq_kd.study import commands as C
from fairseq_kd.study.config import RESULT_FIELDS, Cell, row_key
from fairseq_kd.study.logs import parse_generate
from fairseq_kd.study.records import drop_rows_atomic, read_csv

logger = logging.getLogger("fairseq_kd.study")

SUFFIX = ".stamp.json"
HOW = ("--cpu",)  # recorded, not compared: where it ran (a study may resume on another device)
NOT_WHAT = ("--user-dir", "--path", "--num-workers")  # paths (the checkpoint is known by content) and speed
UNSTAMPED = ("no decode stamp (decoded by fairseq-kd before the stamps; before 8394f95 with --task translation, "
             "whose length limit is the padded batch's)")


def stamp_path(hyp: Path) -> Path:
    """``hyp.beam5.txt`` -> ``hyp.beam5.stamp.json``."""
    return hyp.with_name(hyp.name[:-len(".txt")] + SUFFIX)


def command_flags(args: Sequence[str]) -> Dict[str, str]:
    """``{flag: value}`` of a command line (``--beam 5`` and ``--beam=5`` alike, a flag without a value: "",
    a repeated flag: its values in order, the words before the first flag: ``args``)."""
    out: Dict[str, List[str]] = {}
    key = "args"
    for word in args:
        if re.match(r"--?[A-Za-z]", word):
            key, eq, value = word.partition("=")
            out.setdefault(key, []).extend([value] if eq else [])
        else:
            out.setdefault(key, []).append(word)
    return {k: " ".join(v) for k, v in out.items()}


def split_digests(data: str, split: str, src: str, tgt: str) -> Dict[str, Optional[str]]:
    """sha256 of what fairseq-generate reads of ``split`` besides the checkpoint: the dictionaries and the
    binarized source (of the first ``--data`` dir, where fairseq finds a test split); None: not there."""
    from fairseq_kd.fingerprint import file_sha256, prefix_fingerprint
    from fairseq_kd.langpair import split_prefix

    folder = data.split(":")[0]
    out: Dict[str, Optional[str]] = {}
    for lang in (src, tgt):
        path = os.path.join(folder, f"dict.{lang}.txt")
        out[f"dict.{lang}.txt"] = file_sha256(path) if os.path.isfile(path) else None
    prefix = split_prefix(folder, split, src, tgt, src)
    out[f"{split}.{src}"] = prefix_fingerprint(prefix) if prefix else None
    return out


def decode_stamp(cmd: Sequence[str], data: Dict[str, Optional[str]]) -> Dict:
    """What the fairseq-generate command ``cmd`` decodes, but the checkpoint (``write_stamp`` adds it)."""
    flags = command_flags(cmd[1:])
    flags.pop("args", None)  # the data dir: ``data`` holds its content
    return {"version": C.DECODE_VERSION, "data": data, "command": list(cmd),
            "generate_args": {k: v for k, v in flags.items() if k not in (*NOT_WHAT, *HOW)},
            "hardware": {k: flags[k] for k in HOW if k in flags}}


def checkpoint_identity(path: Path) -> Dict:
    """The checkpoint by content (no mtime: a copy, or the same run again, stamps alike)."""
    from fairseq_kd.fingerprint import file_sha256

    return {"file": path.name, "size": os.path.getsize(path), "sha256": file_sha256(str(path))}


def checkpoint_change(recorded, path: Path) -> Optional[str]:
    """Why ``path`` is not the checkpoint ``recorded`` (None: it is, or it is gone and cannot be compared)."""
    if not path.is_file():
        return None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("sha256"), str):
        return f"no identity of the checkpoint decoded in the stamp ({path.name} now)"
    now = checkpoint_identity(path)  # hashed once per process while the file is unchanged (fingerprint)
    if now["size"] == recorded.get("size") and now["sha256"] == recorded["sha256"]:
        return None
    return f"{path.name} is not the checkpoint decoded (sha256 {recorded['sha256'][:12]}, now {now['sha256'][:12]})"


def _show(value) -> str:
    return "(not given)" if value is None else (value if value != "" else "(given)")


def changes(recorded: Optional[Dict], current: Dict, checkpoint: Path) -> List[str]:
    """What differs between a hypothesis file's stamp (``read_stamp``; None: none) and this run's decoding
    (``decode_stamp``) of ``checkpoint``; [] when the file may be reused."""
    if recorded is None:
        return [UNSTAMPED]
    if "unreadable" in recorded:
        return [f"unreadable decode stamp ({recorded['unreadable']})"]
    out = []
    if recorded.get("version") != current["version"]:
        out.append(f"decode version {recorded.get('version')} -> {current['version']} (commands.DECODE_VERSION)")
    old, new = recorded.get("generate_args") or {}, current["generate_args"]
    out += [f"{k} {_show(old.get(k))} -> {_show(new.get(k))}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
    old, new = recorded.get("data") or {}, current["data"]
    out += [f"{k} {(old.get(k) or '(none)')[:12]} -> {(new.get(k) or '(none)')[:12]} (sha256)"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    why = checkpoint_change(recorded.get("checkpoint"), checkpoint)
    return out + ([why] if why else [])


def read_stamp(path: Path) -> Optional[Dict]:
    """The stamp at ``path``; None when there is none; ``{"unreadable": why}`` when it cannot be read."""
    if not path.exists():
        return None
    try:
        return integrity.load_json(str(path), "it is decoded again", what="decode stamp")
    except KDInputError as err:
        return {"unreadable": str(err)}


def write_stamp(path: Path, stamp: Dict, checkpoint: Path) -> None:
    """``stamp`` with the checkpoint decoded (None if it is not there: a resume that finds one decodes again)."""
    identity = checkpoint_identity(checkpoint) if checkpoint.is_file() else None
    fileio.atomic_write_json(path, {**stamp, "checkpoint": identity})


class Decodes:
    """A ``Study``'s test decoding (``self.cfg``, ``self.out``, ``self.runner``, ``self._record``, ...)."""

    def hyp_path(self, cell: Cell, split: str, search: str) -> Path:
        tag = "" if split == self.cfg.gen_subset else f"{split}."  # the main test split keeps its old file names
        return self.out / "cells" / cell.slug() / f"hyp.{tag}{search}.txt"

    def results_path(self, split: str) -> str:
        return self.results if split == self.cfg.gen_subset else str(self.out / f"results.{split}.csv")

    def decoded_checkpoint(self, cell: Cell) -> Path:
        name = "checkpoint_best.pt" if self.cfg.patience else "checkpoint_last.pt"
        return self.out / "cells" / cell.slug() / "checkpoints" / name

    def this_decoding(self, split: str, beam: int, checkpoint: Path) -> Tuple[List[str], Dict]:
        """This run's fairseq-generate command for ``checkpoint``, and its stamp."""
        cfg = self.cfg
        cmd = C.generate_command(cfg, cfg.data, str(checkpoint), beam, split)
        return cmd, decode_stamp(cmd, split_digests(cfg.data, split, cfg.source_lang, cfg.target_lang))

    def decode(self, cell: Cell, split: str, search: str, beam: int) -> Path:
        """``cell``'s hypothesis file of ``split`` and ``search``: decoded, unless its stamp is this run's. Before
        it is decoded, its recorded row (if any) goes, so that a kill from then on leaves the (cell, search)
        unrecorded and a resume scores the new file (or decodes again) instead of keeping the old row."""
        cfg, hyp = self.cfg, self.hyp_path(cell, split, search)
        ckpt, stamp = self.decoded_checkpoint(cell), stamp_path(hyp)
        cmd, now = self.this_decoding(split, beam, ckpt)
        if hyp.exists():
            why = changes(read_stamp(stamp), now, ckpt)
            if not why:
                return hyp
            logger.warning("cell %s: %s was decoded otherwise (%s): decoding it again", cell.slug(), hyp.name,
                           "; ".join(why))
        default = cfg.test_searches()[0][0]
        with self._record:
            drop_rows_atomic(self.results_path(split), lambda r: row_key(r) == cell.key()
                             and (r.get("search") or default) == search, RESULT_FIELDS)
        stamp.unlink(missing_ok=True)
        log = hyp.with_name("generate." + hyp.name[len("hyp."):-len(".txt")] + ".log")
        self.launched.append("fairseq-generate")
        self.runner(cmd, str(log))
        fileio.atomic_write_lines(hyp, parse_generate(log.read_text(encoding="utf-8", errors="replace")))
        write_stamp(stamp, now, ckpt)  # last: a kill before it leaves a file without a stamp, decoded again
        return hyp

    def stale_recorded(self, cells: List[Cell]) -> Set[Tuple[str, ...]]:
        """(cell key, search) of the recorded rows of ``cells`` (every test split) whose hypothesis file was
        decoded otherwise than this run decodes (``changes``): they are decoded again and their rows replaced.
        Refused, before any work, where the cell's checkpoint is gone: it could not be decoded again."""
        cfg, default = self.cfg, self.cfg.test_searches()[0][0]
        stale, names, gone = set(), [], []
        for split in [cfg.gen_subset, *(s for s, _ in cfg.extra_tests)]:
            recorded = {(*row_key(r), r.get("search") or default) for r in read_csv(self.results_path(split))}
            for search, beam in cfg.test_searches():
                for cell in cells:
                    hyp = self.hyp_path(cell, split, search)
                    if (*cell.key(), search) not in recorded or not hyp.exists():
                        continue
                    ckpt = self.decoded_checkpoint(cell)
                    now = self.this_decoding(split, beam, ckpt)[1]
                    why = changes(read_stamp(stamp_path(hyp)), now, ckpt)
                    if why:
                        stale.add((*cell.key(), search))
                        names.append(f"{cell.slug()}/{hyp.name}")
                        if not ckpt.is_file():
                            gone.append(f"{os.path.relpath(hyp, self.out)} ({'; '.join(why)}; no {ckpt.name})")
        if gone:
            more = " ..." if len(gone) > 3 else ""
            raise KDInputError(f"{self.out}: the recorded rows of {', '.join(gone[:3])}{more} were decoded otherwise "
                               f"than this run decodes, and their cell has no checkpoint to decode them again: "
                               f"restore the cell's checkpoints, or delete the cell's rows (results*.csv) and its "
                               f"train.json to train it again, or use a new --out-dir")
        if names:
            logger.warning("study: %d recorded hypothesis file(s) were decoded otherwise than this run decodes (%s%s): "
                           "decoding them again and replacing their rows", len(names), ", ".join(names[:4]),
                           " ..." if len(names) > 4 else "")
        return stale
