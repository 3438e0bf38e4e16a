"""README's main-job numbers are the committed run's: every cell of its table and every figure of the
paragraph above it is recomputed from the files that run left in docs/results (issue 23, item 6).

Truths: the kept study's rows (``main_jobs2_study/results.csv``: per-seed BLEU / chrF, parameters), the
job's own table (``main_jobs2_results.md``: the paired-bootstrap intervals, the int8 exports), the run
record (``main_jobs2_run.json``: stage times, teacher BLEU) and the between-method reports
(``main_jobs2_vs_{word,seq}.json``). When README's table is replaced by a new run, RUN below names the
new run's files and this test checks them instead."""
import json
import re
from pathlib import Path
from typing import Dict, List

import pytest

from fairseq_kd.report import mean_std
from tests.helpers import load_results_tool

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
RUN = "main_jobs3"  # README cites docs/results/main_jobs3_* as its table's source
MARKER = "<!-- main-job-table -->"

pytestmark = pytest.mark.unit
MD = load_results_tool("check_significance")  # its markdown row splitter and cell cleaner
plain = MD.plain


def md_table(lines: List[str], start: int) -> List[Dict[str, str]]:
    """The markdown table whose header is at ``lines[start]``: one dict per row, keyed by header."""
    head = MD.split_row(lines[start])
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(head, MD.split_row(line))))
    return rows


def table_after(text: str, anchor: str) -> List[Dict[str, str]]:
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if anchor in line)
    return md_table(lines, next(n for n in range(i, len(lines)) if lines[n].startswith("|")))


@pytest.fixture(scope="module")
def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def rows() -> List[Dict[str, str]]:
    import csv

    with open(RESULTS / f"{RUN}_study" / "results.csv", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["search"] == "beam5"]


@pytest.fixture(scope="module")
def job_md() -> str:
    return (RESULTS / f"{RUN}_results.md").read_text(encoding="utf-8")


def per_seed(rows, method: str, field: str = "bleu") -> Dict[int, float]:
    return {int(r["seed"]): float(r[field]) for r in rows if r["method"] == method}


def test_readme_cites_the_run_it_checks(readme):
    assert f"docs/results/{RUN}_" in readme
    assert MARKER in readme


def test_table_matches_the_kept_rows_and_the_job_table(readme, rows, job_md):
    table = table_after(readme, MARKER)
    job = {r["method"]: r for r in table_after(job_md, "| method | noise |")}
    int8 = table_after(job_md, "| student (cell) |")
    ce = per_seed(rows, "none")
    assert [plain(r["method"]).split()[0] for r in table] == ["none", "word", "seq", "hybrid"]
    for r in table:
        m = plain(r["method"]).split()[0]
        bleu, chrf = per_seed(rows, m), per_seed(rows, m, "chrf")
        assert plain(r["seeds"]) == str(len(bleu)) == "3"
        assert plain(r["BLEU (mean ± std)"]) == "{:.2f} ± {:.2f}".format(*mean_std(list(bleu.values())))
        assert plain(r["chrF"]) == "{:.2f} ± {:.2f}".format(*mean_std(list(chrf.values())))
        assert plain(r["params"]) == f"{int(next(x['parameters'] for x in rows if x['method'] == m)):,}"
        assert plain(r["int8 export BLEU (mean)"]) == "{:.2f}".format(
            mean_std([float(x["int8 export BLEU (beam 5)"]) for x in int8 if x["method"] == m])[0])
        if m == "none":
            continue
        assert plain(r["Δ BLEU vs none [95% CI]"]) == job[m]["Δ BLEU vs none [95% CI]"]
        assert plain(r["p"]) == job[m]["p"]
        want = " / ".join(f"{bleu[s] - ce[s]:+.2f}" for s in sorted(bleu))
        assert plain(r["Δ per seed (1 / 2 / 3)"]) == want


def test_ranking_sentence_holds_per_seed(readme, rows):
    assert "Every seed ranks\nhybrid > seq > word > CE" in readme or "Every seed ranks hybrid > seq > word > CE" in readme
    scores = {m: per_seed(rows, m) for m in ("none", "word", "seq", "hybrid")}
    for s in (1, 2, 3):
        assert scores["hybrid"][s] > scores["seq"][s] > scores["word"][s] > scores["none"][s], s


def _delta(path: Path, method: str) -> str:
    row = next(r for r in json.loads(path.read_text()) if r["method"] == method)["vs_baseline"]
    return f"{row['delta']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"


def test_between_method_intervals(readme):
    text = " ".join(readme.split())  # line breaks inside sentences
    assert f"seq - word {_delta(RESULTS / f'{RUN}_vs_word.json', 'seq')}" in text
    assert f"hybrid - seq {_delta(RESULTS / f'{RUN}_vs_seq.json', 'hybrid')}" in text


def test_times_and_teacher_from_the_run_record(readme, job_md):
    run = json.loads((RESULTS / f"{RUN}_run.json").read_text())
    text = " ".join(readme.split())
    stages = run["stages_seconds"]
    teacher = stages["2 teacher, 750 updates"]
    inputs = next(v for k, v in stages.items() if "distillation, caches" in k)
    students = next(v for k, v in stages.items() if k.startswith("4 students")) - inputs
    total = run["wall_seconds_total"]
    assert f"**{total / 60:.2f} min** ({total:,} s: teacher {teacher:,} s, its decodes " \
           f"{stages['3 teacher decoding (valid, test)']} s, distillation and two top-8 caches {inputs} s, " \
           f"twelve students {students:,} s" in text
    assert f"code `{run['code_commit']}`" in text
    t = run["teacher_bleu"]
    assert f"**{t['test']:.2f}** BLEU on test (valid {t['valid']:.2f})" in text
    assert f"its beam translations of train score {run['distilled_train']['bleu']:.2f}" in text
    assert re.search(rf"Teacher: BLEU {t['test']:.2f} on test \(valid {t['valid']:.2f}\)", job_md)


def _summary(name: str, method: str) -> Dict:
    return next(r for r in json.loads((RESULTS / name).read_text()) if r["method"] == method and r["search"] == "beam5")


def _ci(row: Dict) -> str:
    v = row["vs_baseline"]
    return f"{v['delta']:+.2f} [{v['ci_low']:+.2f}, {v['ci_high']:+.2f}]"


def test_converged_paragraph_from_the_converged_files(readme):
    """The README's converged-study sentences (machine A, docs/results.md 7-7f) against their CSVs and
    fairseq-kd-report summaries."""
    import csv

    text = " ".join(readme.split())
    with open(RESULTS / "converged_ce_1m.csv", encoding="utf-8") as f:
        ce = [r for r in csv.DictReader(f) if r["search"] == "beam5"]
    ce_mean, ce_std = mean_std([float(r["bleu"]) for r in ce])
    stops = sorted(int(r["updates"]) for r in ce)
    assert all(r["stop"] == "patience" for r in ce)
    assert (f"stops by patience at {ce_mean:.2f} ± {ce_std:.2f} BLEU on test_2016 ({len(ce)} seeds, stopped at "
            f"{stops[0]:,}, {stops[1]:,} and {stops[2]:,} updates)") in text
    with open(RESULTS / "converged_teacher_ce_results.csv", encoding="utf-8") as f:
        t01 = next(r for r in csv.DictReader(f) if r["arch"] == "transformer" and r["split"] == "test"
                   and r["search"] == "beam5")
    assert f"dropout 0.1 ({float(t01['bleu']):.2f}: it overfits)" in text
    with open(RESULTS / "converged_teacher_d0.3.csv", encoding="utf-8") as f:
        t03 = next(r for r in csv.DictReader(f) if r["search"] == "beam5")
    teacher = float(t03["bleu"])
    assert (f"the teacher stops at {int(t03['updates']):,} updates with {teacher:.2f} (a teacher-CE gap of "
            f"{teacher - round(ce_mean, 2):.2f})") in text
    word, seq = (_summary("converged_1m_summary.json", m) for m in ("word", "seq"))
    assert (f"word-KD ({word['bleu_mean']:.2f} ± {word['bleu_std']:.2f}) and seq-KD ({seq['bleu_mean']:.2f} ± "
            f"{seq['bleu_std']:.2f}) both beat CE ({word['vs_baseline']['delta']:+.2f} and "
            f"{seq['vs_baseline']['delta']:+.2f}") in text
    assert word["n"] == seq["n"] == 3 and max(word["vs_baseline"]["ci_low"], seq["vs_baseline"]["ci_low"]) > 0
    assert (f"seq - word is {_ci(_summary('converged_1m_vs_word_summary.json', 'seq'))} on test_2016 and "
            f"{_ci(_summary('converged_1m_vs_word_test1_summary.json', 'seq'))} on test_2017") in text
    hybrid = _summary("converged_1m_summary.json", "hybrid")
    assert f"is at {hybrid['bleu_mean']:.2f} ± {hybrid['bleu_std']:.2f} with {hybrid['n']} of its 3 seeds" in text


def _beam5(path: Path) -> Dict[tuple, float]:
    import csv

    with open(path, encoding="utf-8") as f:
        return {(r["method"], int(r["seed"])): float(r["bleu"]) for r in csv.DictReader(f) if r["search"] == "beam5"}


def test_rerun_sentences_from_the_runs(readme):
    """What README says was checked about reruns: same CPU and threads (2e and 2f on machine B, 2g on machine
    C, a VM of the same kind), decoding alone (2g against 2f), thread count (2f, one thread per student,
    against 2e, two), another CPU (2d, machine A, against 2e), one seed (2b)."""
    text = " ".join(readme.split())
    run_a, run_b, run_f = (json.loads((RESULTS / f"{n}_run.json").read_text())
                           for n in ("main_3seeds", "main_3seeds_b", "main_jobs2"))
    run_g = json.loads((RESULTS / f"{RUN}_run.json").read_text())
    assert run_b["teacher_bleu"]["test"] == run_f["teacher_bleu"]["test"] == run_g["teacher_bleu"]["test"]
    assert run_f["distilled_train"]["bleu"] == run_g["distilled_train"]["bleu"]
    assert run_f["distilled_train"]["chrf"] == run_g["distilled_train"]["chrf"]
    assert (f"test {run_g['teacher_bleu']['test']} all three times, its distilled train "
            f"{run_g['distilled_train']['bleu']:.2f}") in text
    a, b, f, g = (_beam5(RESULTS / p) for p in ("main_3seeds.csv", "main_3seeds_b_study/results.csv",
                                                "main_jobs2_study/results.csv", f"{RUN}_study/results.csv"))
    assert a.keys() == b.keys() == f.keys() == g.keys() and len(g) == 12
    decoding = max(abs(g[k] - f[k]) for k in g)
    threads = max(abs(f[k] - b[k]) for k in f)
    machines = max(abs(b[k] - a[k]) for k in a)
    assert f"a change of decoding alone moved these students by at most {decoding:.2f}" in text
    assert f"one thread instead of two per student moves a student by up to {threads:.2f} BLEU" in text
    means = {m: mean_std([v for (mm, _), v in a.items() if mm == m])[0] for m in ("none", "word", "seq", "hybrid")}
    assert (f"another CPU moves it by up to {machines:.2f} (the Intel run of 2d: teacher "
            f"{run_a['teacher_bleu']['test']:.2f}, CE {means['none']:.2f}, word {means['word']:.2f}, seq "
            f"{means['seq']:.2f}, hybrid {means['hybrid']:.2f}") in text
    one = _beam5(RESULTS / "main_timed.csv")
    assert one[("word", 1)] > one[("hybrid", 1)] > one[("seq", 1)]
    assert (f"seed 1 gave word {one[('word', 1)]:.2f} > hybrid {one[('hybrid', 1)]:.2f} > seq "
            f"{one[('seq', 1)]:.2f}") in text
    assert f"({run_f['wall_seconds_total'] / 60:.2f} min on another VM of it, code `{run_f['code_commit']}`" in text
    assert (f"took {run_b['wall_seconds_total'] / 60:.1f} min there (section 2e), and "
            f"{run_a['wall_seconds_total'] / 60:.1f} min on an Intel VM (section 2d)") in text
    ranked = [_beam5(RESULTS / p) for p in ("main_3seeds.csv", "main_3seeds_b_study/results.csv",
                                             "main_jobs2_study/results.csv", f"{RUN}_study/results.csv")]
    assert all(r[("hybrid", s)] > r[("seq", s)] > r[("word", s)] > r[("none", s)] for r in ranked for s in (1, 2, 3))
    assert "The ranking held on every seed of all four three-seed runs" in text