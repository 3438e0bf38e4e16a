"""scripts/train_student.sh takes its methods from the study's METHOD_SPECS (one mapping): dry runs."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_kd.study.config import METHOD_SPECS

REPO = Path(__file__).resolve().parents[1]


def dry_run(tmp_path, method, *extra):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", str(REPO / "scripts" / "train_student.sh"), "--kd", method, "--data-bin", "d",
                           "--exp-dir", str(tmp_path / method), "--device", "cpu", "--stage", "2", "--stop-stage", "2",
                           "--dry-run", "true", *extra], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("method", ["none", "hybrid", "hybrid_online"])
def test_the_scripts_training_command_is_the_methods_spec(tmp_path, method):
    spec = METHOD_SPECS[method]
    out = dry_run(tmp_path, method, "--teacher", "t.pt")
    assert out.returncode == 0, out.stderr[-2000:]
    train = next(line for line in out.stdout.splitlines() if line.startswith("+ fairseq-train")).split()
    assert train[train.index("--criterion") + 1] == spec["criterion"]
    assert train[train.index("--task") + 1] == ("kd_translation" if spec["teacher"] else "translation")
    assert (train[2] == "d") == (spec["data"] == "corpus")  # else the distilled corpus of stage 1
    flags = spec.get("flags", [])
    assert any(train[i:i + len(flags)] == flags for i in range(len(train))), train


def test_unknown_method_is_refused(tmp_path):
    out = dry_run(tmp_path, "hybrid-online")
    assert out.returncode == 2 and "hybrid_online" in out.stderr and "Traceback" not in out.stderr


def train_command(out):
    assert out.returncode == 0, out.stderr[-2000:]
    return next(line for line in out.stdout.splitlines() if line.startswith("+ fairseq-train")).split()


@pytest.mark.parametrize("method", ["hybrid", "hybrid_online"])
def test_hybrid_gate_defaults_to_the_criterions_fixed_and_learned_is_a_choice(tmp_path, method):
    """fairseq-kd-study's hybrid (and hybrid_kd's default) is the fixed gate; the script used to pass learned."""
    train = train_command(dry_run(tmp_path, method, "--teacher", "t.pt"))
    assert train[train.index("--hybrid-gate") + 1] == "fixed"
    train = train_command(dry_run(tmp_path, method, "--teacher", "t.pt", "--hybrid-gate", "learned"))
    assert train[train.index("--hybrid-gate") + 1] == "learned"


@pytest.mark.parametrize("method", ["seq_tnoisy", "word_tnoisy"])
def test_tnoisy_methods_are_refused_naming_the_study(tmp_path, method):
    """train_student.sh adds no source noise: seq_tnoisy silently trained plain seq."""
    out = dry_run(tmp_path, method, "--teacher", "t.pt", "--stage", "1")
    assert out.returncode == 2, out.stdout[-2000:]
    assert "fairseq-kd-study" in out.stderr and method in out.stderr and "Traceback" not in out.stderr
    assert "+ " not in out.stdout  # nothing would have run


def test_students_are_decoded_with_the_teachers_length_limits(tmp_path):
    """Stage 3 used fairseq-generate's default max length (200 tokens, no -a/-b) while the recipes' teacher is
    decoded with --max-len-a 1.2 --max-len-b 10."""
    recipe = (REPO / "scripts" / "recipes" / "common.sh").read_text()
    teacher = {k: re.search(rf"^{k}=(\S+)", recipe, re.M).group(1) for k in ("max_len_a", "max_len_b")}
    assert teacher == {"max_len_a": "1.2", "max_len_b": "10"}
    evaluate = recipe.split("\nevaluate() {", 1)[1].split("\n}", 1)[0]
    assert '--max-len-a "${max_len_a}" --max-len-b "${max_len_b}"' in evaluate
    out = dry_run(tmp_path, "none", "--stage", "3", "--stop-stage", "3")
    assert out.returncode == 0, out.stderr[-2000:]
    gen = next(line for line in out.stdout.splitlines() if line.startswith("+ fairseq-generate")).split()
    assert gen[gen.index("--max-len-a") + 1] == teacher["max_len_a"]
    assert gen[gen.index("--max-len-b") + 1] == teacher["max_len_b"]
    out = dry_run(tmp_path, "none", "--stage", "3", "--stop-stage", "3", "--gen-max-len-a", "2", "--gen-max-len-b", "5")
    gen = next(line for line in out.stdout.splitlines() if line.startswith("+ fairseq-generate")).split()
    assert gen[gen.index("--max-len-a") + 1] == "2" and gen[gen.index("--max-len-b") + 1] == "5"
