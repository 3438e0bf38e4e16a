"""Every bash entry point with its paths inside a directory whose name holds a space ("my exp").

The truth each test compares with is the same command in a directory without one ("myexp"): byte-identical
outputs, or (dry runs, and the tools that would train for minutes, replaced on PATH by a stub that records its
argv) the same command lines word for word once the directory is written ROOT. A script that splits a path on
its space (an unquoted expansion, a flag string split on every blank) gives other words, or stops.

Flag strings (train_student.sh --extra / --arch-args, distill.sh --extra, main.sh and the recipes'
--teacher-args) are split as a shell would (quotes group, as fairseq-kd-study's --train-args): a path with a
space goes in quoted, ``shlex.quote(path)`` here, which leaves a path without one as it is.
"""
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers
from tests.test_prep_scripts import write_test_xml, write_train_tags, write_wmt_miniature

REPO = Path(__file__).resolve().parents[1]
NAMES = ("myexp", "my exp")  # the truth first, then the same with a space
TINY_ARCH = " ".join(helpers.TINY_ARCH_ARGS[2:])  # the tiny transformer's flags but --arch


def env_with(**extra):
    """The tests' interpreter for the scripts (PYTHON, and its bin first on PATH: fairseq-kd-* tools)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHON": sys.executable, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(script, *args, env=None):
    (proc,) = run_side_by_side([(script, args, env)])
    return proc


def run_side_by_side(jobs):
    """Run (script, args, env) jobs at once (the two directories' runs of a test: half the wall time on 2
    cores); each must succeed. Returns (returncode, stdout, stderr) objects in order."""
    procs = [subprocess.Popen(["bash", str(REPO / script), *map(str, args)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env or env_with()) for script, args, env in jobs]
    done = []
    for (script, _, _), proc in zip(jobs, procs):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{err[-3000:]}"
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def commands(text, root):
    """The dry-run command lines ("+ cmd args", shell-quoted) as word lists, ROOT for the directory."""
    return [[w.replace(str(root), "ROOT") for w in shlex.split(line[2:])]
            for line in text.splitlines() if line.startswith("+ ")]


def flag(cmd, name):
    return cmd[cmd.index(name) + 1]


def roots(tmp_path):
    """The test's two directories, made: the truth's, then the one whose name holds a space."""
    for name in NAMES:
        (tmp_path / name).mkdir(exist_ok=True)
    return [tmp_path / name for name in NAMES]


def make_stubs(folder: Path, *tools):
    """Executables that append their name and argv (one line of shell words) to $STUB_LOG, and print a line
    main.sh's teacher log filter keeps ("| train_inner |"). A shell script that runs this Python, not a
    "#!python" line: the kernel splits a shebang at its first blank, so a venv under a path with a space
    ("/home/ann/My Projects/fairseq-kd/.venv") cannot be one."""
    folder.mkdir(parents=True, exist_ok=True)
    code = ("import os, shlex, sys\n"
            "with open(os.environ['STUB_LOG'], 'a') as f:\n"
            "    f.write(shlex.join([os.path.basename(sys.argv[1])] + sys.argv[2:]) + '\\n')\n"
            "print('stub | train_inner | done')\n")
    for tool in tools:
        path = folder / tool
        path.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(code)} "$0" "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder


def stub_calls(log: Path, root):
    return [[w.replace(str(root), "ROOT") for w in shlex.split(line)] for line in log.read_text().splitlines()]


def touch(*paths):
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")


# ---- decode.sh: a real decode of the tiny teacher ------------------------------------------------------

@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory):
    """A copy-task teacher of a few epochs (its output need not be good, only deterministic), its data with
    dictionaries renamed to sentencepiece word pieces (as tests/test_decode.py's) and a word model."""
    from fairseq_kd.prep import spm as kd_spm

    root = tmp_path_factory.mktemp("small_teacher")
    raw = helpers.make_synthetic_corpus(root / "raw", n_train=200, n_valid=10, n_test=12)
    data_bin = helpers.preprocess(raw, root / "bin")
    helpers.train(data_bin, root / "teacher", max_epoch=1, max_tokens=500)
    for lang in ("src", "tgt"):
        d = data_bin / f"dict.{lang}.txt"
        d.write_text("".join(f"\u2581{line}\n" if line.startswith("w") else f"{line}\n"
                             for line in d.read_text().splitlines()))
    kd_spm.train_spm([raw / "train.src", raw / "train.tgt"], str(root / "spm"),
                     kd_spm.SpmConfig(vocab_size=16, model_type="word", num_threads=1))
    return root


@pytest.mark.integration
def test_decode_sh_input_and_tmpdir_with_a_space(small_teacher, tmp_path):
    jobs = []
    for root in roots(tmp_path):
        shutil.copytree(small_teacher, root / "teacher files")
        t = root / "teacher files"
        (root / "tmp dir").mkdir()
        # --input: encoded with the model, binarized into TMPDIR, decoded, detokenized
        jobs.append(("scripts/decode.sh", ["--data-bin", t / "bin", "--checkpoint", t / "teacher/checkpoint_last.pt",
                     "--input", t / "raw/test.src", "--spm-model", t / "spm.model", "--out", root / "out dir/hyp.tgt",
                     "--src", "src", "--tgt", "tgt", "--decoding", "greedy", "--allow-renamed-dicts", "true"],
                     env_with(TMPDIR=root / "tmp dir")))
    run_side_by_side(jobs)
    outs = [[(root / "out dir" / name).read_bytes() for name in ("hyp.tgt", "hyp.tgt.pieces")]
            for root in roots(tmp_path)]
    assert outs[1] == outs[0]
    assert len(outs[0][0].decode().splitlines()) == 12  # one hypothesis per input line


# ---- train_student.sh / distill.sh: dry runs ------------------------------------------------------------

def test_train_student_paths_and_flag_strings_with_a_space(tmp_path):
    """--kd hybrid: stage 1 (distill.sh), 2 (fairseq-train) and 3 (decode.sh, fairseq-kd-score), every path
    under ROOT, and paths inside --arch-args and --extra."""
    jobs = []
    for root in roots(tmp_path):
        touch(root / "data/bin/test.de-en.de.idx", root / "data/raw/test.en", root / "data/spm.model")
        jobs.append(("scripts/train_student.sh", [
            "--kd", "hybrid", "--teacher", root / "teacher/checkpoint_best.pt", "--data-bin", root / "data/bin",
            "--exp-dir", root / "student", "--spm-model", root / "data/spm.model", "--device", "cpu",
            "--arch-args", f"{TINY_ARCH} --encoder-embed-path {shlex.quote(str(root / 'emb.txt'))}",
            "--extra", f"-s de -t en --teacher-cache {shlex.quote(str(root / 'cache'))}", "--dry-run", "true"], None))
    got = [commands(out.stdout, root) for out, root in zip(run_side_by_side(jobs), roots(tmp_path))]
    assert got[1] == got[0]
    tools = [c[0] for c in got[0]]
    assert tools == ["fairseq-kd-distill", "fairseq-train", "bash", "fairseq-kd-score"], tools
    distill, train, decode, score = got[0]
    assert flag(train, "--teacher-cache") == "ROOT/cache" and flag(train, "--encoder-embed-path") == "ROOT/emb.txt"
    assert train[1] == "ROOT/student/distilled/bin"
    assert flag(train, "--teacher-path") == "ROOT/teacher/checkpoint_best.pt"
    assert flag(distill, "--output-dir") == "ROOT/student/distilled"
    assert flag(distill, "--spm-model") == "ROOT/data/spm.model"
    assert flag(decode, "--data-bin") == "ROOT/data/bin" and flag(score, "-r") == "ROOT/data/raw/test.en"


def test_distill_paths_and_extra_with_a_space(tmp_path):
    got = []
    for root in roots(tmp_path):
        out = run("scripts/distill.sh", "--teacher", root / "t/checkpoint_best.pt", "--data-bin", root / "data/bin",
                  "--out-dir", root / "out/distilled", "--spm-model", root / "data/spm.model", "--device", "cpu",
                  "--nprocs", 2, "--extra", f"--source-text {shlex.quote(str(root / 'data/raw/train.de'))}",
                  "--dry-run", "true")
        got.append(commands(out.stdout, root))
    assert got[1] == got[0]
    assert len(got[0]) == 3 and all(flag(c, "--source-text") == "ROOT/data/raw/train.de" for c in got[0])
    assert all(flag(c, "--output-dir") == "ROOT/out/distilled" for c in got[0])


def test_an_unbalanced_quote_in_a_flag_string_is_a_usage_error(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "scripts/distill.sh"), "--teacher", "t.pt", "--data-bin", "d",
                           "--out-dir", str(tmp_path / "o"), "--device", "cpu", "--dry-run", "true",
                           "--extra", "--source-text '/my exp/train.de"],
                          capture_output=True, text=True, env=env_with(), timeout=60)
    assert proc.returncode == 2 and "--extra" in proc.stderr and "unbalanced quote" in proc.stderr, proc.stderr


def test_recipe_students_read_a_cache_under_a_work_dir_with_a_space(tmp_path):
    """The recipes put WORK_DIR/cache inside train_student.sh's --extra (word students)."""
    jobs = [("scripts/recipes/iwslt14_deen.sh", [
        "--work-dir", root / "work", "--dry-run", "true", "--stage", 1, "--device", "cpu",
        "--students", "transformer_relu_9m", "--methods", "word",
        "--teacher-args", f"--max-tokens 4096 --encoder-embed-path {shlex.quote(str(root / 'emb.txt'))}"], None)
        for root in roots(tmp_path)]
    got = [commands(out.stdout, root) for out, root in zip(run_side_by_side(jobs), roots(tmp_path))]
    assert got[1] == got[0]
    teacher = next(c for c in got[0] if c[0] == "fairseq-train" and "--eval-bleu" in c)
    student = next(c for c in got[0] if c[0] == "fairseq-train" and "--teacher-cache" in c)
    assert flag(teacher, "--encoder-embed-path") == "ROOT/emb.txt"
    assert flag(student, "--teacher-cache") == "ROOT/work/cache" and student[1] == "ROOT/work/data/bin"


# ---- scripts that would train for minutes: the tools they call replaced by stubs ------------------------

def test_converged_study_finds_the_stage_1_teacher_under_an_out_root_with_a_space(tmp_path):
    stubs = make_stubs(tmp_path / "stubs", "fairseq-kd-study")
    got = []
    for root in roots(tmp_path):
        prep = root / "m30k"
        touch(prep / "bin/dict.de.txt", prep / "raw/test.en", prep / "raw/test1.en", prep / "spm.model")
        teacher_dir = root / "converged/teacher_d0.3"
        touch(teacher_dir / "cells/none_seed1/checkpoints/checkpoint_best.pt", teacher_dir / "results.csv")
        log = root / "calls.txt"
        env = env_with(STUB_LOG=log, PATH=f"{stubs}{os.pathsep}{env_with()['PATH']}")
        run("scripts/converged_study.sh", "--prep", prep, "--out-root", root / "converged", "--stage", 2,
            "--stop-stage", 2, "--methods", "word", "--seeds", 1, env=env)
        got.append(stub_calls(log, root))
    assert got[1] == got[0]
    (study,) = got[0]
    assert flag(study, "--teacher") == "ROOT/converged/teacher_d0.3/cells/none_seed1/checkpoints/checkpoint_best.pt"
    assert flag(study, "--out-dir") == "ROOT/converged/students_1m_main"


def test_main_sh_teacher_and_study_under_a_work_dir_with_a_space(tmp_path):
    """Stage 2 (the teacher's fairseq-train, --teacher-args with a path) and stage 4 (fairseq-kd-study)."""
    stubs = make_stubs(tmp_path / "stubs", "fairseq-train", "fairseq-kd-study")
    venv = tmp_path / "venv"  # FAIRSEQ_KD_VENV: an activate that puts the stubs first
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/activate").write_text(f'PATH="{stubs}:{Path(sys.executable).parent}:$PATH"\n')
    got = []
    for root in roots(tmp_path):
        log = root / "calls.txt"
        env = env_with(STUB_LOG=log, FAIRSEQ_KD_VENV=venv)
        common = ["--work-dir", root / "main", "--device", "cpu", "--preset", "quick",
                  "--teacher-args", f"--arch transformer {TINY_ARCH} --encoder-embed-path "
                                    f"{shlex.quote(str(root / 'emb.txt'))}"]
        for stage in (2, 4):
            run("scripts/main.sh", *common, "--stage", stage, "--stop-stage", stage, env=env)
        got.append(stub_calls(log, root))
    assert got[1] == got[0]
    train, study = got[0]
    assert train[:2] == ["fairseq-train", "ROOT/main/multi30k/bin"]
    assert flag(train, "--encoder-embed-path") == "ROOT/emb.txt" and flag(train, "--save-dir") == "ROOT/main/teacher"
    assert flag(study, "--teacher") == "ROOT/main/teacher/checkpoint_last.pt"
    assert flag(study, "--test-ref") == "ROOT/main/multi30k/raw/test.en"


def test_run_study_under_a_directory_with_a_space(tmp_path):
    stubs = make_stubs(tmp_path / "stubs", "fairseq-kd-study")
    got = []
    for root in roots(tmp_path):
        log = root / "calls.txt"
        env = env_with(STUB_LOG=log, PATH=f"{stubs}{os.pathsep}{env_with()['PATH']}")
        run("scripts/run_study.sh", "--data", root / "m30k/bin", "--test-ref", root / "m30k/raw/test.en",
            "--teacher", root / "t/checkpoint_best.pt", "--spm-model", root / "m30k/spm.model",
            "--out-dir", root / "study", "--methods", "none word", "--stop-stage", 1,
            "--train-args", f"--dropout 0.1 --encoder-embed-path '{root / 'emb.txt'}'", env=env)  # quoted in both
        got.append(stub_calls(log, root))
    assert got[1] == got[0]
    (study,) = got[0]
    assert flag(study, "--out-dir") == "ROOT/study" and flag(study, "--teacher") == "ROOT/t/checkpoint_best.pt"
    assert shlex.split(flag(study, "--train-args"))[-1] == "ROOT/emb.txt"  # split by fairseq-kd-study (shlex)


# ---- data_prep: real runs on miniature local inputs ------------------------------------------------------

def outputs(folder: Path):
    """What a data script made, by relative path (not the logs, stamps and lock, which name the paths; not
    spm.model, whose training spec records them: spm.vocab and the pieces are the model's output)."""
    skip = {".fairseq-kd.lock", ".prep_settings", ".inputs", "preprocess.log", "spm.model"}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip}


@pytest.mark.integration
def test_prepare_multi30k_with_a_space(tmp_path):
    jobs, outs = [], ("m30k out", "m30k out 100%s")  # and a printf directive in the second's name
    for root, out in zip(roots(tmp_path), outs):
        raw = root / "multi30k raw"
        for name, n, seed in (("train", 120, 1), ("val", 10, 2), ("test_2016_flickr", 10, 3)):
            helpers.write_parallel(raw, name, helpers.synthetic_pairs(n, seed), src="de", tgt="en")
        jobs.append(("data_prep/prepare_multi30k.sh",
                     ["--data-dir", raw, "--out-dir", root / out, "--vocab-size", 30, "--workers", 1], None))
    run_side_by_side(jobs)
    got = [outputs(root / out) for root, out in zip(roots(tmp_path), outs)]
    assert got[1] == got[0]
    assert {"raw/test.en", "spm.vocab", "spm/train.de", "bin/dict.de.txt", "bin/test.de-en.en.bin"} <= set(got[0])


@pytest.mark.integration
def test_prepare_iwslt14_and_wmt14_stage_1_with_a_space(tmp_path):
    got = []
    for root in roots(tmp_path):
        for sub in ("iwslt orig", "iwslt test", "wmt orig"):
            (root / sub).mkdir()
        write_train_tags(root / "iwslt orig")
        write_test_xml(root / "iwslt test")
        run("data_prep/prepare_iwslt14.sh", "--data-dir", root / "iwslt orig", "--test-dir", root / "iwslt test",
            "--out-dir", root / "iwslt out", "--stop-stage", 1)
        corpora = write_wmt_miniature(root / "wmt orig", with_valid=True)
        run("data_prep/prepare_wmt14.sh", "--out-dir", root / "wmt out", "--train-corpora",
            ",".join(str(c[0]) for c in corpora), "--test-dir", root / "wmt orig", "--valid-dir", root / "wmt orig",
            "--stop-stage", 1)
        got.append((outputs(root / "iwslt out"), outputs(root / "wmt out")))
    assert got[1] == got[0]
    assert {"raw/train.de", "raw/valid.en", "raw/test.de"} <= set(got[0][0]) & set(got[0][1])
