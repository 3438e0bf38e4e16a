"""fairseq-kd-report's plots (matplotlib, Agg backend) of a study's results and validation curves.

* ``bleu_vs_noise.png``: test BLEU against the noise level, one line per method;
* ``bleu_vs_params.png``: test BLEU against the student's parameter count (log x);
* ``bleu_vs_updates.png``: validation BLEU (``curves.csv``) against training updates, one line per method
  and learning rate; without a curves file, each cell's final (updates, test BLEU) point is used instead.

Seeds are averaged (error bars: their sample std); a coordinate not on a plot's axes that varies is
added to the line labels rather than averaged away. A line with fewer seeds than the plot's fullest
points somewhere says in its label how many it has where: "(n=3 at 100-700, 1 at 800-1500)" (a patience
curve whose other seeds stopped at 700, a missing cell), "(n=1)" for one seed throughout.
"""
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_kd import fileio
from fairseq_kd.report import METHOD_ORDER, mean_std
from fairseq_kd.study.config import method_base


def _varying(rows: List[Dict], keys: Sequence[str]) -> List[str]:
    return [k for k in keys if len({r[k] for r in rows}) > 1]


def _label(row: Dict, keys: Sequence[str]) -> str:
    parts = [row["method"]] + [f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                               for k in keys if k != "method"]
    return " ".join(parts)


def _points(rows: List[Dict], x: str, y: str, label_keys: Sequence[str]) -> Dict[str, Dict[float, List[float]]]:
    points: Dict[str, Dict[float, List[float]]] = OrderedDict()
    ordered = sorted(rows, key=lambda r: (METHOD_ORDER.get(method_base(r["method"]), 99), _label(r, label_keys)))
    for r in ordered:
        points.setdefault(_label(r, label_keys), {}).setdefault(r[x], []).append(r[y])
    return points


def series(rows: List[Dict], x: str, y: str, label_keys: Sequence[str]) -> Dict[str, List[Tuple[float, float, float]]]:
    """label -> sorted [(x, mean y, std y)], averaging rows with the same label and x (the seeds)."""
    return {lab: [(xv, *mean_std(ys)) for xv, ys in sorted(pts.items())]
            for lab, pts in _points(rows, x, y, label_keys).items()}


def seed_counts(rows: List[Dict], x: str, y: str, label_keys: Sequence[str]) -> Dict[str, List[Tuple[float, int]]]:
    """label -> sorted [(x, how many rows (seeds) its mean is over)], the points of ``series``."""
    return {lab: [(xv, len(ys)) for xv, ys in sorted(pts.items())]
            for lab, pts in _points(rows, x, y, label_keys).items()}


def count_note(counts: List[Tuple[float, int]], full: int) -> str:
    """"" where every point of a line has ``full`` seeds, else "(n=3 at 100-700, 1 at 800-1500)": the seed
    count of each run of points, so a mean over fewer seeds (std 0 over one) is not read as the full one."""
    if all(n == full for _, n in counts):
        return ""
    runs: List[List] = []
    for xv, n in counts:
        if runs and runs[-1][2] == n:
            runs[-1][1] = xv
        else:
            runs.append([xv, xv, n])
    if len(runs) == 1:
        return f"(n={runs[0][2]})"
    where = [f"{n} at {a:g}" if a == b else f"{n} at {a:g}-{b:g}" for a, b, n in runs]
    return f"(n={', '.join(where)})"


def _labelled(rows: List[Dict], x: str, y: str, label_keys: Sequence[str]):
    """``series`` with each label carrying its ``count_note`` against the plot's fullest point."""
    data, counts = series(rows, x, y, label_keys), seed_counts(rows, x, y, label_keys)
    full = max((n for c in counts.values() for _, n in c), default=0)
    return {" ".join(filter(None, (lab, count_note(counts[lab], full)))): pts for lab, pts in data.items()}


def _plot(path: str, data: Dict[str, List[Tuple[float, float, float]]], xlabel: str, ylabel: str, title: str,
          logx: bool = False) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, pts in data.items():
        xs, ms, ss = zip(*pts)
        ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with fileio.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def make_plots(rows: List[Dict], curves: Optional[List[Dict]], out_dir: str) -> List[str]:
    """Write the three PNGs into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [
        _plot(os.path.join(out_dir, "bleu_vs_noise.png"),
              _labelled(rows, "noise", "bleu", _varying(rows, ("arch", "decoding", "teacher", "lr", "search"))),
              "noise level (per-word rate)", "test BLEU", "BLEU vs noise"),
        _plot(os.path.join(out_dir, "bleu_vs_params.png"),
              _labelled(rows, "parameters", "bleu", _varying(rows, ("noise", "decoding", "teacher", "lr", "search"))),
              "student parameters", "test BLEU", "BLEU vs parameters", logx=True),
    ]
    if curves:
        keys = ["lr"] + _varying(curves, ("arch", "noise", "decoding", "teacher"))
        data, ylabel = _labelled(curves, "updates", "valid_bleu", keys), "validation BLEU (during training)"
    else:
        keys = ["lr"] + _varying(rows, ("arch", "noise", "decoding", "teacher", "search"))
        data, ylabel = _labelled(rows, "updates", "bleu", keys), "test BLEU at the end of training"
    paths.append(_plot(os.path.join(out_dir, "bleu_vs_updates.png"), data, "training updates", ylabel,
                       "BLEU vs updates"))
    return paths
