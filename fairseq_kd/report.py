"""Study results -> a markdown table (mean and std over seeds, significance) and three plots.

Rows of ``results.csv`` (written by ``fairseq_kd.study``) that differ only in ``seed``
form one group; BLEU and chrF are summarised by their mean and the *sample* standard
deviation (n - 1 denominator; 0 for a single seed). Each KD group is compared with the
baseline (method ``none``) at the same coordinates (noise, arch, lr, test search): the
difference of seed-averaged BLEU with a paired bootstrap test on the test sentences
(``fairseq_kd.significance``: sacrebleu's resampling of sentences, 1,000 resamples, the 95%
percentile interval and the p-value of that same test); ``*`` marks an interval that excludes 0
(equivalently p <= 0.05). With the teacher's test BLEU, each student's share of the teacher-CE gap
(``gap_closed``). The plots are ``fairseq_kd.report_plots``.
"""
import math
import os
import re
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
                    "bleu_by_seed": {r["seed"]: r["bleu"] for r in members},
                    "hyps": {r["seed"]: r["hyp"] for r in members}})
    return out


def shared_seeds(a: Dict, b: Dict) -> List:
    """The seeds two groups both measured: a seed gives every method the same initial weights, so a
    difference between methods is taken on these (two seeds against three would mix in the third's draw)."""
    return sorted(set(a["hyps"]) & set(b["hyps"]))


def seed_mean(group: Dict, seeds: Sequence) -> float:
    """A group's mean BLEU over ``seeds`` (its ``bleu_by_seed``)."""
    return sum(group["bleu_by_seed"][k] for k in seeds) / len(seeds)


def _seeds_note(s: Dict, base: Dict, seeds: List) -> Optional[str]:
    if seeds == s["seeds"] == base["seeds"]:
        return None
    return (f"on the seeds both have ({', '.join(map(str, seeds))}): {s['method']} has {len(s['seeds'])}, "
            f"{base['method']} {len(base['seeds'])}")


def _hyp_file(results_dir: str, hyp: str) -> Optional[str]:
    """A row's hypothesis file, or its ``.gz`` (a finished study kept in docs/results: export_converged.sh)."""
    path = os.path.join(results_dir, hyp)
    return next((p for p in (path, path + ".gz") if hyp and os.path.isfile(p)), None)


def _read_hyps(results_dir: str, hyps: Dict[int, str]) -> Optional[List[List[str]]]:
    paths = [_hyp_file(results_dir, h) for _, h in sorted(hyps.items())]
    if not paths or None in paths:
        return None
    return [fileio.read_lines(p) for p in paths]


def extra_split(results: str) -> Optional[str]:
    """The extra test split whose rows ``results`` holds (``results.SPLIT.csv``, fairseq-kd-study's
    ``--extra-test``), or None for the main split's ``results.csv`` (or any other name)."""
    m = re.fullmatch(r"results\.(.+)\.csv", os.path.basename(results))
    return m.group(1) if m else None


def test_references(results_dir: str, test_ref: Optional[str] = None) -> Optional[List[str]]:
    """Reference lines: ``test_ref``, else the ``test_ref`` recorded in the study's study.json
    (relative paths as the study saw them, else relative to the results folder); None if absent."""
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
        seeds = shared_seeds(s, base)
        if not seeds:
            s["vs_baseline_note"] = f"no seed in common with {baseline}"
            continue
        base_hyps = _read_hyps(results_dir, {k: base["hyps"][k] for k in seeds})
        sys_hyps = _read_hyps(results_dir, {k: s["hyps"][k] for k in seeds})
        if refs is None or base_hyps is None or sys_hyps is None:
            s["vs_baseline_note"] = "hypothesis or reference files not found"
            continue
        s["vs_baseline"] = {**paired_bootstrap(base_hyps, sys_hyps, refs, n_samples=n_samples), "seeds": seeds}
        for group, score in ((base, s["vs_baseline"]["base"]), (s, s["vs_baseline"]["system"])):
            check_scored_against(score, seed_mean(group, seeds), f"{group['method']} ({group['search']})")
        note = _seeds_note(s, base, seeds)
        if note:
            s["vs_baseline_note"] = note
    return summary


def check_scored_against(score: float, recorded: float, what: str, flag: str = "--test-ref") -> None:
    """The hypotheses' BLEU against the reference read here must be the BLEU their rows recorded (rounded
    to 2 decimals), or the reference is not theirs: another split's of the same length is refused."""
    from fairseq_kd.errors import KDInputError

    if abs(score - recorded) > 0.01:
        raise KDInputError(f"{what}: its hypotheses score {score:.2f} BLEU against this reference but its rows say "
                           f"{recorded:.2f}: the reference is not the one they were scored with (another split's, "
                           f"of the same length?); pass the right {flag}")


def gap_closed(student: float, ce: float, teacher: float) -> Optional[float]:
    """Share of the teacher-CE gap a student closes: (student - CE) / (teacher - CE); 1.0 = the
    teacher's BLEU, negative = below CE. None when the teacher is not above CE (no gap to close)."""
    return (student - ce) / (teacher - ce) if teacher > ce else None


def parse_teacher_bleu(values: Sequence[str], searches: Sequence[str]) -> Dict[str, float]:
    """``--teacher-bleu`` values -> {test search: teacher BLEU}: ``SEARCH=BLEU`` per search (e.g.
    ``beam5=39.4 greedy=38.9``), or a bare ``BLEU`` when the results hold one search only."""
    out: Dict[str, float] = {}
    for text in values:
        search, _, number = text.rpartition("=")
        if not search:
            if len(set(searches)) != 1:
                raise KDInputError(f"--teacher-bleu {text}: the results hold searches {', '.join(sorted(set(searches)))}; "
                                   f"give the teacher's BLEU per search, e.g. --teacher-bleu {sorted(searches)[0]}={text}")
            search = searches[0]
        try:
            bleu = float(number)
        except ValueError:
            bleu = float("nan")
        if not 0 <= bleu <= 100:
            raise KDInputError(f"--teacher-bleu {text}: pass the teacher's corpus BLEU on this test split (0-100, as "
                               f"results.csv's bleu column), optionally as SEARCH=BLEU")
        if search in out:
            raise KDInputError(f"--teacher-bleu: search {search!r} given twice")
        out[search] = bleu
    return out


def add_gap_closed(summary: List[Dict], teacher_bleu: Dict[str, float]) -> List[Dict]:
    """Adds ``gap_closed`` to every non-CE group (CE = method ``none`` at the same noise, arch, lr and
    search, whatever ``--baseline`` is; the teacher's BLEU of the group's test search), or None with
    ``gap_note`` saying why it is missing. One teacher BLEU per search: rows of several teachers (a
    ``--teachers`` axis) are refused, each would need its own."""
    teachers = sorted({str(s.get("teacher", "-")) for s in summary} - {"-"})
    if len(teachers) > 1:
        raise KDInputError(f"--teacher-bleu: the rows hold several teachers ({', '.join(teachers)}), and the gap of "
                           f"each needs its own teacher's BLEU; report one teacher's rows at a time")
    ce = {tuple(s[k] for k in PAIRED): s for s in summary if s["method"] == BASELINE}
    for s in summary:
        teacher = teacher_bleu.get(s["search"])
        s["teacher_bleu"] = teacher
        if s["method"] == BASELINE:
            continue
        base = ce.get(tuple(s[k] for k in PAIRED))
        seeds = shared_seeds(s, base) if base is not None else []
        s["gap_closed"] = None
        if teacher is None:
            s["gap_note"] = f"no teacher BLEU for search {s['search']}"
        elif base is None:
            s["gap_note"] = "no CE group at these coordinates"
        elif not seeds:
            s["gap_note"] = "no seed in common with CE"
        else:
            ce_mean = seed_mean(base, seeds)
            s["gap_closed"] = gap_closed(seed_mean(s, seeds), ce_mean, teacher)
            if _seeds_note(s, base, seeds):
                s["gap_seeds"] = seeds
            if s["gap_closed"] is None:
                s["gap_note"] = f"teacher {teacher:.2f} is not above CE {ce_mean:.2f} ({s['search']})"
    return summary


def _gap_cell(s: Dict) -> str:
    if s["method"] == BASELINE:
        return "| "
    v = s.get("gap_closed")
    paired = f" (seeds {', '.join(map(str, s['gap_seeds']))})" if s.get("gap_seeds") else ""
    return "| n/a " if v is None else f"| {100 * v:+.0f}%{paired} "


def _delta_cells(s: Dict) -> str:
    v = s.get("vs_baseline")
    if not v:
        return "| | " if s["method"] == s.get("baseline", BASELINE) else "| n/a | "
    from fairseq_kd.significance import format_p, significance_mark

    paired = f" (seeds {', '.join(map(str, v['seeds']))})" if s.get("vs_baseline_note") and v.get("seeds") else ""
    return (f"| {v['delta']:+.2f} [{v['ci_low']:+.2f}, {v['ci_high']:+.2f}]{paired} "
            f"| {format_p(v['p_value'], v['n_samples'])}{significance_mark(v['p_value'])} ")


def markdown_table(summary: List[Dict]) -> str:
    """The table: one line per group, BLEU and chrF as mean ± std (n seeds), and each KD
    group's BLEU difference to the baseline with its 95% interval and p-value (* the interval excludes 0)."""
    teachers = len({s["teacher"] for s in summary}) > 1
    gap = any("teacher_bleu" in s for s in summary)
    baseline = next((s["baseline"] for s in summary if "baseline" in s), BASELINE)
    head = ("| method | noise | arch | params | decoding | " + ("teacher | " if teachers else "")
            + f"lr | search | seeds | BLEU | chrF | Δ BLEU vs {baseline} [95% CI] | p |"
            + (" gap closed |" if gap else ""))
    lines = [head, "|---|---:|---|---:|---|" + ("---|" if teachers else "") + "---:|---|---:|---:|---:|---:|---:|"
             + ("---:|" if gap else "")]
    for s in summary:
        lines.append(f"| {s['method']} | {s['noise']:g} | {s['arch']} | {s['parameters']:,} | {s['decoding']} "
                     + (f"| {s['teacher']} " if teachers else "")
                     + f"| {s['lr']:g} | {s['search']} | {s['n']} | {s['bleu_mean']:.2f} ± {s['bleu_std']:.2f} "
                     f"| {s['chrf_mean']:.2f} ± {s['chrf_std']:.2f} " + _delta_cells(s) + (_gap_cell(s) if gap else "")
                     + "|")
    notes = sorted({s["gap_note"] for s in summary if s.get("gap_note")})
    gap_text = ""
    if gap:
        t = ", ".join(sorted({f"{s['teacher_bleu']:.2f} ({s['search']})" for s in summary if s.get("teacher_bleu")
                              is not None}))
        gap_text = (f"\ngap closed: (student - CE) / (teacher - CE) with the teacher's test BLEU {t} and the "
                    f"means over the seeds both have, CE at the same noise, arch, lr and search; 100% = the "
                    f"teacher's BLEU."
                    + (" n/a: " + "; ".join(notes) + "." if notes else "") + "\n")
    return "\n".join(lines) + "\n" + gap_text + ("\nΔ: seed-averaged BLEU minus the baseline's at the same noise, arch, lr and "
                                       "search, over the seeds both have (named where a side has others); paired "
                                       "bootstrap over test sentences (1,000 resamples of sacrebleu's "
                                       "seed): 95% percentile interval and its two-sided p; * where the interval "
                                       "excludes 0 (p <= 0.05).\n" if any(s.get("vs_baseline") for s in summary) else "")
