"""One figure for the noise study: each noise operation (alone, and all three together) side by side, BLEU of
none / word / seq vs the noise rate (seed mean, error bars = std over seeds), one panel per operation,
and a printed table of the KD gains over CE and the drop from rate 0 to the highest rate.

Every point shows how many seeds it is over: a point with fewer seeds than the table's fullest points is
printed "mean (k)" and annotated n=k in the figure, a rate a method lacks is "n/a"; a Δ vs CE and a drop are
taken on the seeds both of their points have (marked (k) likewise); a method without the panel's lowest or
highest rate gets no drop ("n/a (no 0.3)"), as a shorter drop would not be comparable with the others'.

Usage: python docs/results/tools/plot_noise_ops.py OUT.png [--search beam5] NAME=results.csv [NAME=results.csv ...]
e.g.   python docs/results/tools/plot_noise_ops.py docs/results/study_noise_ops_beam5.png \
         deletion=docs/results/study_noise_deletion.csv substitution=docs/results/study_noise_substitution.csv \
         swap=docs/results/study_noise_swap.csv all=docs/results/study_noise_all.csv
"""
import argparse
import logging
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fairseq_kd import report  # noqa: E402  (seed means and stds: the report's own summarize)

logging.getLogger("matplotlib").setLevel(logging.WARNING)  # importing fairseq leaves the root logger at DEBUG

METHODS = ("none", "word", "seq")
LABEL = {"none": "CE", "word": "word-KD", "seq": "seq-KD"}


def seed_stats(path, search):
    """{method: {noise: (mean, std, n)}} of the test BLEU over seeds, for one search. Refuses a second group
    for one (method, noise) (another decoding, arch, lr or teacher): one point per rate would silently be
    the last of them."""
    out = defaultdict(dict)
    first = {}  # (method, noise) -> the group that holds that point
    for g in report.summarize(report.load_csv(path)):
        if g["search"] == search and g["method"] in METHODS:
            key = (g["method"], g["noise"])
            if key in first:
                raise SystemExit(f"plot_noise_ops: {path}: several groups for method {key[0]} at noise {key[1]:g} "
                                 f"({differing(first[key], g)}); pass a results CSV whose rows differ only in "
                                 f"method, noise, seed and search")
            first[key] = g
            out[g["method"]][g["noise"]] = (g["bleu_mean"], g["bleu_std"], g["n"], g["bleu_by_seed"])
    if not out:
        raise SystemExit(f"plot_noise_ops: {path}: no rows of method {', '.join(METHODS)} at search {search}")
    return out


def paired(a, b):
    """(mean of b - a over the seeds both points have, how many); None where they share no seed."""
    seeds = sorted(set(a[3]) & set(b[3]))
    if not seeds:
        return None
    mean = lambda p: report.seed_mean({"bleu_by_seed": p[3]}, seeds)  # noqa: E731
    return mean(b) - mean(a), len(seeds)


def mark(k, full):
    return f" ({k})" if k < full else ""


def rows(name, st, full):
    """The table's rows of one operation: seed counts below ``full`` marked "(k)", missing points n/a."""
    zs = sorted(set().union(*(st[m] for m in METHODS)))
    out = []
    for m in METHODS:
        pts = st[m]
        bleu = " / ".join(f"{pts[z][0]:.2f}{mark(pts[z][2], full)}" if z in pts else "n/a" for z in zs)
        gain = ""
        if m != "none":
            ds = [paired(st["none"][z], pts[z]) if z in pts and z in st["none"] else None for z in zs]
            gain = " / ".join(f"{d[0]:+.2f}{mark(d[1], full)}" if d else "n/a" for d in ds)
        lacks = [z for z in (zs[0], zs[-1]) if z not in pts]
        d = None if lacks else paired(pts[zs[0]], pts[zs[-1]])
        drop = (f"n/a (no {' or '.join(f'{z:g}' for z in lacks)})" if lacks else
                f"{d[0]:+.2f}{mark(d[1], full)}" if d else "n/a (no seed at both rates)")
        out.append(f"| {name} | {LABEL[m]} | {bleu} | {gain} | {drop} |")
    return out


def differing(a, b):
    """'decoding beam / greedy, lr ...': the report's group coordinates in which two groups differ."""
    return ", ".join(f"{k} {a[k]} / {b[k]}" for k in report.GROUP if a[k] != b[k])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("studies", nargs="+", metavar="NAME=CSV")
    ap.add_argument("--search", default="beam5")
    a = ap.parse_args(argv)
    studies = [s.split("=", 1) for s in a.studies]
    fig, axes = plt.subplots(1, len(studies), figsize=(3.6 * len(studies), 3.4), sharey=True)
    axes = [axes] if len(studies) == 1 else axes
    stats = [(name, seed_stats(path, a.search)) for name, path in studies]
    full = max(p[2] for _, st in stats for m in METHODS for p in st[m].values())
    table = [r for name, st in stats for r in rows(name, st, full)]
    print("| operation | method | BLEU per rate (low to high) | Δ vs CE per rate | drop lowest -> highest rate |")
    print("|---|---|---|---|---:|")
    print("\n".join(table))
    marked = any(p[2] < full for _, st in stats for m in METHODS for p in st[m].values()) or any(
        len(st[m]) < len(set().union(*(st[x] for x in METHODS))) for _, st in stats for m in METHODS)
    print(f"\n({full} seeds per point" + (" unless marked (k): over k seeds only; n/a: no such point; Δ and drop "
                                           "on the seeds both points have)" if marked else ")"))
    for ax, (name, st) in zip(axes, stats):
        for m in METHODS:
            zs = sorted(st[m])
            ax.errorbar(zs, [st[m][z][0] for z in zs], yerr=[st[m][z][1] for z in zs],
                        marker="o", capsize=3, label=LABEL[m])
            for z in zs:
                if st[m][z][2] < full:
                    ax.annotate(f"n={st[m][z][2]}", (z, st[m][z][0]), textcoords="offset points", xytext=(4, 4),
                                fontsize=7)
        ax.set_title(f"{name} ({a.search})")
        ax.set_xlabel("noise rate")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test BLEU (seed mean ± std)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
