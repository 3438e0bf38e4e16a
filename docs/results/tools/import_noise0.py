"""Seed a noise study's out-dir with a finished study's noise-0 cells (same teacher, data, student and
settings: noise 0 of the noise study is that study's cell): the rows are copied into OUT_DIR's
results.csv / curves.csv (only when OUT_DIR has no results.csv yet) and the cell dirs symlinked.

Usage: python docs/results/tools/import_noise0.py --from exp/main/study exp/studies/noise_all
       [--methods none word seq] [--seeds 1 2]
"""
import argparse
import os
import sys

from fairseq_kd.cli import run_tool
from fairseq_kd.errors import KDInputError
from fairseq_kd.study.config import CURVE_FIELDS, RESULT_FIELDS
from fairseq_kd.study.records import read_csv, write_csv_atomic


def noise0_filter(methods, seeds):
    """Predicate on a results/curves row: one of ``methods``, one of ``seeds``, noise 0."""
    methods, seeds = set(methods), {str(s) for s in seeds}
    return lambda r: r["method"] in methods and r["seed"] in seeds and float(r["noise"]) == 0


def import_noise0(src: str, dst: str, methods=("none", "word", "seq"), seeds=(1, 2)):
    """Copy ``src``'s noise-0 rows into ``dst`` (if it has no results yet) and link their cell dirs;
    returns (result rows, curve rows) selected."""
    if not os.path.isfile(os.path.join(src, "results.csv")):
        raise KDInputError(f"{src}/results.csv: not found; pass --from a finished study's out-dir")
    keep = noise0_filter(methods, seeds)
    res = [r for r in read_csv(os.path.join(src, "results.csv")) if keep(r)]
    cur = [r for r in read_csv(os.path.join(src, "curves.csv")) if keep(r)]
    os.makedirs(os.path.join(dst, "cells"), exist_ok=True)
    for r in res:
        link = os.path.join(dst, "cells", r["cell"])
        if not os.path.lexists(link):
            os.symlink(os.path.relpath(os.path.join(src, "cells", r["cell"]), os.path.dirname(link)), link)
    if not os.path.exists(os.path.join(dst, "results.csv")):
        write_csv_atomic(os.path.join(dst, "results.csv"), res, list(RESULT_FIELDS))
        write_csv_atomic(os.path.join(dst, "curves.csv"), cur, list(CURVE_FIELDS))
    return res, cur


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="the noise study's out-dir")
    ap.add_argument("--from", dest="src", required=True, help="the finished study's out-dir (holds results.csv)")
    ap.add_argument("--methods", nargs="+", default=["none", "word", "seq"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    a = ap.parse_args(argv)
    res, cur = import_noise0(a.src, a.out_dir, a.methods, a.seeds)
    print(len(res), "result rows,", len(cur), "curve rows imported into", a.out_dir)


if __name__ == "__main__":
    sys.exit(run_tool("import_noise0", main)[0])
