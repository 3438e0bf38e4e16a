"""Merge study out-dirs that ran side by side (e.g. one seed each: two processes never share one
results.csv) into one for fairseq-kd-report: the union of their results / curves rows (a row found
in several sources kept once; a cell whose row differs between sources is refused: one seed measured
twice), every cell dir symlinked into DST/cells. The rows of every extra test split
(``results.test1.csv``, written by ``--extra-test test1=REF``) are merged the same way; a split that
some sources decoded and others did not is refused, naming the file that is missing; a results.SPLIT.csv left
in DST by an earlier merge, of a split none of these sources decoded, is removed (and said so).

The sources must be one study run in lanes (``merged_settings``): their study.json settings must be
equal, except what only some rows read: the teacher (its checkpoint, cache and distillation settings)
must agree among the sources with rows of a method that reads it (a CE lane run before the teacher
existed joins KD lanes), and a method's own ``--method-args`` among the sources with rows of it.
DST/study.json holds those settings (the teacher's, when a source used one).

Usage: python docs/results/tools/merge_studies.py DST SRC1 [SRC2 ...]
"""
import argparse
import glob
import json
import os
import sys

from fairseq_kd.cli import run_tool
from fairseq_kd.errors import KDInputError
from fairseq_kd import fileio, integrity
from fairseq_kd.integrity import merge_rows
from fairseq_kd.study.config import CURVE_FIELDS, RESULT_FIELDS
from fairseq_kd.study.methods import method_base
from fairseq_kd.study.records import read_csv, write_csv_atomic
from fairseq_kd.study.resume import same_setting, used_teacher

# settings only the rows of methods that read the teacher depend on (a teacher-free lane may lack them)
TEACHER_SETTINGS = ("teacher", "checkpoint_sha256", "teachers_sha256", "cache_topk", "cache_methods", "distill_args")


def _agree(a, b):
    """Two digest records ({name: sha256}) agree on every entry both hold."""
    a, b = a or {}, b or {}
    return all(a[k] == b[k] for k in set(a) & set(b))


def _same_teacher(a, b):
    """Two studies ran with one teacher: by content digest where both recorded one, else by path; and the
    teachers of a --teachers axis that both name have one digest."""
    da, db = ((s.get("checkpoint_sha256") or {}).get("teacher") for s in (a, b))
    return (da == db if da and db else a.get("teacher") == b.get("teacher")) and _agree(a.get("teachers_sha256"),
                                                                                      b.get("teachers_sha256"))


def merged_settings(srcs):
    """The study.json of the merge: every source's settings must be one study's (see the module doc);
    a difference is refused naming the setting and two sources."""
    studies = []
    for src in srcs:
        path = os.path.join(src, "study.json")
        if not os.path.isfile(path):
            raise KDInputError(f"{path}: not found; merge study out-dirs written by fairseq-kd-study")
        methods = {r["method"] for r in read_csv(os.path.join(src, "results.csv"))}
        studies.append((src, integrity.load_json(path, "restore it from the lane's out-dir"), methods))
    return one_study(studies)


def one_study(studies, hint="merge only lanes of one study (the same settings, other seeds or methods)"):
    """The settings of ``studies`` ([(name, study.json settings, methods of its rows)]) as one study's (the
    rules of the module doc); a difference is refused naming the setting, two of them and ``hint``."""

    def refuse(key, a, b):
        raise KDInputError(f"{a[0]} and {b[0]} were run with different {key} ({json.dumps(a[1].get(key))[:80]} vs "
                           f"{json.dumps(b[1].get(key))[:80]}): their rows are not one study's; {hint}")

    first = studies[0]
    for other in studies[1:]:
        for key in sorted(set(first[1]) | set(other[1])):
            if key in TEACHER_SETTINGS + ("method_args",):
                continue
            a, b = first[1].get(key), other[1].get(key)
            if key.endswith("_sha256") and isinstance(a or {}, dict) and isinstance(b or {}, dict):
                if not _agree(a, b):  # digests: what both recorded
                    refuse(key, first, other)
            elif not same_setting(key, a, b):
                refuse(key, first, other)
    with_teacher = [s for s in studies if any(used_teacher(m) for m in s[2])]
    for other in with_teacher[1:]:
        a, b = with_teacher[0], other
        if not _same_teacher(a[1], b[1]):
            refuse("teacher", a, b)
        for key in TEACHER_SETTINGS[3:]:
            if not same_setting(key, a[1].get(key), b[1].get(key)):
                refuse(key, a, b)
    args_of = {}  # method -> (source, its args): a method's flags, among the sources with its rows
    for src, settings, methods in studies:
        for m in sorted(methods | {method_base(m) for m in methods}):
            mine = (settings.get("method_args") or {}).get(m)
            if m in args_of and not same_setting("method_args", args_of[m][1], mine):
                raise KDInputError(f"{args_of[m][0]} and {src} ran method {m} with different --method-args "
                                   f"({args_of[m][1]!r} vs {mine!r}): their rows are not one method's; {hint}")
            args_of.setdefault(m, (src, mine))
    merged = dict(first[1])
    for key in {k for s in studies for k in s[1] if k.endswith("_sha256") and k not in TEACHER_SETTINGS}:
        merged[key] = {n: d for s in studies for n, d in (s[1].get(key) or {}).items()}
    if with_teacher:
        merged.update({k: with_teacher[0][1][k] for k in TEACHER_SETTINGS if k in with_teacher[0][1]})
        axis = {n: d for s in with_teacher for n, d in (s[1].get("teachers_sha256") or {}).items()}
        if axis:
            merged["teachers_sha256"] = axis
    merged["method_args"] = {**{k: v for s in studies for k, v in (s[1].get("method_args") or {}).items()},
                             **{m: a for m, (_, a) in args_of.items() if a is not None}}
    return merged


def split_files(d):
    """{split: its results file} of the extra test splits out-dir ``d`` has rows for (results.SPLIT.csv)."""
    found = sorted(glob.glob(os.path.join(glob.escape(d), "results.*.csv")))
    return {os.path.basename(p)[len("results."):-len(".csv")]: p for p in found}


def extra_splits(srcs):
    """The extra test splits every source decoded ({split: [its results file per source]}); a split
    found in some sources and not in others is refused: its merged table would lack their cells."""
    found = {}
    for src in srcs:
        for split, path in split_files(src).items():
            found.setdefault(split, {})[src] = path
    for split, paths in found.items():
        for src in srcs:
            if src not in paths:
                raise KDInputError(f"{os.path.join(src, f'results.{split}.csv')}: not found, while "
                                   f"{paths[next(iter(paths))]} exists; decode split {split!r} in that study too "
                                   f"(re-run it with --extra-test {split}=REF) or merge only studies that decoded it")
    return {split: [paths[src] for src in srcs] for split, paths in sorted(found.items())}


def merge_studies(dst, srcs):
    """Write DST/results.csv, results.SPLIT.csv for every extra split, curves.csv, study.json; a
    results.SPLIT.csv already in DST (an earlier merge's) of a split no source decoded is removed. Returns
    (result rows, curve rows, the files removed)."""
    for src in srcs:
        if not os.path.isfile(os.path.join(src, "results.csv")):
            raise KDInputError(f"{src}/results.csv: not found; pass finished study out-dirs as SRC")
    splits = extra_splits(srcs)
    settings = merged_settings(srcs)
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
    stale = [p for split, p in extra_splits([dst]).items() if split not in extra]
    for path in stale:  # an earlier merge's split that no source decoded: it would be read as this merge's
        os.remove(path[0])
    fileio.atomic_write_json(os.path.join(dst, "study.json"), settings)
    return res, cur, [p[0] for p in stale]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dst", help="the merged dir to write")
    ap.add_argument("srcs", nargs="+", metavar="SRC", help="study out-dirs (a cell in several must have one row)")
    a = ap.parse_args(argv)
    res, cur, removed = merge_studies(a.dst, a.srcs)
    for path in removed:
        print(f"removed {path}: an earlier merge's; no source decoded that split")
    print(len(res), "result rows,", len(cur), "curve rows in", a.dst)


if __name__ == "__main__":
    sys.exit(run_tool("merge_studies", main)[0])
