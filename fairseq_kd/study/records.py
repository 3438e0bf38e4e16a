"""results.csv and curves.csv: read, and written whole through ``fairseq_kd.fileio`` (atomic)."""
import csv
import io
import os
from typing import Dict, List

from fairseq_kd import fileio, integrity
from fairseq_kd.errors import KDInputError


def read_csv(path: str) -> List[Dict]:
    """Rows of a results/curves file (none if it does not exist), checked by ``fairseq_kd.integrity``: a cut
    or interleaved row, a value outside its domain, a cell recorded twice with other values is refused
    naming the file and line; exact copies of a row are kept once (a copy is never another seed)."""
    if not os.path.exists(path):
        return []
    if not os.path.isfile(path):
        raise KDInputError(f"{path}: not a regular file; remove it or pass another --out-dir")
    return integrity.read_table(path)[1]


def write_csv_atomic(path: str, rows: List[Dict], fields: List[str]) -> None:
    """Write exactly ``rows`` to ``path`` (a reader sees the old file or the new one)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    fileio.atomic_write_text(path, buf.getvalue())


def replace_rows_atomic(path: str, drop, rows: List[Dict], fields: List[str]) -> None:
    """Rewrite ``path`` without the rows for which ``drop(row)`` holds, plus ``rows`` (small files)."""
    write_csv_atomic(path, [r for r in read_csv(path) if not drop(r)] + list(rows), fields)


def drop_rows_atomic(path: str, drop, fields: List[str]) -> None:
    """Rewrite ``path`` without the rows for which ``drop(row)`` holds; untouched (or absent) when none does."""
    rows = read_csv(path)
    kept = [r for r in rows if not drop(r)]
    if len(kept) != len(rows):
        write_csv_atomic(path, kept, fields)


def sort_rows_atomic(path: str, rank, fields: List[str]) -> None:
    """Rewrite ``path`` with its rows stably sorted by ``rank(row)`` (e.g. a cell's place in the grid)."""
    rows = read_csv(path)
    ordered = sorted(rows, key=rank)
    if ordered != rows:
        write_csv_atomic(path, ordered, fields)
