"""Validation curves averaged over seeds: a method's mean greedy valid BLEU at each validation (the
seeds that reached it), differences between methods, and a figure of the means with each method's
seed range. For "when does a lead close": the committed curve CSVs of docs/results (``log_curve.py``'s
columns: ``updates``, ``valid_bleu_greedy``), one file per seed.

    python docs/results/tools/curve_means.py "CE=docs/results/converged_ce_seed*_curve.csv" \\
        "word=docs/results/converged_word_seed*_curve.csv" "seq=docs/results/converged_seq_seed*_curve.csv" \\
        --diff seq-word --diff word-CE --every 500 --png docs/results/converged_1m_mean_curves.png

A row is printed for every ``--every``-th update up to the last update every seed of every method
reached (later points mix fewer seeds; ``--until`` goes further, each cell saying how many seeds it
averages). Markdown on stdout; ``--json`` writes the numbers too.
"""
import argparse
import csv
import glob
import json
import os
import statistics
import sys
from typing import Dict, List, Optional, Sequence, Tuple

Curve = Dict[int, float]  # updates -> greedy valid BLEU


def read_curve(path: str) -> Curve:
    """One seed's curve; refuses a file without the columns or with a non-numeric cell, naming it."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"updates", "valid_bleu_greedy"} - set(reader.fieldnames or ())
        if missing:
            raise SystemExit(f"curve_means: {path}: missing column(s) {', '.join(sorted(missing))}; pass a curve "
                             f"CSV of docs/results (log_curve.py's columns)")
        out: Curve = {}
        for line, row in enumerate(reader, start=2):
            if not row["valid_bleu_greedy"]:
                continue  # a validation without BLEU (loss only)
            try:
                out[int(row["updates"])] = float(row["valid_bleu_greedy"])
            except ValueError as e:
                raise SystemExit(f"curve_means: {path}:{line}: {e}")
    if not out:
        raise SystemExit(f"curve_means: {path}: no validation BLEU")
    return out


def parse_group(spec: str) -> Tuple[str, List[str]]:
    """``NAME=GLOB[,GLOB...]`` -> (name, the files, sorted); refuses a pattern that matches nothing, and a
    file that two patterns (or two spellings of one path) both match: it would count as two seeds."""
    name, sep, patterns = spec.partition("=")
    if not (sep and name and patterns):
        raise SystemExit(f"curve_means: {spec!r}: write NAME=GLOB, e.g. 'CE=docs/results/converged_ce_seed*_curve.csv'")
    files: List[str] = []
    seen: Dict[str, str] = {}  # resolved path -> the name it was first matched as
    for pattern in patterns.split(","):
        found = sorted(glob.glob(pattern))
        if not found:
            raise SystemExit(f"curve_means: {name}: {pattern!r} matches no file")
        for path in found:
            real = os.path.realpath(path)
            if real in seen:
                raise SystemExit(f"curve_means: {name}: {path} is named twice (also as {seen[real]}); "
                                 f"give each seed's curve once per method")
            seen[real] = path
        files += found
    return name, files


def mean_at(curves: Sequence[Curve], update: int) -> Tuple[Optional[float], int]:
    """(mean over the seeds that have ``update``, how many); (None, 0) when none has it."""
    values = [c[update] for c in curves if update in c]
    return (statistics.mean(values), len(values)) if values else (None, 0)


def table(groups: Dict[str, List[Curve]], diffs: Sequence[Tuple[str, str]], every: int,
          until: Optional[int] = None) -> List[Dict]:
    """Rows {updates, NAME: (mean, n), "A-B": difference of the means or None}."""
    common = min(max(c) for curves in groups.values() for c in curves)  # every seed of every group got here
    last = until or common
    points = sorted({u for curves in groups.values() for c in curves for u in c if u <= last and u % every == 0})
    rows = []
    for u in points:
        row = {"updates": u, **{name: mean_at(curves, u) for name, curves in groups.items()}}
        for a, b in diffs:
            row[f"{a}-{b}"] = (row[a][0] - row[b][0]) if row[a][0] is not None and row[b][0] is not None else None
        rows.append(row)
    return rows


def markdown(rows: List[Dict], names: Sequence[str], diffs: Sequence[Tuple[str, str]], seeds: Dict[str, int]) -> str:
    plural = {n: "seed" if seeds[n] == 1 else "seeds" for n in names}
    head = ["updates"] + [f"{n} ({seeds[n]} {plural[n]})" for n in names] + [f"{a} - {b}" for a, b in diffs]
    out = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in rows:
        cells = [f"{r['updates']:,}"]
        for n in names:
            mean, k = r[n]
            cells.append("" if mean is None else f"{mean:.2f}" + ("" if k == seeds[n] else f" ({k})"))
        cells += ["" if r[f"{a}-{b}"] is None else f"{r[f'{a}-{b}']:+.2f}" for a, b in diffs]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(png: str, groups: Dict[str, List[Curve]], until: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, curves in groups.items():
        xs = sorted({u for c in curves for u in c if u <= until})
        means = [mean_at(curves, u)[0] for u in xs]
        lo = [min(c[u] for c in curves if u in c) for u in xs]
        hi = [max(c[u] for c in curves if u in c) for u in xs]
        line, = ax.plot(xs, means, label=f"{name}: mean of its {len(curves)} seeds while they train")
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("updates")
    ax.set_ylabel("greedy valid BLEU (band: the seeds' range)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    top = max(c[u] for curves in groups.values() for c in curves for u in c if u <= until)
    ax.set_ylim(top - 15, top + 1)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="curve_means.py", description=__doc__.split("\n\n")[0])
    p.add_argument("groups", nargs="+", metavar="NAME=GLOB", help="a method's per-seed curve CSVs")
    p.add_argument("--diff", action="append", default=[], metavar="A-B", help="a column of mean(A) - mean(B)")
    p.add_argument("--every", type=int, default=500, help="a row every N updates (multiples of N)")
    p.add_argument("--until", type=int, help="last update (default: the last every seed of every method reached)")
    p.add_argument("--png", help="also a figure: each method's mean curve and its seeds' range")
    p.add_argument("--json", help="also the rows as JSON")
    args = p.parse_args(argv)
    if args.every <= 0:
        p.error("--every must be positive")
    groups: Dict[str, List[Curve]] = {}
    for spec in args.groups:
        name, files = parse_group(spec)
        if name in groups:
            p.error(f"method {name!r} given twice")
        groups[name] = [read_curve(f) for f in files]
    diffs = []
    for spec in args.diff:
        a, sep, b = spec.partition("-")
        if not sep or a not in groups or b not in groups:
            p.error(f"--diff {spec!r}: write A-B with A and B among {', '.join(groups)}")
        diffs.append((a, b))
    rows = table(groups, diffs, args.every, args.until)
    print(markdown(rows, list(groups), diffs, {n: len(c) for n, c in groups.items()}))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    if args.png:
        plot(args.png, groups, args.until or max(r["updates"] for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
