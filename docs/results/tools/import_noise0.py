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

Extra test splits (``--extra-test``: results.SPLIT.csv) are imported too: every split the noise study decodes
(its results.SPLIT.csv, or a split its study.json records a reference digest for) gets the imported cells' rows
from --from's results.SPLIT.csv, under the same checks (the reference digests of that split, as every
``*_sha256`` setting, must agree where both study.json record one; a row already there must be the same row;
each file written atomically, after every check). --from must have decoded that split for every imported cell
(else the noise study's SPLIT table would lack their noise-0 rows: refused); a split only --from decoded is
not imported, and the tool says so.

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
from merge_studies import one_study, split_files  # noqa: E402

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


def decoded_splits(d):
    """The extra test splits study ``d`` decodes: those with a results file, and those its study.json
    records a reference digest for (a split is recorded when the study starts, before any row)."""
    settings = integrity.load_json(os.path.join(d, "study.json"), "restore it from the study's out-dir")
    recorded = settings.get("reference_sha256") or {}
    main = settings.get("gen_subset") or "test"
    return sorted(set(split_files(d)) | {s for s in (recorded if isinstance(recorded, dict) else {}) if s != main})


def split_rows(src, dst, res, keep):
    """{split: (dst's results file, --from's noise-0 rows of the imported cells)} for every extra split
    ``dst`` decodes, and the splits only ``src`` decoded; a split whose rows ``src`` lacks for an imported
    cell (or search) is refused."""
    theirs = split_files(src)
    wanted = {(r["cell"], r.get("search") or "") for r in res}
    out = {}
    for split in decoded_splits(dst):
        path = theirs.get(split)
        rows = [r for r in read_csv(path) if keep(r) and (r["cell"], r.get("search") or "") in wanted] if path else []
        missing = sorted(wanted - {(r["cell"], r.get("search") or "") for r in rows})
        if missing:
            where = path or os.path.join(src, f"results.{split}.csv")
            raise KDInputError(f"{where}: no row of cell {missing[0][0]} ({missing[0][1]}), while {dst} decodes "
                               f"split {split!r}: its {split} table would lack that noise-0 cell; decode {split} "
                               f"in --from's study too (re-run it with --extra-test {split}=REF), or import only "
                               f"the --methods / --seeds it decoded")
        out[split] = (os.path.join(dst, f"results.{split}.csv"), path, rows)
    return out, sorted(set(theirs) - set(out))


def import_noise0(src: str, dst: str, methods=("none", "word", "seq"), seeds=(1, 2), skipped=None):
    """Add ``src``'s noise-0 rows to ``dst``'s (results.csv, curves.csv and the results.SPLIT.csv of every
    extra split ``dst`` decodes) and link their cell dirs, after ``check_settings``; returns
    ((result rows added, already there), (curve rows added, already there), {extra split: (rows added,
    already there)}). ``skipped`` (a list) gets the splits only ``src`` decoded (not imported)."""
    if not os.path.isfile(os.path.join(src, "results.csv")):
        raise KDInputError(f"{src}/results.csv: not found; pass --from a finished study's out-dir")
    keep = noise0_filter(methods, seeds)
    res = [r for r in read_csv(os.path.join(src, "results.csv")) if keep(r)]
    cur = [r for r in read_csv(os.path.join(src, "curves.csv")) if keep(r)]
    if not res:
        raise KDInputError(f"{src}/results.csv: no noise-0 row of methods {' '.join(methods)}, seeds "
                           f"{' '.join(map(str, seeds))}; pass the --methods and --seeds it has")
    check_settings(src, dst, {r["method"] for r in res})
    splits, only_src = split_rows(src, dst, res, keep)
    counts = []
    tables = []
    sources = [(os.path.join(dst, "results.csv"), os.path.join(src, "results.csv"), res, RESULT_FIELDS),
               (os.path.join(dst, "curves.csv"), os.path.join(src, "curves.csv"), cur, CURVE_FIELDS)]
    sources += [(path, theirs, rows, RESULT_FIELDS) for path, theirs, rows in splits.values()]
    for path, theirs, rows, fields in sources:
        had = read_csv(path)
        merged = merge_rows([(path, had), (theirs, rows)])  # a cell with other values: refused
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
    if skipped is not None:
        skipped.extend(only_src)
    return counts[0], counts[1], dict(zip(splits, counts[2:]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="the noise study's out-dir (holds its study.json)")
    ap.add_argument("--from", dest="src", required=True, help="the finished study's out-dir (holds results.csv)")
    ap.add_argument("--methods", nargs="+", default=["none", "word", "seq"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    a = ap.parse_args(argv)
    skipped = []
    (res, res_had), (cur, cur_had), extra = import_noise0(a.src, a.out_dir, a.methods, a.seeds, skipped)
    print(f"{res} result rows, {cur} curve rows imported into {a.out_dir} from {a.src} "
          f"({res_had} result rows, {cur_had} curve rows were there already)")
    for split, (n, had) in extra.items():
        print(f"{split}: {n} result rows imported into results.{split}.csv ({had} were there already)")
    for split in skipped:
        print(f"{split}: not imported; {a.out_dir} decodes no split {split} (its study.json records no "
              f"--extra-test {split})")


if __name__ == "__main__":
    sys.exit(run_tool("import_noise0", main)[0])
