"""One figure for the noise study: each noise operation (alone, and all three together) side by side, BLEU of
none / word / seq vs the noise rate (seed mean, error bars = std over seeds), one panel per operation,
and a printed table of the KD gains over CE and the drop from rate 0 to the highest rate.

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
            out[g["method"]][g["noise"]] = (g["bleu_mean"], g["bleu_std"], g["n"])
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
    print("| operation | method | BLEU per rate (low to high) | Δ vs CE per rate | drop lowest -> highest rate |")
    print("|---|---|---|---|---:|")
    for ax, (name, path) in zip(axes, studies):
        st = seed_stats(path, a.search)
        for m in METHODS:
            zs = sorted(st[m])
            ax.errorbar(zs, [st[m][z][0] for z in zs], yerr=[st[m][z][1] for z in zs],
                        marker="o", capsize=3, label=LABEL[m])
            bleu = " / ".join(f"{st[m][z][0]:.2f}" for z in zs)
            gain = " / ".join(f"{st[m][z][0] - st['none'][z][0]:+.2f}" for z in zs) if m != "none" else ""
            drop = st[m][zs[-1]][0] - st[m][zs[0]][0]
            print(f"| {name} | {LABEL[m]} | {bleu} | {gain} | {drop:+.2f} |")
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
