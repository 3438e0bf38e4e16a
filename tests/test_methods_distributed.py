"""onpolicy_kd, the divergences, the uncertainty gate and hidden-state distillation under
fairseq's distributed training (2 CPU processes, gloo), with test_distributed's truth:
2 workers x B sentences train exactly like 1 worker with --update-freq 2 (same per-update
logs, same parameters, same criterion parameters). On-policy batches use greedy outputs
with lambda = 1, so both launches see the same (deterministic) student outputs.
"""
import json
import os

import pytest
import torch

from tests import helpers
from tests.test_distributed import REPO, TIMING, run_workers, setup, wait_all  # noqa: F401  (module fixture)

RUNS = {
    "onpolicy_greedy_jsd_hidden": ["--criterion", "onpolicy_kd", "--onpolicy-lambda", "1", "--onpolicy-sampling",
                                   "greedy", "--kd-divergence", "jsd", "--kd-jsd-beta", "0.3", "--kd-temperature", "2",
                                   "--kd-hidden-weight", "0.5", "--kd-hidden-decoder"],
    "hybrid_uncertainty_reverse": ["--criterion", "hybrid_kd", "--hybrid-gate", "uncertainty", "--hybrid-weight",
                                   "0.4", "--kd-divergence", "reverse_kl", "--seq-kd-decoding", "greedy"],
}


@pytest.mark.integration
def test_two_workers_equal_one_worker_update_freq_2(setup):  # noqa: F811
    root, data_bin, teacher = setup
    common = [str(data_bin), "--user-dir", helpers.USER_DIR, "--task", "kd_translation",
              "--source-lang", "src", "--target-lang", "tgt", "--teacher-path", str(teacher),
              *helpers.TINY_ARCH_ARGS, "--optimizer", "adam", "--lr", "5e-3", "--lr-scheduler", "fixed",
              "--batch-size", "4", "--required-batch-size-multiple", "1", "--max-update", "3",
              "--disable-validation", "--no-epoch-checkpoints", "--no-progress-bar", "--log-format", "json",
              "--log-interval", "1", "--seed", "1", "--num-workers", "0", "--cpu"]
    spec = root / "methods_spec.json"
    spec.write_text(json.dumps({"root": str(root / "methods_runs"), "common": common,
                                "runs": [{"name": n, "args": a} for n, a in RUNS.items()]}))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    procs = run_workers(spec, 2, root / "m2.json", env) + run_workers(spec, 1, root / "m1.json", env)
    wait_all(procs)
    two, one = (json.loads((root / f"m{w}.json").read_text()) for w in (2, 1))
    for name in RUNS:
        logs2, logs1 = two[name]["records"], one[name]["records"]
        assert len(logs2) == len(logs1) == 3, (name, logs2, logs1)
        for r2, r1 in zip(logs2, logs1):
            same = {k: r1[k] for k in r1 if k not in TIMING}
            assert {k: r2[k] for k in same} == same, name
        ck2, ck1 = (torch.load(r[name]["checkpoint"], map_location="cpu", weights_only=True) for r in (two, one))
        for key, p1 in ck1["model"].items():
            torch.testing.assert_close(ck2["model"][key], p1, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
        for key, p1 in (ck1["criterion"] or {}).items():
            torch.testing.assert_close(ck2["criterion"][key], p1, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
    first = one["onpolicy_greedy_jsd_hidden"]["records"][0]
    assert float(first["onpolicy"]) == 1.0 and float(first["kd_loss"]) > 0 and float(first["hidden_loss"]) > 0
    log_vars = torch.load(one["hybrid_uncertainty_reverse"]["checkpoint"], map_location="cpu",
                          weights_only=True)["criterion"]["balance.log_vars"]
    assert not torch.allclose(log_vars, -torch.log(torch.tensor([0.8, 1.2])))  # the gate trained
