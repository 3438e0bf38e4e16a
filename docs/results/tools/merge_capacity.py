"""The capacity study's report dir: its rows plus a main study's noise-0 rows of the given methods and
seeds, whose student (the shrunk post-norm relu_3m, 1.31M) is the ladder's ~1M point. That arch is
renamed (default transformer_relu_3m_shrunk) so it does not merge with the 2.3M full rung of the same
name; the main study's cells are linked as OUT/cells_main, the capacity study's as OUT/cells.

Usage: python docs/results/tools/merge_capacity.py --capacity exp/studies/capacity --main exp/main/study \
           --out exp/studies/capacity_all
"""
import argparse
import os
import shutil
import sys

from fairseq_kd.cli import run_tool
from fairseq_kd.errors import KDInputError
from fairseq_kd.integrity import merge_rows
from fairseq_kd.study.config import CURVE_FIELDS, NO_DECODING, RESULT_FIELDS, Cell
from fairseq_kd.study.records import read_csv, write_csv_atomic


def renamed(rows, keep, arch, results):
    """The kept rows with ``arch`` set (and their ``cell`` named after it); results rows' hypothesis paths
    pointed into cells_main/."""
    out = []
    for r in rows:
        if keep(r):
            r = dict(r, arch=arch)
            if results:
                r["hyp"] = r["hyp"].replace("cells/", "cells_main/", 1)
                r["cell"] = Cell(r["method"], float(r["noise"]), arch, r["decoding"], float(r["lr"]),
                                 int(r["seed"]), r.get("teacher") or NO_DECODING).slug()
            out.append(r)
    return out


def merge_capacity(cap, main_study, dst, methods=("none", "word", "seq"), seeds=(1, 2),
                   arch="transformer_relu_3m_shrunk"):
    """Write DST/results.csv, curves.csv, study.json (the capacity study's); returns the result rows."""
    for d in (cap, main_study):
        if not os.path.isfile(os.path.join(d, "results.csv")):
            raise KDInputError(f"{d}/results.csv: not found; pass a finished study's out-dir")
    os.makedirs(dst, exist_ok=True)
    for name, src in (("cells", os.path.join(cap, "cells")), ("cells_main", os.path.join(main_study, "cells"))):
        link = os.path.join(dst, name)
        if not os.path.lexists(link):
            os.symlink(os.path.relpath(src, dst), link)
    methods, seeds = set(methods), {str(s) for s in seeds}
    keep = lambda r: r["method"] in methods and r["seed"] in seeds and float(r["noise"]) == 0  # noqa: E731
    res = merge_rows([(os.path.join(main_study, "results.csv"),
                       renamed(read_csv(os.path.join(main_study, "results.csv")), keep, arch, True)),
                      (os.path.join(cap, "results.csv"), read_csv(os.path.join(cap, "results.csv")))])
    cur = merge_rows([(os.path.join(main_study, "curves.csv"),
                       renamed(read_csv(os.path.join(main_study, "curves.csv")), keep, arch, False)),
                      (os.path.join(cap, "curves.csv"), read_csv(os.path.join(cap, "curves.csv")))])
    write_csv_atomic(os.path.join(dst, "results.csv"), res, list(RESULT_FIELDS))
    write_csv_atomic(os.path.join(dst, "curves.csv"), cur, list(CURVE_FIELDS))
    shutil.copy(os.path.join(cap, "study.json"), os.path.join(dst, "study.json"))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capacity", required=True, help="the capacity study's out-dir")
    ap.add_argument("--main", dest="main_study", required=True, help="the main study's out-dir")
    ap.add_argument("--out", required=True, help="the merged dir to write (for fairseq-kd-report)")
    ap.add_argument("--methods", nargs="+", default=["none", "word", "seq"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--arch-name", default="transformer_relu_3m_shrunk", help="arch given to the main study's rows")
    a = ap.parse_args(argv)
    res = merge_capacity(a.capacity, a.main_study, a.out, a.methods, a.seeds, a.arch_name)
    print(len(res), "rows in", a.out)


if __name__ == "__main__":
    sys.exit(run_tool("merge_capacity", main)[0])
