"""fairseq-kd-report's plots (matplotlib, Agg backend) of a study's results and validation curves.

* ``bleu_vs_noise.png``: test BLEU against the noise level, one line per method;
* ``bleu_vs_params.png``: test BLEU against the student's parameter count (log x);
* ``bleu_vs_updates.png``: validation BLEU (``curves.csv``) against training updates, one line per method
  and learning rate; without a curves file, each cell's final (updates, test BLEU) point is used instead.

Seeds are averaged (error bars: their sample std); a coordinate not on a plot's axes that varies is
added to the line labels rather than averaged away.
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


def series(rows: List[Dict], x: str, y: str, label_keys: Sequence[str]) -> Dict[str, List[Tuple[float, float, float]]]:
    """label -> sorted [(x, mean y, std y)], averaging rows with the same label and x (the seeds)."""
    points: Dict[str, Dict[float, List[float]]] = OrderedDict()
    ordered = sorted(rows, key=lambda r: (METHOD_ORDER.get(method_base(r["method"]), 99), _label(r, label_keys)))
    for r in ordered:
        points.setdefault(_label(r, label_keys), {}).setdefault(r[x], []).append(r[y])
    return {lab: [(xv, *mean_std(ys)) for xv, ys in sorted(pts.items())] for lab, pts in points.items()}


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
              series(rows, "noise", "bleu", _varying(rows, ("arch", "decoding", "teacher", "lr", "search"))),
              "noise level (per-word rate)", "test BLEU", "BLEU vs noise"),
        _plot(os.path.join(out_dir, "bleu_vs_params.png"),
              series(rows, "parameters", "bleu", _varying(rows, ("noise", "decoding", "teacher", "lr", "search"))),
              "student parameters", "test BLEU", "BLEU vs parameters", logx=True),
    ]
    if curves:
        keys = ["lr"] + _varying(curves, ("arch", "noise", "decoding", "teacher"))
        data, ylabel = series(curves, "updates", "valid_bleu", keys), "validation BLEU (during training)"
    else:
        keys = ["lr"] + _varying(rows, ("arch", "noise", "decoding", "teacher", "search"))
        data, ylabel = series(rows, "updates", "bleu", keys), "test BLEU at the end of training"
    paths.append(_plot(os.path.join(out_dir, "bleu_vs_updates.png"), data, "training updates", ylabel,
                       "BLEU vs updates"))
    return paths
