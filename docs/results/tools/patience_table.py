"""Where each patience would have stopped a validation curve, and what it would have kept.

fairseq's rule (``fairseq_cli.train.should_stop_early``): a validation that is strictly better than
the best so far resets the count; any other adds one; training stops when the count reaches the
patience. The kept checkpoint is the best validation up to the stop (``checkpoint_best.pt``, ties
going to the later one). For every curve of the input CSVs and every ``--patience`` this prints the
stop (or "-" when the curve ends first), the kept value, and how far it is below the best of the
whole curve: a patience whose stop loses BLEU on a curve that went on is too short.

    python docs/results/tools/patience_table.py docs/results/converged_ce_curves.csv --patience 2 4 6 8
"""
import argparse
import csv
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_kd.study.status import checkpoint_best, patience_runs  # fairseq's rule, as fairseq-kd-status replays it

Curve = List[Tuple[int, float]]  # (updates, metric), in update order


def stop_point(curve: Curve, patience: int, maximize: bool = True) -> Optional[int]:
    """Index of the validation at which fairseq stops (None: the curve ends before)."""
    return next((k for k, (_, runs) in enumerate(patience_runs(curve, maximize)) if runs >= patience), None)


def kept(curve: Curve, upto: int, maximize: bool = True) -> Tuple[int, float]:
    """(updates, value) of the best validation among the first ``upto + 1`` (ties: the later)."""
    return checkpoint_best(curve[:upto + 1], maximize)


def read_curves(paths: Sequence[str], metric: str) -> Dict[str, Curve]:
    """Curves keyed by the row's other columns (everything but updates, valid_* and code_commit)."""
    curves: Dict[str, Curve] = {}
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and metric not in rows[0]:
            sys.exit(f"{path}: no column {metric!r} (columns: {', '.join(rows[0])}); pass --metric")
        for r in rows:
            if r.get(metric) in (None, ""):
                continue
            key = " ".join(f"{k}={v}" for k, v in r.items()
                           if k != "updates" and not k.startswith("valid_") and k != "code_commit")
            curves.setdefault(key, []).append((int(float(r["updates"])), float(r[metric])))
    return {k: sorted(c) for k, c in curves.items()}


def table(curves: Dict[str, Curve], patiences: Sequence[int], maximize: bool = True) -> str:
    lines = ["| curve | validations (last update) | best of the curve | patience | stops at | kept | below the best |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, curve in curves.items():
        bn, bv = kept(curve, len(curve) - 1, maximize)
        for p in patiences:
            k = stop_point(curve, p, maximize)
            if k is None:
                stop, keep, gap = "- (curve ends)", "", ""
            else:
                n, v = kept(curve, k, maximize)
                stop, keep, gap = f"{curve[k][0]:,}", f"{v:.2f} @{n:,}", f"{abs(bv - v):.2f}"
            lines.append(f"| {key} | {len(curve)} ({curve[-1][0]:,}) | {bv:.2f} @{bn:,} | {p} | {stop} | {keep} | {gap} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="patience_table.py", description=__doc__.split("\n\n")[0])
    p.add_argument("curves", nargs="+", help="curve CSVs (columns: updates, the metric, grouping columns)")
    p.add_argument("--metric", default="valid_bleu_greedy", help="metric column (valid_bleu in a study's curves.csv)")
    p.add_argument("--patience", nargs="+", type=int, default=[2, 4, 6, 8], help="patiences to simulate")
    p.add_argument("--minimize", action="store_true", help="lower is better (a loss)")
    args = p.parse_args(argv)
    print(table(read_curves(args.curves, args.metric), args.patience, maximize=not args.minimize))
    return 0


if __name__ == "__main__":
    sys.exit(main())
