"""Every KD criterion under fairseq's distributed training (2 CPU processes, gloo).

Truth: 2 workers with B sentences each must train exactly like 1 worker that sees the same
2B sentences per update (``--update-freq 2``): same logged losses update by update and
same parameters after 3 updates (to float tolerance). This covers word_kd (online, top-k,
cache; selection none / batch / global with the shared, all-gathered queue), seq_kd (memo)
and hybrid_kd (fixed and learned gate: a criterion with a parameter, which fairseq wraps
in DDP). All runs share one pair of worker processes (one process start per rank).
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import helpers

REPO = Path(__file__).resolve().parents[1]
TIMING = {"wps", "ups", "wpb_s", "wall", "train_wall", "gb_free", "cuda_gb_allocated", "cuda_gb_reserved",
          "cuda_gb_free"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(spec_path: Path, world_size: int, out: Path, env) -> list:
    port = free_port()
    return [subprocess.Popen([sys.executable, "-m", "tests.distributed_worker", str(spec_path), str(rank),
                              str(world_size), str(port), str(out)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for rank in range(world_size)]


def wait_all(procs, timeout=240):
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]


def train_args(data_bin, teacher) -> list:
    """fairseq-train options every equality run shares: tiny model, batches of 4, 3 updates, JSON logs."""
    return [str(data_bin), "--user-dir", helpers.USER_DIR, "--task", "kd_translation",
            "--source-lang", "src", "--target-lang", "tgt", "--teacher-path", str(teacher),
            *helpers.TINY_ARCH_ARGS, "--optimizer", "adam", "--lr", "5e-3", "--lr-scheduler", "fixed",
            "--batch-size", "4", "--required-batch-size-multiple", "1", "--max-update", "3",
            "--disable-validation", "--no-epoch-checkpoints", "--no-progress-bar", "--log-format", "json",
            "--log-interval", "1", "--seed", "1", "--num-workers", "0", "--cpu"]


def assert_same_training(two, one, name):
    """Run ``name`` of the 2-worker and the 1-worker launch: same per-update logs (timing aside),
    same model and criterion parameters after 3 updates. Returns both checkpoints."""
    logs2, logs1 = two[name]["records"], one[name]["records"]
    assert len(logs2) == len(logs1) == 3, (name, logs2, logs1)
    for r2, r1 in zip(logs2, logs1):
        same = {k: r1[k] for k in r1 if k not in TIMING}
        assert {k: r2[k] for k in same} == same, name  # loss, nll_loss, kd_loss, gnorm, gate, ... per update
    assert float(logs1[0]["loss"]) > 0
    ck2, ck1 = (torch.load(r[name]["checkpoint"], map_location="cpu", weights_only=True) for r in (two, one))
    assert ck2["optimizer_history"][-1]["num_updates"] == ck1["optimizer_history"][-1]["num_updates"] == 3
    for part in ("model", "criterion"):
        for key, p1 in (ck1[part] or {}).items():
            torch.testing.assert_close(ck2[part][key], p1, rtol=1e-5, atol=1e-6, msg=f"{name}: {part} {key}")
    return ck2, ck1


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny corpus, a briefly trained teacher, and its top-k cache of the training split."""
    root = tmp_path_factory.mktemp("distributed")
    raw = helpers.make_synthetic_corpus(root / "raw", n_train=64, n_valid=16, n_test=8)
    data_bin = helpers.preprocess(raw, root / "bin", splits=("train", "valid"))
    teacher = helpers.train(data_bin, root / "teacher", max_epoch=2, max_tokens=400)
    from fairseq_kd.cli import cache as cache_cli

    cache_cli.main(cache_cli.get_parser().parse_args(
        [str(data_bin), "--teacher-path", str(teacher), "--out-dir", str(root / "cache"), "--topk", "4",
         "--no-progress", "--source-lang", "src", "--target-lang", "tgt"]))
    return root, data_bin, teacher


RUNS = {  # name -> criterion options (all on the same data, 3 updates)
    "word_online": ["--criterion", "word_kd", "--kd-alpha", "0.5", "--kd-temperature", "2"],
    "word_topk_global": ["--criterion", "word_kd", "--kd-alpha", "0.7", "--kd-topk", "4",
                         "--kd-selection", "global", "--kd-selection-ratio", "0.5", "--kd-selection-queue-size", "60"],
    "word_cache_batch": ["--criterion", "word_kd", "--kd-alpha", "0.5", "--kd-temperature", "2", "--teacher-cache",
                         "{cache}", "--kd-selection", "batch", "--kd-selection-ratio", "0.5"],
    "seq_kd": ["--criterion", "seq_kd", "--seq-kd-decoding", "greedy", "--seq-kd-memo-flush", "8"],
    "hybrid_fixed": ["--criterion", "hybrid_kd", "--hybrid-weight", "0.4", "--seq-kd-decoding", "greedy"],
    "hybrid_learned": ["--criterion", "hybrid_kd", "--hybrid-gate", "learned", "--hybrid-weight", "0.4",
                       "--seq-kd-decoding", "greedy"],
}


@pytest.mark.integration
def test_two_workers_equal_one_worker_update_freq_2(setup):
    root, data_bin, teacher = setup
    common = train_args(data_bin, teacher)
    runs = [{"name": n, "args": [a.replace("{cache}", str(root / "cache")) for a in args]} for n, args in RUNS.items()]
    spec = root / "spec.json"
    spec.write_text(json.dumps({"root": str(root / "runs"), "common": common, "runs": runs}))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    procs = run_workers(spec, 2, root / "w2.json", env) + run_workers(spec, 1, root / "w1.json", env)
    wait_all(procs)
    two, one = (json.loads((root / f"w{w}.json").read_text()) for w in (2, 1))
    for name in RUNS:
        ck2, ck1 = assert_same_training(two, one, name)
        if name == "hybrid_learned":  # the gate (a criterion parameter, DDP-wrapped by fairseq) trained alike
            g1, g2 = ck1["criterion"]["gate_logit"], ck2["criterion"]["gate_logit"]
            torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-6)
            assert abs(float(g1) - torch.logit(torch.tensor(0.4)).item()) > 1e-4
    # the seq-KD memo is written per rank: each worker decoded only its own half
    memo2 = list((root / "runs" / "seq_kd" / "w2" / "seq_kd_memo").rglob("seg-r*.npy"))
    assert {p.name.split("-")[1] for p in memo2} == {"r0", "r1"}
