"""The converged study's validation curves in one figure: greedy valid BLEU (left) and valid loss
(right) against updates, one line per model of the committed curve CSVs (columns ``model``,
``updates``, ``valid_bleu_greedy``, ``valid_loss``, as ``log_curve.py`` and section 7 write them),
each model's best BLEU marked (the ``checkpoint_best.pt`` the study decodes, ties to the later one).

    python docs/results/tools/plot_curves.py docs/results/converged_curves.png \
        docs/results/converged_teacher_d0.1_curve.csv docs/results/converged_ce_seed1_curve.csv ...
"""
import argparse
import csv
import logging
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

Point = Tuple[int, float, Optional[float]]  # updates, valid BLEU, valid loss


def read_curves(paths: Sequence[str]) -> Dict[str, List[Point]]:
    """{model: [(updates, bleu, loss)] in update order} over all files; refuses a file without the
    columns, a non-numeric cell, or one model's update given twice with other values."""
    curves: Dict[str, Dict[int, Point]] = OrderedDict()
    for path in paths:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = {"model", "updates", "valid_bleu_greedy"} - set(reader.fieldnames or ())
            if missing:
                raise SystemExit(f"plot_curves: {path}: missing column(s) {', '.join(sorted(missing))}; "
                                 f"pass a curve CSV of docs/results (log_curve.py's columns and a model column)")
            for line, row in enumerate(reader, start=2):
                try:
                    point = (int(row["updates"]), float(row["valid_bleu_greedy"]),
                             float(row["valid_loss"]) if row.get("valid_loss") else None)
                except ValueError as e:
                    raise SystemExit(f"plot_curves: {path}:{line}: {e}")
                seen = curves.setdefault(row["model"], {})
                if point[0] in seen and seen[point[0]] != point:
                    raise SystemExit(f"plot_curves: {path}:{line}: model {row['model']!r} has update {point[0]} "
                                     f"twice with other values")
                seen[point[0]] = point
    return OrderedDict((m, [pts[u] for u in sorted(pts)]) for m, pts in curves.items())


def best(curve: List[Point]) -> Point:
    """The point fairseq keeps as checkpoint_best (highest BLEU; a tie goes to the later update)."""
    from fairseq_kd.study.status import checkpoint_best

    return checkpoint_best(curve)


def plot(curves: Dict[str, List[Point]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model, pts in curves.items():
        ups = [p[0] for p in pts]
        line, = left.plot(ups, [p[1] for p in pts], label=model, lw=1.3)
        b = best(pts)
        left.plot([b[0]], [b[1]], marker="*", ms=11, color=line.get_color())
        losses = [(p[0], p[2]) for p in pts if p[2] is not None]
        if losses:
            right.plot(*zip(*losses), label=model, lw=1.3, color=line.get_color())
    left.set(xlabel="updates", ylabel="greedy valid BLEU (★ = checkpoint_best)", title="validation BLEU")
    left.set_ylim(bottom=max(0.0, min(p[1] for pts in curves.values() for p in pts[len(pts) // 4:]) - 2))
    lows = [min(p[2] for p in pts if p[2] is not None) for pts in curves.values() if any(p[2] is not None for p in pts)]
    if lows:  # every curve's plateau, not the first validations (KD criteria sit lower than CE: own scale)
        right.set_ylim(min(lows) - 0.05, max(lows) + 0.3)
    right.set(xlabel="updates", ylabel="valid loss (the criterion's, base 2)",
              title="validation loss (each criterion on its own scale)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the PNG to write")
    ap.add_argument("curves", nargs="+", help="curve CSVs")
    args = ap.parse_args(argv)
    curves = read_curves(args.curves)
    plot(curves, args.out)
    for model, pts in curves.items():
        b = best(pts)
        print(f"{model}: {len(pts)} validations to {pts[-1][0]} updates, best {b[1]:.2f} @{b[0]}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
