"""Line-exact text I/O: files split on ``\\n`` only, alignment checks, atomic writes.

Why: a stray ``\\r`` or U+2028 inside a sentence must never turn into a line break, or
source and target silently drift apart. Every writer goes through a temp file + os.replace.
"""
import os
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

from fairseq_kd.errors import KDInputError


def normalize(line: str) -> str:
    """Collapse every Unicode whitespace run (tabs, \\r, U+2028, ...) to one space; strip."""
    return " ".join(line.split())


def read_lines(path) -> List[str]:
    """Lines of a UTF-8 file split on ``\\n`` only, without the newline."""
    path = Path(path)
    if not path.is_file():
        raise KDInputError(f"{path}: file not found; check the path (or the --data-dir you passed)")
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            return [line[:-1] if line.endswith("\n") else line for line in f]
    except UnicodeDecodeError as e:
        raise KDInputError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start}); "
                           f"re-encode it, e.g. iconv -f latin1 -t utf-8") from None


def count_lines(path) -> int:
    """Number of lines as read_lines sees them (a last line without newline counts)."""
    path = Path(path)
    if not path.is_file():
        raise KDInputError(f"{path}: file not found; check the path (or the --data-dir you passed)")
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def check_aligned(pairs: Sequence[Tuple[str, str]]) -> List[int]:
    """Raise KDInputError naming both files and their counts unless each pair has equal lines."""
    counts = []
    for src, tgt in pairs:
        a, b = count_lines(src), count_lines(tgt)
        if a != b:
            raise KDInputError(
                f"misaligned parallel files: {src} has {a} lines but {tgt} has {b}; "
                f"both sides must hold one sentence per line in the same order (re-extract or fix them)")
        counts.append(a)
    return counts


def write_lines_atomic(path, lines: Iterable[str]) -> int:
    """Write lines (newline-terminated) to ``path`` via a temp file + os.replace; returns count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(line + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


def write_parallel_atomic(paths: Sequence, columns: Sequence[Sequence[str]]) -> int:
    """Write aligned columns to their files; all temp files are complete before any replace."""
    if len({len(c) for c in columns}) != 1:
        raise ValueError("columns of different lengths")  # a bug, not user input
    tmps = []
    try:
        for path, col in zip(paths, columns):
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmps.append(tmp)
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.writelines(line + "\n" for line in col)
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            if tmp.exists():
                tmp.unlink()
    return len(columns[0])
