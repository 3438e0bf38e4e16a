"""Compare two study out-dirs cell by cell: B - A for every cell key present in both (same method,
noise, arch, decoding, lr, teacher, search), seeds paired by seed number. Prints a markdown table:
mean ± std of each side, each seed's difference, and the paired bootstrap of the seed-averaged
difference over the test sentences (``fairseq_kd.significance.paired_bootstrap``, seeds pooled).
``--split test1`` compares the rows of ``results.test1.csv`` (an ``--extra-test`` split).

Usage: python docs/results/tools/compare_studies.py A B --test-ref REF [--split SPLIT] [--json OUT]
"""
import argparse
import json
import os
import statistics
import sys

from fairseq_kd.cli import run_tool
from fairseq_kd.errors import KDInputError
from fairseq_kd.significance import format_p, paired_bootstrap, significance_mark
from fairseq_kd.study.records import read_csv

GROUP = ("method", "noise", "arch", "decoding", "lr", "teacher", "search")


def groups(study: str, split: str):
    """{group key: {seed: row}} of one study's results file for ``split``."""
    name = "results.csv" if split == "test" else f"results.{split}.csv"
    path = os.path.join(study, name)
    if not os.path.isfile(path):
        raise KDInputError(f"{path}: not found; pass a study out-dir that decoded split {split!r}")
    out = {}
    for r in read_csv(path):
        out.setdefault(tuple(r.get(k, "") for k in GROUP), {})[r["seed"]] = r
    return out


def hyps(study: str, row) -> list:
    with open(os.path.join(study, row["hyp"]), encoding="utf-8") as f:
        return f.read().splitlines()


def compare(a: str, b: str, refs, split: str = "test", samples: int = 1000):
    ga, gb = groups(a, split), groups(b, split)
    out = []
    for key in [k for k in ga if k in gb]:
        seeds = sorted(set(ga[key]) & set(gb[key]), key=int)
        if not seeds:
            continue
        sa = [float(ga[key][s]["bleu"]) for s in seeds]
        sb = [float(gb[key][s]["bleu"]) for s in seeds]
        boot = paired_bootstrap([hyps(a, ga[key][s]) for s in seeds], [hyps(b, gb[key][s]) for s in seeds], refs,
                                n_samples=samples)
        out.append({**dict(zip(GROUP, key)), "seeds": seeds, "bleu_a": sa, "bleu_b": sb,
                    "delta_per_seed": [round(y - x, 2) for x, y in zip(sa, sb)], "bootstrap": boot})
    return out


def markdown(rows, a: str, b: str) -> str:
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    lines = [f"| method | arch | search | seeds | A: {a} | B: {b} | B - A per seed | B - A [95% CI], seeds pooled | p |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        v = r["bootstrap"]
        lines.append(f"| {r['method']} | {r['arch']} | {r['search']} | {len(r['seeds'])} | "
                     f"{statistics.mean(r['bleu_a']):.2f} ± {sd(r['bleu_a']):.2f} | "
                     f"{statistics.mean(r['bleu_b']):.2f} ± {sd(r['bleu_b']):.2f} | "
                     f"{' / '.join(f'{d:+.2f}' for d in r['delta_per_seed'])} | "
                     f"{v['delta']:+.2f} [{v['ci_low']:+.2f}, {v['ci_high']:+.2f}] | "
                     f"{format_p(v['p_value'], v['n_samples'])}{significance_mark(v['p_value'])} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="study out-dir A (the reference side)")
    ap.add_argument("b", help="study out-dir B")
    ap.add_argument("--test-ref", required=True, help="raw reference of the compared split")
    ap.add_argument("--split", default="test", help="test (results.csv) or an --extra-test split")
    ap.add_argument("--bootstrap-samples", type=int, default=1000)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    with open(args.test_ref, encoding="utf-8") as f:
        refs = f.read().splitlines()
    rows = compare(args.a, args.b, refs, args.split, args.bootstrap_samples)
    if not rows:
        raise KDInputError(f"{args.a} and {args.b} share no cell with a common seed on split {args.split!r}")
    print(markdown(rows, args.a, args.b))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("compare_studies", main)[0])
