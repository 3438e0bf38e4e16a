"""Study results -> a markdown table (mean and std over seeds, significance) and three plots.

Rows of ``results.csv`` (written by ``fairseq_kd.study``) that differ only in ``seed``
form one group; BLEU and chrF are summarised by their mean and the *sample* standard
deviation (n - 1 denominator; 0 for a single seed). Each KD group is compared with the
baseline (method ``none``) at the same coordinates (noise, arch, lr, test search): the
difference of seed-averaged BLEU with a paired bootstrap test on the test sentences
(``fairseq_kd.significance``: sacrebleu's resampling of sentences, 1,000 resamples, the 95%
percentile interval and the p-value of that same test); ``*`` marks an interval that excludes 0
(equivalently p <= 0.05). Plots (matplotlib, Agg backend):

* ``bleu_vs_noise.png``: test BLEU against the noise level, one line per method;
* ``bleu_vs_params.png``: test BLEU against the student's parameter count (log x);
* ``bleu_vs_updates.png``: validation BLEU (``curves.csv``, fairseq's ``--eval-bleu``
  during training) against training updates, one line per method and learning rate;
  without a curves file, each cell's final (updates, test BLEU) point is used instead.

When a coordinate not on a plot's axes varies (e.g. several archs on the noise plot),
it is added to the line labels rather than averaged away.
"""
import math
import os
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from fairseq_kd import fileio, integrity
from fairseq_kd.errors import KDInputError
from fairseq_kd.study.config import method_base  # variants sort by their base

REQUIRED = ("method", "noise", "arch", "parameters", "decoding", "lr", "seed", "bleu", "chrf")
OPTIONAL = {"search": "beam", "teacher": "-", "hyp": ""}  # columns older results files lack
GROUP = ("method", "noise", "arch", "parameters", "decoding", "teacher", "lr", "search")
BASELINE = "none"
PAIRED = ("noise", "arch", "lr", "search")  # coordinates a KD group shares with its baseline
METHOD_ORDER = {"none": 0, "word": 1, "seq": 2, "seq_online": 3, "hybrid": 4, "hybrid_online": 5, "onpolicy": 6}
NUMERIC = {"noise": float, "parameters": int, "lr": float, "seed": int, "bleu": float, "chrf": float,
           "updates": int, "valid_bleu": float, "train_time": float}


# every file fairseq-kd-report writes into its --out-dir (the output-path guard checks them)
OUTPUT_FILES = ("table.md", "summary.json", "bleu_vs_noise.png", "bleu_vs_params.png", "bleu_vs_updates.png")


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (n - 1); std is 0.0 for one value."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def load_csv(path: str, required: Sequence[str] = REQUIRED) -> List[Dict]:
    """Rows with typed numeric fields, checked by ``fairseq_kd.integrity`` (missing columns, cut rows,
    values outside their domain, a cell recorded twice, mixed sacrebleu signatures: one line naming the
    file and line; exact copies of a row counted once)."""
    if not os.path.isfile(path):
        raise KDInputError(f"{path}: no such file; pass the results.csv written by fairseq-kd-study")
    rows = integrity.read_table(path, "results file", required)[1]
    for row in rows:
        for key, typ in NUMERIC.items():
            if row.get(key) not in (None, ""):
                row[key] = typ(float(row[key])) if typ is int else typ(row[key])  # checked by integrity
        for key, default in OPTIONAL.items():
            row[key] = row.get(key) or default
    return rows


def _sort_key(key: Tuple) -> Tuple:
    method, noise, arch, params, decoding, teacher, lr, search = key
    return (search, noise, params, arch, lr, METHOD_ORDER.get(method_base(method), 99), method, decoding, teacher)


def summarize(rows: Iterable[Dict]) -> List[Dict]:
    """One entry per group of rows differing only in seed: n, seeds, mean/std BLEU and chrF."""
    groups: Dict[Tuple, List[Dict]] = OrderedDict()
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP), []).append(row)
    out = []
    for key in sorted(groups, key=_sort_key):
        members = groups[key]
        bleu_m, bleu_s = mean_std([r["bleu"] for r in members])
        chrf_m, chrf_s = mean_std([r["chrf"] for r in members])
        out.append({**dict(zip(GROUP, key)), "n": len(members), "seeds": sorted(r["seed"] for r in members),
                    "bleu_mean": bleu_m, "bleu_std": bleu_s, "chrf_mean": chrf_m, "chrf_std": chrf_s,
                    "hyps": {r["seed"]: r["hyp"] for r in members}})
    return out


def _read_hyps(results_dir: str, hyps: Dict[int, str]) -> Optional[List[List[str]]]:
    from fairseq_kd import fileio

    paths = [os.path.join(results_dir, h) for _, h in sorted(hyps.items())]
    if not paths or not all(h and os.path.isfile(p) for h, p in zip(hyps.values(), paths)):
        return None
    return [fileio.read_lines(p) for p in paths]


def test_references(results_dir: str, test_ref: Optional[str] = None) -> Optional[List[str]]:
    """Reference lines: ``test_ref``, else the ``test_ref`` recorded in the study's study.json
    (relative paths as the study saw them, else relative to the results folder); None if absent."""
    from fairseq_kd import fileio

    if test_ref:
        return fileio.read_lines(test_ref, "--test-ref")
    settings = os.path.join(results_dir, "study.json")
    if not os.path.isfile(settings):
        return None
    recorded = integrity.load_json(settings, "it is the study's settings file: re-run fairseq-kd-study to rewrite "
                                             "it, or pass --test-ref").get("test_ref")
    recorded = recorded if isinstance(recorded, str) else None
    for path in (recorded, os.path.join(results_dir, recorded or "")):
        if recorded and os.path.isfile(path):
            return fileio.read_lines(path)
    return None


def compare_to_baseline(summary: List[Dict], results_dir: str, refs: Optional[List[str]],
                        n_samples: int = 1000, baseline: str = BASELINE) -> List[Dict]:
    """Adds ``vs_baseline`` to every other group: the paired bootstrap against the ``baseline``
    method's group at the same coordinates (CE by default; any method, e.g. ``word`` to compare KD
    methods with each other), or ``None`` with ``vs_baseline_note`` saying why it is missing."""
    from fairseq_kd.errors import KDInputError
    from fairseq_kd.significance import paired_bootstrap

    baselines: Dict = {}
    for s in summary:
        if s["method"] == baseline:
            key = tuple(s[k] for k in PAIRED)
            if key in baselines:
                raise KDInputError(f"--baseline {baseline}: several groups at {dict(zip(PAIRED, key))} (other "
                                   f"decodings or teachers); pick a method with one group per coordinates")
            baselines[key] = s
    if not baselines:
        raise KDInputError(f"--baseline {baseline}: no such method in the results "
                           f"({', '.join(sorted({s['method'] for s in summary}))})")
    for s in summary:
        s["vs_baseline"] = None
        s["baseline"] = baseline
        if s["method"] == baseline:
            continue
        base = baselines.get(tuple(s[k] for k in PAIRED))
        if base is None:
            s["vs_baseline_note"] = "no baseline at these coordinates"
            continue
        base_hyps, sys_hyps = _read_hyps(results_dir, base["hyps"]), _read_hyps(results_dir, s["hyps"])
        if refs is None or base_hyps is None or sys_hyps is None:
            s["vs_baseline_note"] = "hypothesis or reference files not found"
            continue
        s["vs_baseline"] = paired_bootstrap(base_hyps, sys_hyps, refs, n_samples=n_samples)
    return summary


def _delta_cells(s: Dict) -> str:
    v = s.get("vs_baseline")
    if not v:
        return "| | " if s["method"] == s.get("baseline", BASELINE) else "| n/a | "
    from fairseq_kd.significance import format_p, significance_mark

    return (f"| {v['delta']:+.2f} [{v['ci_low']:+.2f}, {v['ci_high']:+.2f}] "
            f"| {format_p(v['p_value'], v['n_samples'])}{significance_mark(v['p_value'])} ")


def markdown_table(summary: List[Dict]) -> str:
    """The table: one line per group, BLEU and chrF as mean ± std (n seeds), and each KD
    group's BLEU difference to the baseline with its 95% interval and p-value (* the interval excludes 0)."""
    teachers = len({s["teacher"] for s in summary}) > 1
    baseline = next((s["baseline"] for s in summary if "baseline" in s), BASELINE)
    head = ("| method | noise | arch | params | decoding | " + ("teacher | " if teachers else "")
            + f"lr | search | seeds | BLEU | chrF | Δ BLEU vs {baseline} [95% CI] | p |")
    lines = [head, "|---|---:|---|---:|---|" + ("---|" if teachers else "") + "---:|---|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['method']} | {s['noise']:g} | {s['arch']} | {s['parameters']:,} | {s['decoding']} "
                     + (f"| {s['teacher']} " if teachers else "")
                     + f"| {s['lr']:g} | {s['search']} | {s['n']} | {s['bleu_mean']:.2f} ± {s['bleu_std']:.2f} "
                     f"| {s['chrf_mean']:.2f} ± {s['chrf_std']:.2f} " + _delta_cells(s) + "|")
    return "\n".join(lines) + "\n" + ("\nΔ: seed-averaged BLEU minus the baseline's at the same noise, arch, lr and "
                                       "search; paired bootstrap over test sentences (1,000 resamples of sacrebleu's "
                                       "seed): 95% percentile interval and its two-sided p; * where the interval "
                                       "excludes 0 (p <= 0.05).\n" if any(s.get("vs_baseline") for s in summary) else "")


# ---------------------------------------------------------------- plots


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
