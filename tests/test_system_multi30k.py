"""System test on real Multi30k (../shared/data): prepare -> teacher -> word-KD student -> BLEU.

Runs the real console tools in subprocesses, as a user would. Sizes are small so it fits
CI (a few minutes on 2 cores); the thresholds are far above what an untrained or broken
model scores (BLEU ~0) and below what these budgets reach.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL = ["--arch", "transformer", "--encoder-layers", "2", "--decoder-layers", "2",
         "--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "256",
         "--decoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
         "--share-all-embeddings"]
COMMON = ["--user-dir", str(REPO / "fairseq_kd"), "-s", "de", "-t", "en", "--optimizer", "adam",
          "--adam-betas", "(0.9, 0.98)", "--lr", "0.002", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100",
          "--max-tokens", "6000", "--cpu", "--num-workers", "0", "--seed", "1", "--no-epoch-checkpoints",
          "--disable-validation", "--log-format", "simple", "--log-interval", "50"]


def run(cmd, **kw):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)
    assert res.returncode == 0, f"{cmd[0]} failed:\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("m30k")
    run(["bash", REPO / "data_prep/prepare_multi30k.sh", "--data-dir", shared_data / "multi30k",
         "--out-dir", out, "--vocab-size", "4000"])
    return out


def bleu_of(prepared, ckpt, tmp_path, name):
    hyp = tmp_path / f"{name}.en"
    run(["bash", REPO / "scripts/decode.sh", "--data-bin", prepared / "bin", "--checkpoint", ckpt,
         "--out", hyp, "--spm-model", prepared / "spm.model", "--decoding", "greedy"])
    res = run([BIN / "fairseq-kd-score", "-i", hyp, "-r", prepared / "raw/test.en"])
    return json.loads(res.stdout)["bleu"]["score"]


def test_teacher_then_word_kd_student_reach_bleu(prepared, tmp_path):
    teacher = tmp_path / "teacher"
    run([BIN / "fairseq-train", prepared / "bin", "--task", "translation", *SMALL, *COMMON,
         "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
         "--max-update", "400", "--save-dir", teacher])
    t_bleu = bleu_of(prepared, teacher / "checkpoint_last.pt", tmp_path, "teacher")
    student = tmp_path / "student"
    res = run([BIN / "fairseq-train", prepared / "bin", "--task", "kd_translation", *SMALL, *COMMON,
               "--teacher-path", teacher / "checkpoint_last.pt", "--criterion", "word_kd", "--kd-alpha", "0.5",
               "--label-smoothing", "0.1", "--max-update", "150", "--save-dir", student])
    assert "kd_loss" in res.stdout + res.stderr and "teacher_nll_loss" in res.stdout + res.stderr
    s_bleu = bleu_of(prepared, student / "checkpoint_last.pt", tmp_path, "student")
    print(f"teacher BLEU {t_bleu:.2f}, word-KD student BLEU {s_bleu:.2f}")
    assert t_bleu > 10.0
    assert s_bleu > 3.0
