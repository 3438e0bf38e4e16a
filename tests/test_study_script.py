"""scripts/run_study.sh: usage errors exit 2; a one-cell grid end to end, then a no-op rerun."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers
from tests.test_study import TINY_TRAIN_ARGS

SCRIPT = helpers.REPO / "scripts" / "run_study.sh"


def run(args, **kw):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, **kw)


@pytest.mark.parametrize("args,needle", [
    (["--bogus", "1"], "unknown option --bogus"),
    (["--test-ref", "x"], "--data is required"),
    (["--data", "d", "--test-ref", "r", "--stage", "one"], "stages are integers"),
    (["--data"], "needs a value"),
])
def test_usage_errors_exit_2(args, needle):
    proc = run(args)
    assert proc.returncode == 2 and needle in proc.stderr


@pytest.mark.parametrize("value, passed", [("true", True), ("1", True), ("false", False), ("0", False)])
def test_in_process_takes_true_1_false_0(tmp_path, value, passed):
    """--in-process 1 (or yes) used to be silently false: only the exact word true passed --in-process."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "fairseq-kd-study").write_text(f'#!/usr/bin/env bash\necho "$@" > {tmp_path / "argv"}\n')
    (fake / "fairseq-kd-study").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(SCRIPT), "--data", "d", "--test-ref", "r", "--out-dir", str(tmp_path / "s"),
                           "--stop-stage", "1", "--in-process", value], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ("--in-process" in (tmp_path / "argv").read_text().split()) == passed


@pytest.mark.parametrize("value", ["yes", "maybe", "TRUE", ""])
def test_in_process_other_than_a_boolean_is_a_usage_error(value):
    proc = run(["--data", "d", "--test-ref", "r", "--in-process", value])
    assert proc.returncode == 2 and "--in-process" in proc.stderr, proc.stderr


@pytest.mark.integration
def test_one_cell_study_and_report_then_rerun_is_a_no_op(tmp_path):
    raw = helpers.make_synthetic_corpus(tmp_path / "raw", n_train=160, n_valid=16, n_test=20)
    data = helpers.preprocess(raw, tmp_path / "bin")
    out = tmp_path / "study"
    args = ["--data", str(data), "--src", "src", "--tgt", "tgt", "--test-ref", str(raw / "test.tgt"),
            "--out-dir", str(out), "--methods", "none", "--noise", "0.1", "--lrs", "0.005", "--max-update", "10",
            "--warmup-updates", "4", "--validate-interval-updates", "5", "--max-tokens", "1000", "--beam", "1",
            "--bpe", "none", "--train-args", TINY_TRAIN_ARGS, "--in-process", "true"]
    first = run(args, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "| none | 0.1 | transformer |" in first.stdout  # the table is printed
    assert len((out / "results.csv").read_text().splitlines()) == 2
    assert sorted(p.name for p in (out / "report").glob("*.png")) == [
        "bleu_vs_noise.png", "bleu_vs_params.png", "bleu_vs_updates.png"]
    second = run(args, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert '"skipped": 1' in second.stdout and "stage 2:" in second.stderr and "skipped" in second.stderr
    assert second.stdout.endswith(first.stdout.split("}\n")[-1])  # same table


@pytest.mark.parametrize("args,needle", [
    (["--preset", "bogus"], "--preset must be full or quick"),
    (["--nprocs", "0"], "--nprocs must be a positive integer"),
    (["--jobs", "0"], "--jobs must be a positive integer"),
    (["--device", "tpu"], "--device must be auto, cpu or cuda"),
    (["--fp16", "--device", "cpu", "--stage", "1", "--stop-stage", "0"], "--fp16 needs --device cuda"),
])
def test_main_job_usage_errors_exit_2(args, needle, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(helpers.REPO / "scripts" / "main.sh"), "--work-dir", str(tmp_path / "w"), *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr


CONVERGED = helpers.REPO / "scripts" / "converged_study.sh"


@pytest.mark.parametrize("args,code,needle", [
    (["--bogus", "1"], 2, "unknown option --bogus"),
    (["--size", "3m"], 2, "--size must be 1m or 7m"),
    (["--noise-op", "blur"], 2, "--noise-op"),
    (["--stage", "two"], 2, "stages are integers"),
    (["--seeds"], 2, "needs a value"),
    (["--prep", "/nonexistent"], 1, "/nonexistent/bin/dict.de.txt not found"),
])
def test_converged_study_usage_errors(args, code, needle):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(CONVERGED), *args], capture_output=True, text=True, env=env)
    assert proc.returncode == code and needle in proc.stderr, proc.stderr


def test_converged_study_needs_the_teacher_or_the_student_init(tmp_path):
    prep = tmp_path / "prep"
    for f in ("bin/dict.de.txt", "raw/test.en", "raw/test1.en", "spm.model"):
        (prep / f).parent.mkdir(parents=True, exist_ok=True)
        (prep / f).write_text("")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    base = ["bash", str(CONVERGED), "--prep", str(prep), "--out-root", str(tmp_path / "out")]
    proc = subprocess.run(base + ["--stage", "2", "--stop-stage", "2"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "no converged teacher" in proc.stderr and "--teacher" in proc.stderr
    proc = subprocess.run(base + ["--stage", "1"], capture_output=True, text=True, env=env)  # before hours of work
    assert proc.returncode == 2 and "needs --student-init" in proc.stderr
    assert not (tmp_path / "out").exists()
