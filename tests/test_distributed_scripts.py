"""Pipelines take --device / --fp16 / --bf16 / --amp / --nprocs: a real 2-process CPU run of
scripts/train_student.sh (word_kd under DDP), and the GPU commands they would run (dry run)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers

REPO = Path(__file__).resolve().parents[1]
TINY = " ".join(helpers.TINY_ARCH_ARGS[2:])  # without "--arch transformer"


def script(name, *args, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    out = subprocess.run(["bash", str(REPO / "scripts" / name), *args], capture_output=True, text=True, env=env,
                         timeout=300)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.mark.integration
def test_train_student_word_kd_in_two_cpu_processes(tmp_path):
    raw = helpers.make_synthetic_corpus(tmp_path / "raw", n_train=48, n_valid=8, n_test=8)
    data_bin = helpers.preprocess(raw, tmp_path / "bin")
    teacher = helpers.train(data_bin, tmp_path / "teacher", max_epoch=1, max_tokens=400)
    exp = tmp_path / "student"
    script("train_student.sh", "--kd", "word", "--teacher", str(teacher), "--data-bin", str(data_bin),
           "--exp-dir", str(exp), "--device", "cpu", "--nprocs", "2", "--stop-stage", "2", "--arch-args", TINY,
           "--max-epoch", "1", "--max-tokens", "200", "--extra", "--num-workers 0 -s src -t tgt")
    log, log1 = (exp / "train.log").read_text(), (exp / "train.log.rank1").read_text()
    assert "distributed init (rank 0)" in log and "distributed init (rank 1)" in log1, log[-2000:]
    assert "done training" in log and (exp / "checkpoints" / "checkpoint_last.pt").exists()


def test_pipelines_accept_gpu_mixed_precision_and_nprocs_dry_run(tmp_path):
    out = script("train_student.sh", "--kd", "hybrid", "--teacher", "t.pt", "--data-bin", "d", "--exp-dir",
                 str(tmp_path / "h"), "--device", "cuda", "--bf16", "--nprocs", "4", "--dry-run", "true").stdout
    train = next(line for line in out.splitlines() if line.startswith("+ fairseq-train"))
    assert "--bf16" in train and "--distributed-world-size 4" in train and "--cpu" not in train
    # stage 1 (hybrid trains on the distilled corpus): the teacher decodes in bf16 too (fairseq-kd-distill --bf16),
    # not in fp16 as it once was
    distill = [line for line in out.splitlines() if line.startswith("+ fairseq-kd-distill")]
    assert len(distill) == 5 and all("--bf16" in c and "--fp16" not in c for c in distill), distill
    out = script("distill.sh", "--teacher", "t.pt", "--data-bin", "d", "--out-dir", str(tmp_path / "d"),
                 "--device", "cuda", "--fp16", "--nprocs", "2", "--dry-run", "true").stdout
    cmds = [line for line in out.splitlines() if line.startswith("+ fairseq-kd-distill")]
    assert len(cmds) == 3 and all("--fp16" in c and "--cpu" not in c for c in cmds)
    assert "--part 0/2" in cmds[0] and "--part 1/2" in cmds[1] and cmds[2].endswith("--merge")
    out = script("distill.sh", "--teacher", "t.pt", "--data-bin", "d", "--out-dir", str(tmp_path / "b"),
                 "--device", "cuda", "--bf16", "--nprocs", "2", "--dry-run", "true").stdout
    cmds = [line for line in out.splitlines() if line.startswith("+ fairseq-kd-distill")]
    assert len(cmds) == 3 and all("--bf16" in c and "--fp16" not in c for c in cmds[:2])
    from fairseq_kd.cli import distill as distill_cli
    args = distill_cli.get_parser().parse_args(["--data", "d", "--teacher", "t.pt", "-o", "o", "--bf16"])
    assert args.bf16 and not args.fp16
    bad = script("train_student.sh", "--kd", "none", "--data-bin", "d", "--exp-dir", str(tmp_path / "x"),
                 "--device", "cpu", "--amp", check=False)
    assert bad.returncode == 2 and "--amp needs --device cuda" in bad.stderr
