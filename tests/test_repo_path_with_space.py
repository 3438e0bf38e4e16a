"""The checkout itself, and its venv, under a directory whose name holds a space ("/home/ann/My Projects").

tests/test_paths_with_spaces.py puts the scripts' --out-dir / --work-dir / --data-dir under "my exp"; here the
repository is the copy (its tracked files, as in this working tree) at "<tmp>/my repo/fairseq-kd" and the
environment is this suite's venv seen through the link "<tmp>/my venv" (FAIRSEQ_KD_VENV, PYTHON and PATH), so
every script path, --user-dir, PYTHONPATH, sys.executable and console tool holds a space. The truth is the same
command from this checkout: the same output once each checkout's path is written REPO (and the venv's VENV).
Console tools in such a venv start with "#!/bin/sh" and an exec of the quoted interpreter (pip's trampoline:
the kernel splits a "#!" line at its first blank), and a test's own stub tools must do the same.
"""
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


@pytest.fixture(scope="module")
def spaced(tmp_path_factory):
    """(copy of the checkout, the venv through a link), both under names with a space."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the suite does not run in a venv (scripts/setup_env.sh makes .venv)")
    root = tmp_path_factory.mktemp("spaced")
    repo = root / "my repo" / "fairseq-kd"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file() and not name.startswith(("exp/", "docs/results/")):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    venv = root / "my venv"
    venv.symlink_to(VENV, target_is_directory=True)
    return repo, venv


def env_for(venv: Path, repo: Path, **extra):
    env = {**os.environ, "PYTHON": str(venv / "bin/python"), "FAIRSEQ_KD_VENV": str(venv), "OMP_NUM_THREADS": "1",
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def bash(repo: Path, venv: Path, script: str, *args, **extra):
    proc = subprocess.run(["bash", str(repo / script), *map(str, args)], capture_output=True, text=True,
                          env=env_for(venv, repo, **extra), cwd=repo, timeout=300)
    assert proc.returncode == 0, f"{script} from {repo} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def both(spaced):
    """(repo, venv) pairs: this checkout with its venv (the truth), then the copy with the linked venv."""
    return [(REPO, VENV), spaced]


def venv_ready() -> bool:
    """Whether scripts/setup_env.sh would find this venv's stamp current and exit at once (its stack_id, CPU)."""
    stamp = VENV / ".fairseq_kd_stack"
    want = hashlib.sha256(b"".join((REPO / f).read_bytes() for f in ("requirements.txt", "requirements-test.txt",
                                                                     "setup.py"))).hexdigest()
    return os.environ.get("FAIRSEQ_KD_TORCH", "cpu") == "cpu" and stamp.is_file() and stamp.read_text().strip() == want


def words(text: str, repo: Path, venv: Path):
    """The dry-run command lines ("+ cmd args") as word lists, REPO / VENV for the checkout and the venv."""
    out = []
    for line in text.splitlines():
        if line.startswith("+ "):
            out.append([w.replace(str(venv), "VENV").replace(str(repo), "REPO") for w in shlex.split(line[2:])])
    return out


def test_setup_env_help_and_dry_runs_from_a_checkout_with_a_space(spaced, tmp_path):
    got = []
    for repo, venv in both(spaced):
        if venv_ready():  # its stamp check only (never an install into this suite's venv from a copy)
            assert not bash(repo, venv, "scripts/setup_env.sh", venv).stderr
        helptext = bash(repo, venv, "scripts/main.sh", "--help").stdout
        out = tmp_path / repo.parent.name.replace(" ", "_")
        student = bash(repo, venv, "scripts/train_student.sh", "--kd", "word", "--teacher",
                       out / "t/checkpoint_best.pt", "--data-bin", out / "bin", "--exp-dir", out / "student",
                       "--device", "cpu", "--arch-args", " ".join(helpers.TINY_ARCH_ARGS[2:]), "--stop-stage", 2,
                       "--dry-run", "true")
        distill = bash(repo, venv, "scripts/distill.sh", "--teacher", out / "t/checkpoint_best.pt", "--data-bin",
                       out / "bin", "--out-dir", out / "distilled", "--device", "cpu", "--dry-run", "true")
        got.append((helptext, [[w.replace(str(out), "OUT") for w in c]
                               for c in words(student.stdout + distill.stdout, repo, venv)]))
    assert got[1] == got[0]
    train = next(c for c in got[0][1] if c[0] == "fairseq-train")
    assert train[train.index("--user-dir") + 1] == "REPO/fairseq_kd"


def test_the_path_tests_pass_from_a_checkout_with_a_space(spaced):
    """tests/test_paths_with_spaces.py's stub tools, run by the copy's scripts with the linked venv's Python
    (sys.executable holds a space): a "#!<python>" stub line would not start ("cannot execute")."""
    repo, venv = spaced
    proc = subprocess.run([str(venv / "bin/python"), "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider",
                           "-q", "tests/test_paths_with_spaces.py", "-k", "converged_study or main_sh or run_study"],
                          capture_output=True, text=True, cwd=repo, env=env_for(venv, repo), timeout=300)
    assert proc.returncode == 0 and "3 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


COMPILE_CHECK = """
import logging, torch
logging.basicConfig(level=logging.WARNING)
import torch._dynamo
from fairseq_kd.losses import fused
g = torch.Generator().manual_seed(0)
logits = torch.randn(3, 5, 11, generator=g)
t = torch.log_softmax(torch.randn(3, 5, 11, generator=g), -1)
got = fused.tempered_kl_full(t, logits, 2.0)
torch.testing.assert_close(got, fused.kl_full_logits(t, logits, 2.0))
print("blank:", fused.blank_link_dir(), "| failed:", sorted(fused._FAILED), "| compiled:",
      torch._dynamo.utils.counters["stats"]["unique_graphs"])
"""


def test_compiled_losses_are_skipped_with_a_message_under_a_venv_with_a_space(spaced):
    """Inductor's CPU build cannot link torch under a path with a blank (its -L flags are unquoted): the KD
    losses take the eager route at once, with one warning naming the path, instead of tracing and failing
    in g++ with "cannot find -ltorch"; from this checkout (no blank) the route is compiled as before."""
    repo, venv = spaced
    proc = subprocess.run([str(venv / "bin/python"), "-c", COMPILE_CHECK], capture_output=True, text=True,
                          cwd=repo, env=env_for(venv, repo, FAIRSEQ_KD_COMPILE="auto"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lib = f"{venv}/lib/python3.{sys.version_info.minor}/site-packages/torch/lib"
    assert proc.stdout.strip() == f"blank: {lib} | failed: ['full'] | compiled: 0", proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if "torch.compile" in line]
    assert len(warnings) == 1 and repr(lib) in warnings[0] and "without spaces" in warnings[0], proc.stderr
    assert "CppCompileError" not in proc.stderr and "cannot find -ltorch" not in proc.stderr
