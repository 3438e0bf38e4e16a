"""The validation curve of a fairseq-train log (a running or stopped run) as CSV rows.

Rows: the ``--set NAME=VALUE`` columns, then updates, valid_bleu_greedy (``--eval-bleu``), valid_loss,
one per validation (``fairseq_kd.study.logs.parse_train_log``, the parser the study uses for
curves.csv). For curves of cells that have not finished (a study writes curves.csv when a cell ends).
One cell's curve: several logs are the segments of one resumed training, in order (a study appends its
segments to the cell's one train.log); logs of different folders are refused, as is an update that two
logs record with different values (two trainings, not one).

    python docs/results/tools/log_curve.py exp/studies/teacher_converged/cells/*/train.log \\
        --set model=teacher --set code_commit=8b07a14 > docs/results/teacher_converged_curve.csv

(the teacher study has one cell; in a study of several, name the cell: ``cells/*_seed3/train.log``).
"""
import argparse
import csv
import os
import sys
from typing import Dict, List, Sequence, Tuple

from fairseq_kd.study.logs import parse_train_log

Point = Dict[str, float]  # valid_loss, and valid_bleu with --eval-bleu


def one_cell(paths: Sequence[str]) -> None:
    """Refuses logs of different folders: a curve is one cell's, and joining two cells' logs would mix runs."""
    first = paths[0]
    for path in paths[1:]:
        if os.path.dirname(os.path.realpath(path)) != os.path.dirname(os.path.realpath(first)):
            raise SystemExit(f"log_curve.py: {first} and {path} are in different folders (cells); pass the "
                             f"log(s) of one cell, e.g. cells/<cell>/train.log")


def joined_curve(curves: Sequence[Tuple[str, List[Tuple[int, Point]]]]) -> List[Tuple[int, Point]]:
    """One curve from the segments' curves ((log, curve) in order); a validation repeated by a resumed
    segment must repeat its values, else the logs are of two trainings and the update is refused."""
    seen: Dict[int, Tuple[str, Point]] = {}
    for path, curve in curves:
        for n, point in curve:
            if n in seen and seen[n][1] != point:
                raise SystemExit(f"log_curve.py: update {n}: {seen[n][0]} has {seen[n][1]} but {path} has {point}; "
                                 f"these logs are not segments of one training: pass one cell's logs")
            seen[n] = (path, point)
    return [(n, seen[n][1]) for n in sorted(seen)]


def curve_rows(curve: Sequence[Tuple[int, Point]], fixed: dict) -> list:
    return [{**fixed, "updates": n, "valid_bleu_greedy": p.get("valid_bleu", ""), "valid_loss": p["valid_loss"]}
            for n, p in curve]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="log_curve.py", description=__doc__.split("\n\n")[0])
    p.add_argument("logs", nargs="+", help="fairseq-train logs (--log-format json) of one cell; several: the "
                                           "segments of one resumed training, in order")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a constant column")
    args = p.parse_args(argv)
    fixed = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            p.error(f"--set {item!r}: write NAME=VALUE")
        fixed[name] = value
    one_cell(args.logs)
    curves = []
    for path in args.logs:
        with open(path, encoding="utf-8", errors="replace") as f:
            curves.append((path, parse_train_log(f.read())["curve"]))
    rows = curve_rows(joined_curve(curves), fixed)
    if not rows:
        print(f"log_curve.py: no validation records in {', '.join(args.logs)}", file=sys.stderr)
        return 1
    w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
