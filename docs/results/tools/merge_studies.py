"""Merge study out-dirs that ran side by side (e.g. one seed each: two processes never share one
results.csv) into one for fairseq-kd-report: the union of their results / curves rows (a row found
in several sources kept once; a cell whose row differs between sources is refused: one seed measured
twice), every cell dir symlinked into DST/cells, study.json of the first. The rows of every extra test
split (``results.test1.csv``, written by ``--extra-test test1=REF``) are merged the same way; a split
that some sources decoded and others did not is refused, naming the file that is missing.

Usage: python docs/results/tools/merge_studies.py DST SRC1 [SRC2 ...]
"""
import argparse
import glob
import os
import shutil
import sys

from fairseq_kd.cli import run_tool
from fairseq_kd.errors import KDInputError
from fairseq_kd.integrity import merge_rows
from fairseq_kd.study.config import CURVE_FIELDS, RESULT_FIELDS
from fairseq_kd.study.records import read_csv, write_csv_atomic


def extra_splits(srcs):
    """The extra test splits every source decoded ({split: [its results file per source]}); a split
    found in some sources and not in others is refused: its merged table would lack their cells."""
    found = {}
    for src in srcs:
        for path in sorted(glob.glob(os.path.join(glob.escape(src), "results.*.csv"))):
            found.setdefault(os.path.basename(path)[len("results."):-len(".csv")], {})[src] = path
    for split, paths in found.items():
        for src in srcs:
            if src not in paths:
                raise KDInputError(f"{os.path.join(src, f'results.{split}.csv')}: not found, while "
                                   f"{paths[next(iter(paths))]} exists; decode split {split!r} in that study too "
                                   f"(re-run it with --extra-test {split}=REF) or merge only studies that decoded it")
    return {split: [paths[src] for src in srcs] for split, paths in sorted(found.items())}


def merge_studies(dst, srcs):
    """Write DST/results.csv, results.SPLIT.csv for every extra split, curves.csv, study.json; returns
    (result rows, curve rows)."""
    for src in srcs:
        if not os.path.isfile(os.path.join(src, "results.csv")):
            raise KDInputError(f"{src}/results.csv: not found; pass finished study out-dirs as SRC")
    splits = extra_splits(srcs)
    os.makedirs(os.path.join(dst, "cells"), exist_ok=True)
    res = merge_rows([(os.path.join(src, "results.csv"), read_csv(os.path.join(src, "results.csv"))) for src in srcs])
    extra = {split: merge_rows([(p, read_csv(p)) for p in paths]) for split, paths in splits.items()}
    cur = merge_rows([(os.path.join(src, "curves.csv"), read_csv(os.path.join(src, "curves.csv"))) for src in srcs])
    for src in srcs:
        for r in read_csv(os.path.join(src, "results.csv")):
            link = os.path.join(dst, "cells", r["cell"])
            target = os.path.realpath(os.path.join(src, "cells", r["cell"]))
            if not os.path.lexists(link):
                os.symlink(target, link)
            elif os.path.realpath(link) != target:
                raise KDInputError(f"{link}: already points to {os.path.realpath(link)}, not {target}; "
                                   "merge into an empty DST")
    write_csv_atomic(os.path.join(dst, "results.csv"), res, list(RESULT_FIELDS))
    for split, rows in extra.items():
        write_csv_atomic(os.path.join(dst, f"results.{split}.csv"), rows, list(RESULT_FIELDS))
    write_csv_atomic(os.path.join(dst, "curves.csv"), cur, list(CURVE_FIELDS))
    shutil.copy(os.path.join(srcs[0], "study.json"), os.path.join(dst, "study.json"))
    return res, cur


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dst", help="the merged dir to write")
    ap.add_argument("srcs", nargs="+", metavar="SRC", help="study out-dirs (a cell in several must have one row)")
    a = ap.parse_args(argv)
    res, cur = merge_studies(a.dst, a.srcs)
    print(len(res), "result rows,", len(cur), "curve rows in", a.dst)


if __name__ == "__main__":
    sys.exit(run_tool("merge_studies", main)[0])
