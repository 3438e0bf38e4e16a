"""Seed a noise study's out-dir with a finished study's noise-0 cells (same teacher, data, student and
settings: noise 0 of the noise study is that study's cell): the rows are added to OUT_DIR's results.csv /
curves.csv and the cell dirs symlinked.

The two study.json must be one study's, by merge_studies.py's rules (``one_study``: the same settings;
the teacher and a method's --method-args of the imported methods the same), except the noise settings
(``NOISE_ONLY``: at noise 0 nothing is noised). So OUT_DIR/study.json must be there: start the noise study
first (its ``--noise`` grid has no 0, so it trains no noise-0 cell), then import, at best when it is not
writing (finished, or between runs: each rewrites results.csv whole). A noise-0 row already in
OUT_DIR is kept if it is the same row, refused if it differs; a cell link pointing elsewhere is refused.
It prints how many rows it added and how many were there already.

Usage: python docs/results/tools/import_noise0.py --from exp/main/study exp/studies/noise_all
       [--methods none word seq] [--seeds 1 2]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # merge_studies, beside this file

from fairseq_kd import integrity  # noqa: E402
from fairseq_kd.cli import run_tool  # noqa: E402
from fairseq_kd.errors import KDInputError  # noqa: E402
from fairseq_kd.integrity import merge_rows  # noqa: E402
from fairseq_kd.study.config import CURVE_FIELDS, RESULT_FIELDS  # noqa: E402
from fairseq_kd.study.records import read_csv, write_csv_atomic  # noqa: E402
from merge_studies import one_study  # noqa: E402

NOISE_ONLY = ("noise_ops", "noise_side", "noise_swap_window", "noise_copies")  # settings noise 0 does not read


def noise0_filter(methods, seeds):
    """Predicate on a results/curves row: one of ``methods``, one of ``seeds``, noise 0."""
    methods, seeds = set(methods), {str(s) for s in seeds}
    return lambda r: r["method"] in methods and r["seed"] in seeds and float(r["noise"]) == 0


def _settings(d, what):
    path = os.path.join(d, "study.json")
    if not os.path.isfile(path):
        raise KDInputError(f"{path}: not found; {what}")
    settings = integrity.load_json(path, "restore it from the study's out-dir")
    return {k: v for k, v in settings.items() if k not in NOISE_ONLY}


def check_settings(src, dst, imported):
    """Refuses when ``src``'s and ``dst``'s study.json are not one study's for the ``imported`` methods."""
    theirs = _settings(src, "pass --from a study out-dir written by fairseq-kd-study")
    ours = _settings(dst, "start the noise study first (fairseq-kd-study --out-dir there; it records its settings "
                          "in study.json), then import: its settings are compared with --from's")
    mine = {r["method"] for r in read_csv(os.path.join(dst, "results.csv"))}
    one_study([(dst, ours, mine | imported), (src, theirs, imported)],
              hint="import noise-0 cells only from a study run with the noise study's settings")


def import_noise0(src: str, dst: str, methods=("none", "word", "seq"), seeds=(1, 2)):
    """Add ``src``'s noise-0 rows to ``dst``'s and link their cell dirs, after ``check_settings``; returns
    ((result rows added, already there), (curve rows added, already there))."""
    if not os.path.isfile(os.path.join(src, "results.csv")):
        raise KDInputError(f"{src}/results.csv: not found; pass --from a finished study's out-dir")
    keep = noise0_filter(methods, seeds)
    res = [r for r in read_csv(os.path.join(src, "results.csv")) if keep(r)]
    cur = [r for r in read_csv(os.path.join(src, "curves.csv")) if keep(r)]
    if not res:
        raise KDInputError(f"{src}/results.csv: no noise-0 row of methods {' '.join(methods)}, seeds "
                           f"{' '.join(map(str, seeds))}; pass the --methods and --seeds it has")
    check_settings(src, dst, {r["method"] for r in res})
    counts = []
    tables = []
    for name, rows, fields in (("results.csv", res, RESULT_FIELDS), ("curves.csv", cur, CURVE_FIELDS)):
        path = os.path.join(dst, name)
        had = read_csv(path)
        merged = merge_rows([(path, had), (os.path.join(src, name), rows)])  # a cell with other values: refused
        tables.append((path, merged, fields))
        counts.append((len(merged) - len(had), len(rows) - (len(merged) - len(had))))
    os.makedirs(os.path.join(dst, "cells"), exist_ok=True)
    for r in res:
        link = os.path.join(dst, "cells", r["cell"])
        target = os.path.join(src, "cells", r["cell"])
        if not os.path.lexists(link):
            os.symlink(os.path.relpath(target, os.path.dirname(link)), link)
        elif os.path.realpath(link) != os.path.realpath(target):
            raise KDInputError(f"{link}: already points to {os.path.realpath(link)}, not {os.path.realpath(target)}; "
                               f"that cell is another study's")
    for path, rows, fields in tables:
        write_csv_atomic(path, rows, list(fields))
    return tuple(counts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="the noise study's out-dir (holds its study.json)")
    ap.add_argument("--from", dest="src", required=True, help="the finished study's out-dir (holds results.csv)")
    ap.add_argument("--methods", nargs="+", default=["none", "word", "seq"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    a = ap.parse_args(argv)
    (res, res_had), (cur, cur_had) = import_noise0(a.src, a.out_dir, a.methods, a.seeds)
    print(f"{res} result rows, {cur} curve rows imported into {a.out_dir} from {a.src} "
          f"({res_had} result rows, {cur_had} curve rows were there already)")


if __name__ == "__main__":
    sys.exit(run_tool("import_noise0", main)[0])
