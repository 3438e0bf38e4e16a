"""Line-exact text I/O: files split on ``\\n`` only, alignment checks, atomic writes.

Why: a stray ``\\r`` or U+2028 inside a sentence must never turn into a line break, or
source and target silently drift apart. Reading and writing go through ``fairseq_kd.fileio``.
"""
from typing import List, Sequence, Tuple

from fairseq_kd import fileio
from fairseq_kd.errors import KDInputError
from fairseq_kd.fileio import count_lines, read_lines  # noqa: F401  (the prep tools' readers)


def normalize(line: str) -> str:
    """Collapse every Unicode whitespace run (tabs, \\r, U+2028, ...) to one space; strip."""
    return " ".join(line.split())


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


def write_parallel_atomic(paths: Sequence, columns: Sequence[Sequence[str]]) -> int:
    """Write aligned columns to their files; all temp files are complete before any replace."""
    if len({len(c) for c in columns}) != 1:
        raise ValueError("columns of different lengths")  # a bug, not user input
    fileio.atomic_write_many(dict(zip(paths, columns)))
    return len(columns[0])
