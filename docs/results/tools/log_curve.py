"""The validation curve of a fairseq-train log (a running or stopped run) as CSV rows.

Rows: the ``--set NAME=VALUE`` columns, then updates, valid_bleu_greedy (``--eval-bleu``), valid_loss,
one per validation (``fairseq_kd.study.logs.parse_train_log``, the parser the study uses for
curves.csv). For curves of cells that have not finished (a study writes curves.csv when a cell ends).

    python docs/results/tools/log_curve.py exp/studies/teacher_converged/cells/*/train.log \\
        --set model=teacher --set code_commit=8b07a14 > docs/results/teacher_converged_curve.csv
"""
import argparse
import csv
import sys

from fairseq_kd.study.logs import parse_train_log


def curve_rows(text: str, fixed: dict) -> list:
    return [{**fixed, "updates": n, "valid_bleu_greedy": p.get("valid_bleu", ""), "valid_loss": p["valid_loss"]}
            for n, p in parse_train_log(text)["curve"]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="log_curve.py", description=__doc__.split("\n\n")[0])
    p.add_argument("logs", nargs="+", help="fairseq-train logs (--log-format json); several: one curve, in order")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a constant column")
    args = p.parse_args(argv)
    fixed = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            p.error(f"--set {item!r}: write NAME=VALUE")
        fixed[name] = value
    text = "".join(open(path, encoding="utf-8", errors="replace").read() for path in args.logs)
    rows = curve_rows(text, fixed)
    if not rows:
        print(f"log_curve.py: no validation records in {', '.join(args.logs)}", file=sys.stderr)
        return 1
    w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
