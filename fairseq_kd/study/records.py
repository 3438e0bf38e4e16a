"""results.csv and curves.csv: read, and written whole through ``fairseq_kd.fileio`` (atomic)."""
import csv
import io
import os
from typing import Dict, List

from fairseq_kd import fileio
from fairseq_kd.errors import KDInputError


def read_csv(path: str) -> List[Dict]:
    """Rows of a results/curves file; a cut or interleaved row is refused naming the file and line."""
    if not os.path.isfile(path):
        return []
    reader = csv.DictReader(io.StringIO(fileio.read_text(path, "results file"), newline=""))
    rows = list(reader)
    for n, row in enumerate(rows, 2):
        if None in row or any(v is None for v in row.values()):  # more / fewer fields than the header
            raise KDInputError(f"{path}:{n}: the row has a different number of fields than the header (a cut or "
                               f"interleaved write); delete that line and re-run to redo its cell")
    return rows


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
