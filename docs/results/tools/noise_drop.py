"""How much each method loses to source noise, and whether one loses less than another, with seed spread
and a paired bootstrap (arXiv 2312.08585's question: does sequence-level KD degrade less than word-level KD?).

Every method of the ``--noisy`` studies at ``--noise R`` is set against its clean counterpart in the
``--clean`` studies: the same method at noise 0, or the one ``--clean-of`` names (default
``word_tnoisy=word seq_tnoisy=seq``: at noise 0 the teacher reads the clean source either way), at the same
arch, lr and test search. Per seed, the drop noisy - clean (seeds paired by number: a seed gives a method the
same initial weights at every noise level; only seeds on both sides count); the drop of the seed-averaged
scores with its 95% interval; and for every pair of methods A, B (``--pairs A:B``, default every pair) the
difference of their drops, (B_noisy - B_clean) - (A_noisy - A_clean): positive when B loses less. Each
interval resamples the test sentences once for all the systems it compares
(``fairseq_kd.significance.contrast_bootstrap``); ``*`` exactly where it excludes 0. Test sentences vary,
seeds do not: the per-seed columns show the seed spread. A pair is taken on the seeds both methods have;
where those are not both methods' seeds of the methods table, a note under the pair table names them.

Usage: python docs/results/tools/noise_drop.py --clean DIR [DIR ...] --noisy DIR [DIR ...] --noise 0.3
       [--search beam5] [--clean-of M=CLEAN_M ...] [--pairs A:B ...] [--split test1 --test-ref REF] [--json OUT]
"""
import argparse
import itertools
import json
import os
import sys

from fairseq_kd import fileio
from fairseq_kd.cli import run_tool
from fairseq_kd.errors import KDInputError
from fairseq_kd.report import METHOD_ORDER, check_scored_against, mean_std, test_references
from fairseq_kd.significance import contrast_bootstrap, format_p, significance_mark
from fairseq_kd.study.config import method_base
from fairseq_kd.study.records import read_csv

CLEAN_OF = {"word_tnoisy": "word", "seq_tnoisy": "seq"}
AT = ("arch", "lr", "search")  # the coordinates a noisy cell shares with its clean counterpart


def load(dirs, split):
    """{(method, noise, arch, lr, search): {seed: (study dir, row)}} over ``dirs``; one seed of one
    method found twice (another decoding, teacher or study) is refused: which one to compare is unclear."""
    name = "results.csv" if split == "test" else f"results.{split}.csv"
    out, where = {}, {}
    for d in dirs:
        path = os.path.join(d, name)
        if not os.path.isfile(path):
            raise KDInputError(f"{path}: not found; pass study out-dirs that decoded split {split!r}")
        for r in read_csv(path):
            key = (r["method"], float(r["noise"]), r["arch"], r["lr"], r["search"])
            seed = int(r["seed"])
            if seed in out.setdefault(key, {}):
                raise KDInputError(f"{path}: {r['method']} seed {seed} at noise {r['noise']}, {r['search']} is also "
                                   f"in {where[key, seed]}; pass each cell once (one decoding and teacher per method)")
            out[key][seed], where[key, seed] = (d, r), path
    return out


def order(method):
    return METHOD_ORDER.get(method_base(method), 99), method


def drops(clean, noisy, noise, search, clean_of, pairs, refs, n_samples=1000):
    """(per-method entries, per-pair entries) as described in the module docstring."""
    hyp_cache = {}

    def hyps(d, row):
        path = os.path.join(d, row["hyp"])
        if path not in hyp_cache:
            hyp_cache[path] = fileio.read_lines(path, "a hypothesis file of the results")
        return hyp_cache[path]

    methods = {}
    for (m, nz, arch, lr, s), seeds in sorted(noisy.items(), key=lambda kv: (*order(clean_of.get(kv[0][0], kv[0][0])),
                                                                            kv[0][0])):  # a variant beside its base
        if nz != noise or s != search:
            continue
        c = clean_of.get(m, m)
        base = clean.get((c, 0.0, arch, lr, s))
        if base is None:
            raise KDInputError(f"{m} at noise {noise} ({arch}, lr {lr}, {s}) has no clean counterpart: no {c} "
                               f"cell at noise 0 in --clean; pass the study that holds it, or --clean-of {m}=METHOD")
        both = sorted(set(seeds) & set(base))
        if not both:
            raise KDInputError(f"{m} at noise {noise}: seeds {sorted(seeds)}, its clean {c}: seeds {sorted(base)}; "
                               f"no seed on both sides")
        if m in methods:
            raise KDInputError(f"{m} at noise {noise}, {s}: found at several archs or lrs; pass one study grid")
        clean_h = [hyps(*base[k]) for k in both]
        noisy_h = [hyps(*seeds[k]) for k in both]
        boot = contrast_bootstrap([(-1.0, clean_h), (1.0, noisy_h)], refs, n_samples=n_samples)
        for term, rows, side in zip(boot["terms"], ([base[k][1] for k in both], [seeds[k][1] for k in both]),
                                    (f"{c} at noise 0", f"{m} at noise {noise}")):  # the reference is theirs
            check_scored_against(term["score"], sum(float(r["bleu"]) for r in rows) / len(rows), f"{side} ({s})")
        methods[m] = {"method": m, "clean_method": c, "arch": arch, "lr": lr, "search": s, "seeds": both,
                      "clean_bleu": [float(base[k][1]["bleu"]) for k in both],
                      "noisy_bleu": [float(seeds[k][1]["bleu"]) for k in both],
                      "drop_per_seed": [float(seeds[k][1]["bleu"]) - float(base[k][1]["bleu"]) for k in both],
                      "drop": boot, "_clean": clean_h, "_noisy": noisy_h}
    if not methods:
        raise KDInputError(f"no cell at noise {noise} with search {search} in --noisy")
    wanted = pairs or list(itertools.combinations(methods, 2))
    out_pairs = []
    for a, b in wanted:
        for m in (a, b):
            if m not in methods:
                raise KDInputError(f"--pairs {a}:{b}: {m} has no cell at noise {noise} ({', '.join(methods)})")
        ma, mb = methods[a], methods[b]
        common = sorted(set(ma["seeds"]) & set(mb["seeds"]))  # a seed is one initialisation for every method
        if not common:
            raise KDInputError(f"--pairs {a}:{b}: {a} has seeds {ma['seeds']}, {b} {mb['seeds']}: no seed on both sides")
        pick = lambda m, part: [m[part][m["seeds"].index(k)] for k in common]  # noqa: E731
        boot = contrast_bootstrap([(1.0, pick(ma, "_clean")), (-1.0, pick(ma, "_noisy")), (-1.0, pick(mb, "_clean")),
                                   (1.0, pick(mb, "_noisy"))], refs, n_samples=n_samples)
        score = [t["score"] for t in boot["terms"]]  # seed-averaged BLEU of a clean, a noisy, b clean, b noisy
        out_pairs.append({"a": a, "b": b, "seeds": common, "drop_a": score[1] - score[0],
                          "drop_b": score[3] - score[2], "b_minus_a": boot})
    return [{k: v for k, v in e.items() if not k.startswith("_")} for e in methods.values()], out_pairs


def _ms(values):
    return "{:.2f} ± {:.2f}".format(*mean_std(values))


def _ci(boot):
    return (f"{boot['delta']:+.2f} [{boot['ci_low']:+.2f}, {boot['ci_high']:+.2f}]",
            f"{format_p(boot['p_value'], boot['n_samples'])}{significance_mark(boot['p_value'])}")


def markdown(methods, pairs, noise, n_samples=1000):
    out = [f"| method | clean | seeds | BLEU at noise 0 | BLEU at noise {noise:g} | drop per seed | drop (mean ± std) "
           f"| drop of the seed means [95% CI] | p |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for e in methods:
        ci, p = _ci(e["drop"])
        out.append(f"| {e['method']} | {e['clean_method']} | {' '.join(map(str, e['seeds']))} | {_ms(e['clean_bleu'])} | "
                   f"{_ms(e['noisy_bleu'])} | {' / '.join(f'{d:+.2f}' for d in e['drop_per_seed'])} | "
                   f"{_ms(e['drop_per_seed'])} | {ci} | {p} |")
    out += ["", "| A | B | drop A | drop B | B loses less by [95% CI] | p |", "|---|---|---:|---:|---:|---:|"]
    seeds = {e["method"]: e["seeds"] for e in methods}
    notes = []
    for q in pairs:
        ci, p = _ci(q["b_minus_a"])
        out.append(f"| {q['a']} | {q['b']} | {q['drop_a']:+.2f} | {q['drop_b']:+.2f} | {ci} | {p} |")
        if not q["seeds"] == seeds[q["a"]] == seeds[q["b"]]:
            notes.append(f"{q['a']}:{q['b']} on the seeds both have ({', '.join(map(str, q['seeds']))}): "
                         f"{q['a']} has {len(seeds[q['a']])}, {q['b']} {len(seeds[q['b']])}")
    if notes:
        out += ["", "The methods table takes each method on its own seeds, the pair table " + "; ".join(notes) + "."]
    out += ["", "drop: BLEU at the noise minus the clean counterpart's (seeds paired by number); B loses less by: "
                "(B_noisy - B_clean) - (A_noisy - A_clean), positive when B degrades less; paired bootstrap over the "
                f"test sentences ({n_samples:,} resamples of sacrebleu's seed, all four systems on each), * where the 95% "
                "interval excludes 0. It covers test-set sampling, not seeds: see the per-seed drops."]
    return "\n".join(out)


def _pair(text):
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"{text!r}: write a pair as A:B (e.g. word:seq)")
    return a, b


def _mapping(text):
    a, sep, b = text.partition("=")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"{text!r}: write it as NOISY_METHOD=CLEAN_METHOD (e.g. seq_tnoisy=seq)")
    return a, b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clean", nargs="+", required=True, metavar="DIR", help="studies with the noise-0 cells")
    ap.add_argument("--noisy", nargs="+", required=True, metavar="DIR", help="studies with the noisy cells (one operation)")
    ap.add_argument("--noise", type=float, required=True, help="the noise rate of the noisy cells")
    ap.add_argument("--search", default="beam5", help="test search of the rows compared (default beam5)")
    ap.add_argument("--clean-of", nargs="*", type=_mapping, default=[], metavar="M=CLEAN_M",
                    help="a noisy method's clean counterpart, beside the defaults word_tnoisy=word seq_tnoisy=seq")
    ap.add_argument("--pairs", nargs="*", type=_pair, default=[], metavar="A:B", help="default: every pair")
    ap.add_argument("--split", default="test", help="test, or an --extra-test split (results.SPLIT.csv)")
    ap.add_argument("--test-ref", help="its raw reference (default for test: study.json's test_ref)")
    ap.add_argument("--bootstrap-samples", type=int, default=1000)
    ap.add_argument("--json", metavar="OUT", help="also write the entries as JSON")
    a = ap.parse_args(argv)
    if a.split != "test" and not a.test_ref:
        raise KDInputError(f"--split {a.split}: pass --test-ref with that split's raw reference")
    refs = test_references(a.noisy[0], a.test_ref)
    if refs is None:
        raise KDInputError(f"{a.noisy[0]}/study.json names no readable test_ref; pass --test-ref")
    methods, pairs = drops(load(a.clean, a.split), load(a.noisy, a.split), a.noise, a.search,
                           {**CLEAN_OF, **dict(a.clean_of)}, a.pairs, refs, a.bootstrap_samples)
    print(markdown(methods, pairs, a.noise, a.bootstrap_samples))
    if a.json:
        fileio.atomic_write_text(a.json, json.dumps({"methods": methods, "pairs": pairs}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(run_tool("noise_drop", main)[0])
