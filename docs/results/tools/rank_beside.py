"""Two studies' rankings of the same methods side by side: which findings survive a change of budget.

Reads the ``summary.json`` that ``fairseq-kd-report`` writes (one per study, e.g. the main job's
300-update students and the converged ones), matches groups by method and noise level, and prints
one markdown row per method both sides have: each side's seed mean ± std, its rank among all of that
side's methods at the noise level ("2 of 4", 1 = best BLEU; the methods on one side only are named
below the table), its Δ vs CE with the report's 95% interval and star where the summary holds one,
and, with ``--teacher-bleu``, the share of the teacher-CE gap closed (on the seeds both have; n/a
where they have none in common). A side with several groups per method (other archs, lrs,
searches) must be narrowed with ``--arch`` / ``--search``.

    python docs/results/tools/rank_beside.py \
        "300 updates=docs/results/main_3seeds_summary.json" "converged=docs/results/converged_1m_summary.json" \
        --teacher-bleu "300 updates=35.04" --teacher-bleu "converged=41.0"
"""
import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence, Tuple

BASELINE = "none"


def load_side(path: str, arch: Optional[str] = None, search: Optional[str] = None) -> Dict[Tuple[str, float], Dict]:
    """{(method, noise): group} of one summary.json, narrowed to ``arch`` / ``search``; refuses a
    file that is not a report summary or that holds several groups for one (method, noise)."""
    try:
        with open(path, encoding="utf-8") as f:
            groups = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"rank_beside: {path}: {e}; pass the summary.json written by fairseq-kd-report")
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "bleu_mean" in g for g in groups):
        raise SystemExit(f"rank_beside: {path}: not a fairseq-kd-report summary.json (a list of groups with "
                         f"bleu_mean)")
    out: Dict[Tuple[str, float], Dict] = {}
    for g in groups:
        if (arch and g.get("arch") != arch) or (search and g.get("search") != search):
            continue
        key = (g["method"], float(g.get("noise", 0)))
        if key in out:
            raise SystemExit(f"rank_beside: {path}: several groups for method {key[0]} at noise {key[1]:g} "
                             f"(other arch, lr, decoding or search); narrow with --arch / --search")
        out[key] = g
    return out


def ranks(side: Dict[Tuple[str, float], Dict]) -> Dict[Tuple[str, float], Tuple[int, int]]:
    """{key: (rank, N)}: competition ranks by seed-mean BLEU among all of the side's groups at each noise
    level (1 = best; ties share a rank; N groups at that level), shown or not."""
    out = {}
    for noise in {k[1] for k in side}:
        means = sorted((g["bleu_mean"] for k, g in side.items() if k[1] == noise), reverse=True)
        for k, g in side.items():
            if k[1] == noise:
                out[k] = (1 + means.index(g["bleu_mean"]), len(means))
    return out


def order_moved(sides: List[Tuple[str, Dict]], keys: Sequence[Tuple[str, float]]) -> List[str]:
    """The methods whose place among ``keys`` (the groups every side has) is not the same on all sides."""
    shared = [ranks({k: s[k] for k in keys}) for _, s in sides]
    return [k[0] for k in keys if len({r[k] for r in shared}) > 1]


def gap_closed(side: Dict, key: Tuple[str, float], teacher: Optional[float]) -> Optional[float]:
    """The report's share of the teacher-CE gap for one group, against CE at its noise level, on the
    seeds both have (None where there is no CE, no teacher, or no seed in common)."""
    from fairseq_kd.report import gap_closed as share, seed_mean

    ce = side.get((BASELINE, key[1]))
    if teacher is None or ce is None or key[0] == BASELINE:
        return None
    g = side[key]
    if "bleu_by_seed" not in g or "bleu_by_seed" not in ce:  # a summary written before per-seed BLEU was kept
        return share(g["bleu_mean"], ce["bleu_mean"], teacher)  # the seed means, as that report gave them
    seeds = sorted(set(g["bleu_by_seed"]) & set(ce["bleu_by_seed"]))
    if not seeds:  # no seed in common: n/a, as the report says (a mean of other seeds is not a pair)
        return None
    return share(seed_mean(g, seeds), seed_mean(ce, seeds), teacher)  # on shared seeds, as the report's gap


def _cell(g: Dict, rank: Tuple[int, int], gap: Optional[float], with_gap: bool, blank: bool) -> str:
    """One side's cells of a row; the gap is blank for CE and for a side without --teacher-bleu."""
    v = g.get("vs_baseline")
    delta = "" if not v else f"{v['delta']:+.2f} [{v['ci_low']:+.2f}, {v['ci_high']:+.2f}]" + (
        "*" if v["ci_low"] > 0 or v["ci_high"] < 0 else "")
    text = f"{g['bleu_mean']:.2f} ± {g['bleu_std']:.2f} (n={g['n']}) | {rank[0]} of {rank[1]} | {delta}"
    shown = "" if blank else "n/a" if gap is None else f"{100 * gap:+.0f}%"
    return text + (f" | {shown}" if with_gap else "")


def table(sides: List[Tuple[str, Dict]], teachers: Dict[str, float]) -> str:
    keys = [k for k in sides[0][1] if all(k in s for _, s in sides)]
    if not keys:
        raise SystemExit("rank_beside: the summaries share no (method, noise) group")
    keys.sort(key=lambda k: (k[1], sides[-1][1][k]["bleu_mean"] * -1))
    rk = [ranks(s) for _, s in sides]
    with_gap = bool(teachers)
    head, rule = "| method | noise |", "|---|---:|"
    for label, _ in sides:
        head += f" {label}: BLEU | rank | Δ vs CE [95% CI] |" + (" gap closed |" if with_gap else "")
        rule += "---:|---:|---:|" + ("---:|" if with_gap else "")
    lines = [head, rule]
    for k in keys:
        cells = [_cell(s[k], r[k], gap_closed(s, k, teachers.get(label)), with_gap,
                       blank=k[0] == BASELINE or label not in teachers) for (label, s), r in zip(sides, rk)]
        lines.append(f"| {k[0]} | {k[1]:g} | " + " | ".join(cells) + " |")
    moved = order_moved(sides, keys)
    alone = []
    for label, s in sides:
        extra = sorted(f"{k[0]}" + (f" (noise {k[1]:g})" if k[1] else "") for k in s if k not in keys)
        if extra:
            alone.append(f"{label} only: {', '.join(extra)}")
    lines.append("")
    lines.append("rank: by seed-mean test BLEU among all of that side's methods at the noise level, those on one "
                 "side only included (k of N; 1 = best); * where the interval excludes 0. "
                 + (f"Methods not on every side, left out of the rows: {'; '.join(alone)}. " if alone else "")
                 + ("Among the methods on every side, the order changed: " + ", ".join(moved) + "." if moved
                    else "Among the methods on every side, the order is the same."))
    return "\n".join(lines) + "\n"


def _labelled(text: str, flag: str) -> Tuple[str, str]:
    if "=" not in text:
        raise SystemExit(f"rank_beside: {flag} {text!r}: write LABEL=VALUE")
    label, value = text.split("=", 1)
    return label, value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sides", nargs="+", metavar="LABEL=SUMMARY.json", help="two or more report summaries")
    ap.add_argument("--teacher-bleu", action="append", default=[], metavar="LABEL=BLEU",
                    help="a side's teacher test BLEU: adds the share of the teacher-CE gap closed")
    ap.add_argument("--arch", default=None, help="keep only groups of this student arch")
    ap.add_argument("--search", default=None, help="keep only groups of this test search (e.g. beam, beam5)")
    args = ap.parse_args(argv)
    if len(args.sides) < 2:
        ap.error("pass at least two LABEL=SUMMARY.json")
    sides = [(label, load_side(path, args.arch, args.search))
             for label, path in (_labelled(s, "side") for s in args.sides)]
    teachers = {}
    for t in args.teacher_bleu:
        label, value = _labelled(t, "--teacher-bleu")
        if label not in dict(sides):
            raise SystemExit(f"rank_beside: --teacher-bleu {t!r}: no side labelled {label!r}")
        teachers[label] = float(value)
    sys.stdout.write(table(sides, teachers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
