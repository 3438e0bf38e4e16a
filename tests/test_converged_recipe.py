"""scripts/converged_study.sh end to end on a slice of real Multi30k: every stage's wiring (teacher,
students with the top-k cache and the distilled corpus, the noisy-source teacher's copies, on-policy
from a student), with budgets of a few updates: the hours-long lanes run exactly these commands."""
import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers

pytestmark = pytest.mark.slow
SCRIPT = helpers.REPO / "scripts" / "converged_study.sh"
EXPORT = helpers.REPO / "docs" / "results" / "tools" / "export_converged.sh"
LINES = {"train": 300, "val": 24, "test_2016_flickr": 16, "test_2017_flickr": 16}


def rows(path: Path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def prep(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("converged_recipe")
    data = root / "data"
    data.mkdir()
    for name, n in LINES.items():
        for lang in ("de", "en"):
            lines = (shared_data / "multi30k" / f"{name}.{lang}").read_text(encoding="utf-8").splitlines()[:n]
            (data / f"{name}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    subprocess.run(["bash", str(helpers.REPO / "data_prep" / "prepare_multi30k.sh"), "--data-dir", str(data),
                    "--out-dir", str(root / "prep"), "--vocab-size", "400", "--workers", "1",
                    "--test-sets", "test_2016_flickr,test_2017_flickr"], check=True, capture_output=True, env=_env())
    return root


def _env():
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OMP_NUM_THREADS="1")


def recipe(prep: Path, *args, out_root: str = "out"):
    proc = subprocess.run(["bash", str(SCRIPT), "--prep", str(prep / "prep"), "--out-root", str(prep / out_root),
                           "--max-update", "4", "--interval", "2", "--patience", "1", "--seeds", "1", *args],
                          capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_every_stage_runs_and_reads_what_it_should(prep):
    out = prep / "out"
    # before any teacher exists: CE students train (a new machine runs them beside stage 1), a KD method is refused
    bare = prep / "no_teacher"
    recipe(prep, "--stage", "2", "--stop-stage", "2", "--methods", "none", out_root=bare.name)
    assert {r["method"] for r in rows(bare / "students_1m_main" / "results.csv")} == {"none"}
    kd = subprocess.run(["bash", str(SCRIPT), "--prep", str(prep / "prep"), "--out-root", str(bare), "--stage", "2",
                         "--stop-stage", "2", "--methods", "none word", "--tag", "kd"],
                        capture_output=True, text=True, env=_env(), timeout=120)
    assert kd.returncode != 0 and "no converged teacher" in kd.stderr and "run stage 1" in kd.stderr
    assert not (bare / "students_1m_kd").exists()
    # the exporter before the teacher has finished: CE's curve and its kept study, no table yet
    early = prep / "results_early"
    (prep / "commits_early.csv").write_text("study,code_commit\nstudents_1m_main,9f8e7d6\n")
    export = subprocess.run(["bash", str(EXPORT), "--out-root", str(bare), "--results", str(early),
                             "--commits", str(prep / "commits_early.csv"), "--ce-study", "students_1m_main"],
                            capture_output=True, text=True, env=_env(), timeout=900)
    assert export.returncode == 0, export.stderr[-4000:]
    assert "curves and finished studies only" in export.stderr
    assert rows(early / "converged_ce_1m.csv") == rows(bare / "students_1m_main" / "results.csv")
    assert rows(early / "converged_none_seed1_curve.csv")[0]["model"] == "CE 1.3M lr 0.003 seed 1"
    assert (early / "studies" / "students_1m_main" / "results.csv").is_file()
    assert not list(early.glob("*summary.json"))

    recipe(prep, "--stage", "1", "--stop-stage", "1")
    teacher = rows(out / "teacher_d0.3" / "results.csv")
    assert {(r["method"], r["arch"], r["search"], r["updates"]) for r in teacher} == {
        ("none", "transformer", "beam5", "4"), ("none", "transformer", "greedy", "4")}
    assert "--dropout 0.3" in (out / "teacher_d0.3" / "cells" / teacher[0]["cell"] / "train.log").read_text()

    recipe(prep, "--stage", "2", "--stop-stage", "2", "--methods", "none word seq word.hid", "--student-dropout", "0.2")
    students = out / "students_1m_main"
    got = rows(students / "results.csv")
    assert {r["method"] for r in got} == {"none", "word", "seq", "word.hid"}
    assert {r["arch"] for r in got} == {"transformer_relu_3m"}
    assert len(rows(students / "results.test1.csv")) == 8  # test_2017_flickr decoded too
    hid_log = (students / "cells" / next(r["cell"] for r in got if r["method"] == "word.hid") / "train.log").read_text()
    # the distribution from word-KD's top-8 cache, the hidden states from the teacher's encoder
    assert "--teacher-cache" in hid_log and "--teacher-path" in hid_log and "'kd_hidden_weight': 1.0" in hid_log
    word_log = (students / "cells" / next(r["cell"] for r in got if r["method"] == "word") / "train.log").read_text()
    assert "--teacher-cache" in word_log  # word-KD reads the top-8 cache, not the teacher online
    assert "--dropout 0.2" in word_log and "--dropout 0.1" not in word_log  # --student-dropout reaches fairseq
    distilled = (students / "distilled" / "beam" / "train.en").read_text(encoding="utf-8").splitlines()
    assert len(distilled) == LINES["train"]  # seq-KD's corpus: the teacher's beam translation of every source

    recipe(prep, "--stage", "3", "--stop-stage", "3", "--methods", "seq_tnoisy word_tnoisy word", "--noise-copies", "1")
    noisy = rows(out / "noise_substitution_main" / "results.csv")
    assert {(r["method"], r["noise"]) for r in noisy} == {("seq_tnoisy", "0.3"), ("word_tnoisy", "0.3"), ("word", "0.3")}
    logs = {r["method"]: (out / "noise_substitution_main" / "cells" / r["cell"] / "train.log").read_text() for r in noisy}
    # the noisy-source teacher runs online, cut to the clean cells' renormalised top-8 (its drop is noise alone);
    # word's teacher reads the clean source: the top-8 cache serves it, as for the clean cells
    assert "--teacher-path" in logs["word_tnoisy"] and "--teacher-cache" not in logs["word_tnoisy"]
    assert "'kd_topk': 8" in logs["word_tnoisy"] and "--noise-teacher-input noisy" in logs["word_tnoisy"]
    assert "--teacher-cache" in logs["word"] and "--noise-substitution 0.3" in logs["word"]
    copies = out / "noise_substitution_main" / "distilled" / "beam" / "noisy-sub0.3_k1"
    noisy_src = (copies / "train.de").read_text(encoding="utf-8").splitlines()
    clean_src = (students / "distilled" / "beam" / "train.de").read_text(encoding="utf-8").splitlines()
    assert len(noisy_src) == LINES["train"] and noisy_src != clean_src  # the teacher read the noised source

    init = next((students / "cells").glob("word_*/checkpoints/checkpoint_best.pt"))
    recipe(prep, "--stage", "4", "--stop-stage", "4", "--methods", "onpolicy none", "--student-init", str(init),
           "--continue-updates", "6")
    onp = rows(out / "onpolicy_main" / "results.csv")
    assert {r["method"] for r in onp} == {"onpolicy", "none"}
    # equal compute: every method trains --continue-updates (not --max-update 4, not until patience 1)
    assert {(r["updates"], r["stop"]) for r in onp} == {("6", "budget")}
    log = (out / "onpolicy_main" / "cells" / next(r["cell"] for r in onp if r["method"] == "onpolicy") / "train.log")
    log = log.read_text()
    assert f"--finetune-from-model {init}" in log and "--lr 0.0004" in log
    # on-policy's online teacher is cut to the top-8 the continued word-KD reads from its cache: only the
    # sequences the divergence sees differ between them
    assert "--teacher-path" in log and "'kd_topk': 8" in log

    again = recipe(prep, "--stage", "2", "--stop-stage", "2", "--methods", "none word seq word.hid", "--student-dropout",
                   "0.2")
    assert '"skipped": 4' in again.stdout  # resumes: nothing to run

    # the committed files of docs/results.md section 7 come from these out-dirs through one script
    res = prep / "results"  # made by the exporter
    commits = prep / "commits.csv"
    commits.write_text("study,code_commit\nonpolicy_main,abc1234\nnoise_substitution_main,def5678\nteacher_d0.3,0a1b2c3\n"
                       "students_1m_main,9f8e7d6\n")
    export = subprocess.run(["bash", str(EXPORT), "--out-root", str(out), "--results", str(res), "--commits", str(commits),
                             "--extra-ref", str(prep / "prep" / "raw" / "test1.en"), "--ce-study", "students_1m_main",
                             "--main-gap", str(helpers.REPO / "docs" / "results" / "main_3seeds_gap.json")],
                            capture_output=True, text=True, env=_env(), timeout=900)
    assert export.returncode == 0, export.stderr[-4000:]
    assert rows(res / "converged_teacher_d0.3.csv") == teacher  # the teacher's rows, from its out-dir
    assert rows(res / "converged_teacher_d0.3_none_seed1_curve.csv")[0]["model"] == "teacher 6.55M dropout 0.3 seed 1"
    # every finished study kept whole: its rows, and each row's hypotheses gzipped where the row names them
    kept = res / "studies"
    assert sorted(p.name for p in kept.iterdir()) == ["noise_substitution_main", "onpolicy_main", "students_1m_main",
                                                      "teacher_d0.3"]
    assert rows(kept / "students_1m_main" / "results.csv") == got
    for r in got + rows(students / "results.test1.csv"):
        kept_hyp = gzip.decompress((kept / "students_1m_main" / (r["hyp"] + ".gz")).read_bytes())
        assert kept_hyp == (students / r["hyp"]).read_bytes()
    merged = rows(out / "merged_1m" / "results.csv")
    assert sorted((r["method"], r["search"]) for r in merged) == sorted((r["method"], r["search"]) for r in got)
    summary = json.loads((res / "converged_1m_summary.json").read_text())
    teacher_beam = next(float(r["bleu"]) for r in teacher if r["search"] == "beam5")
    word_beam = next(float(r["bleu"]) for r in got if r["method"] == "word" and r["search"] == "beam5")
    group = next(g for g in summary if g["method"] == "word" and g["search"] == "beam5")
    assert group["bleu_mean"] == pytest.approx(word_beam) and group["teacher_bleu"] == teacher_beam
    assert rows(res / "converged_onpolicy.csv") == onp  # one on-policy lane: its rows as they are
    curve = rows(res / "converged_onpolicy_onpolicy_seed1_curve.csv")
    assert curve and {c["model"] for c in curve} == {"on-policy (lambda 0.5) continued from CE seed 1"}
    assert {c["code_commit"] for c in curve} == {"abc1234"}
    drop = json.loads((res / "converged_noise_substitution_drop.json").read_text())
    word_clean = word_beam
    word_noisy = next(float(r["bleu"]) for r in noisy if r["method"] == "word" and r["search"] == "beam5")
    word_drop = next(m for m in drop["methods"] if m["method"] == "word")
    assert word_drop["drop_per_seed"] == [pytest.approx(word_noisy - word_clean)]  # noisy - clean, from the rows
    # a study missing from the commits file is refused, naming it
    commits.write_text("study,code_commit\nonpolicy_main,abc1234\nteacher_d0.3,0a1b2c3\nstudents_1m_main,9f8e7d6\n")
    again = subprocess.run(["bash", str(EXPORT), "--out-root", str(out), "--results", str(res), "--commits", str(commits),
                            "--extra-ref", str(prep / "prep" / "raw" / "test1.en"), "--ce-study", "students_1m_main",
                            "--main-gap", str(helpers.REPO / "docs" / "results" / "main_3seeds_gap.json")],
                           capture_output=True, text=True, env=_env(), timeout=900)
    assert again.returncode == 1 and "noise_substitution_main: no code commit" in again.stderr
