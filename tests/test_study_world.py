"""One cell, one world: a study cell gives what it gives alone, whatever ran before it in the process.

Cell A (lr 0.01) reaches a lower validation loss than cell B (lr 0.0005). Run in one process
before the fix, fairseq's ``checkpoint_utils.save_checkpoint.best`` kept A's loss: B logged
A's ``best_loss`` and never wrote ``checkpoint_best.pt``. Here B after A (in-process) is
compared with B alone in a new Python process: the same training losses, validation curve,
``checkpoint_best.pt`` and BLEU.
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairseq_kd import study as S
from fairseq_kd.study import world
from tests import helpers
from tests.test_study import TINY_TRAIN_ARGS, make_cfg

pytestmark = pytest.mark.integration

B_LR = 0.0005


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("world_corpus")
    raw = helpers.make_synthetic_corpus(root / "raw", n_train=200, n_valid=20, n_test=30)
    return raw, helpers.preprocess(raw, root / "bin")


def cell_b(out: Path, results: str) -> dict:
    row = next(r for r in csv.DictReader(open(results)) if float(r["lr"]) == B_LR)
    cdir = out / "cells" / row["cell"]
    info = json.loads((cdir / "train.json").read_text())
    return {"row": row, "info": info, "best": cdir / "checkpoints" / "checkpoint_best.pt"}


def same_checkpoint(a: Path, b: Path) -> None:
    sa, sb = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert sa["extra_state"]["best"] == sb["extra_state"]["best"]
    assert sa["optimizer_history"][-1]["num_updates"] == sb["optimizer_history"][-1]["num_updates"]


def test_fresh_world_forgets_the_best_checkpoint_loss():
    from fairseq import checkpoint_utils
    from fairseq.logging import metrics

    checkpoint_utils.save_checkpoint.best = 0.5
    with metrics.aggregate("train"):
        metrics.log_scalar("loss", 3.0)
    torch.manual_seed(5)
    world.fresh_world()
    assert not hasattr(checkpoint_utils.save_checkpoint, "best")
    with pytest.raises(KeyError):  # no "train" aggregator any more
        metrics.get_smoothed_values("train")
    assert torch.initial_seed() == world.TORCH_DEFAULT_SEED


def test_cell_after_another_equals_the_cell_alone(corpus, tmp_path):
    train_args = TINY_TRAIN_ARGS + " --log-interval 5"  # a train_inner loss record every 5 updates
    both = make_cfg(corpus, tmp_path / "both", noise=[0.0], lrs=[0.01, B_LR], train_args=train_args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        S.Study(both, runner=S.run_inprocess).run(progress=False)
    finally:
        torch.set_num_threads(threads)

    raw, data = corpus
    alone_dir = tmp_path / "alone"
    cmd = [sys.executable, "-m", "fairseq_kd.cli.study", "--data", str(data), "-s", "src", "-t", "tgt",
           "--test-ref", str(raw / "test.tgt"), "--out-dir", str(alone_dir), "--methods", "none", "--noise", "0",
           "--archs", "transformer", "--lrs", str(B_LR), "--seeds", "1", "--max-update", "20",
           "--warmup-updates", "5", "--validate-interval-updates", "10", "--max-tokens", "1000", "--beam", "1",
           "--bpe", "none", "--train-args", train_args, "--device", "cpu", "--in-process", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=helpers.REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    after = cell_b(tmp_path / "both", str(tmp_path / "both" / "results.csv"))
    alone = cell_b(alone_dir, str(alone_dir / "results.csv"))
    assert len(alone["info"]["losses"]) == 4 and alone["info"]["losses"] == after["info"]["losses"]
    assert alone["info"]["curve"] == after["info"]["curve"]
    assert after["best"].exists() and alone["best"].exists()
    same_checkpoint(after["best"], alone["best"])
    assert after["row"]["bleu"] == alone["row"]["bleu"] and after["row"]["chrf"] == alone["row"]["chrf"]
    # the premise: cell A did reach a lower validation loss than B (else nothing could leak)
    a_cell = next(r for r in csv.DictReader(open(tmp_path / "both" / "results.csv")) if float(r["lr"]) == 0.01)
    a_info = json.loads((tmp_path / "both" / "cells" / a_cell["cell"] / "train.json").read_text())
    assert min(p["valid_loss"] for _, p in a_info["curve"]) < min(p["valid_loss"] for _, p in alone["info"]["curve"])
