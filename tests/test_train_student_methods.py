"""scripts/train_student.sh takes its methods from the study's METHOD_SPECS (one mapping): dry runs."""
import os
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
