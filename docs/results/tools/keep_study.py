"""Keep a finished study in docs/results: its rows (``results*.csv``), ``study.json``, ``curves.csv`` and
every row's hypothesis file, gzipped, at the path the row names (``cells/CELL/hyp.beam5.txt.gz``).
The kept folder is a study that ``merge_studies.py`` and ``fairseq-kd-report`` read as they read the
out-dir (they take ``hyp...txt.gz`` where ``hyp...txt`` is missing), so a later session on another
machine can still pair its seeds with these in a bootstrap test: machine A's hypotheses lived only in
``exp/`` and were lost with it (docs/results.md 7g).

    python docs/results/tools/keep_study.py exp/converged/students_1m_Bword docs/results/converged_b/studies/students_1m_Bword

Idempotent: a file already kept with the same bytes is not rewritten (gzip without a timestamp, so
the same hypotheses give the same bytes). Checkpoints and logs are not kept.
"""
import argparse
import csv
import glob
import gzip
import os
import sys
from pathlib import Path

from fairseq_kd import fileio
from fairseq_kd.cli import run_tool
from fairseq_kd.errors import KDInputError

KEPT = ("study.json", "curves.csv")


def _same(path: str, data: bytes) -> bool:
    return os.path.isfile(path) and Path(path).read_bytes() == data


def _put(path: str, data: bytes) -> bool:
    if _same(path, data):
        return False
    fileio.make_dirs(os.path.dirname(path))
    fileio.atomic_write_bytes(path, data)
    return True


def keep_study(src: str, dst: str) -> dict:
    """Copy ``src``'s rows and settings and gzip every row's hypotheses into ``dst``; returns counts."""
    rows_files = sorted(glob.glob(os.path.join(glob.escape(src), "results*.csv")))
    if not rows_files:
        raise KDInputError(f"{src}: no results.csv (not a study out-dir, or no cell has finished yet)")
    hyps, written = set(), 0
    for path in rows_files:
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                hyp = row.get("hyp") or ""
                if not hyp:
                    raise KDInputError(f"{path}: row of cell {row.get('cell', '?')} names no hyp file; keep only "
                                       f"studies written by fairseq-kd-study (it records each row's hypotheses)")
                source = os.path.join(src, hyp)
                fileio.check_file(source, f"{source}: the hypotheses of a row of {path} are missing; re-run the "
                                          f"study to decode them again (it resumes)")
                hyps.add(hyp)
                written += _put(os.path.join(dst, hyp + ".gz"), gzip.compress(Path(source).read_bytes(), mtime=0))
        written += _put(os.path.join(dst, os.path.basename(path)), Path(path).read_bytes())
    for name in KEPT:
        if os.path.isfile(os.path.join(src, name)):
            written += _put(os.path.join(dst, name), Path(src, name).read_bytes())
    return {"rows_files": len(rows_files), "hyps": len(hyps), "written": written}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="keep_study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="a study out-dir (fairseq-kd-study --out-dir)")
    p.add_argument("dst", help="where to keep it (docs/results/.../studies/NAME)")
    args = p.parse_args(argv)
    counts = keep_study(args.src, args.dst)
    print(f"kept {args.src} in {args.dst}: {counts['rows_files']} rows files, {counts['hyps']} hypothesis files "
          f"({counts['written']} written, the rest unchanged)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_tool("keep_study", main)[0])
