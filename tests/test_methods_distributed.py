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

from tests.test_distributed import REPO, assert_same_training, run_workers, train_args, wait_all
from tests.test_distributed import setup  # noqa: F401  (module fixture)

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
    common = train_args(data_bin, teacher)
    spec = root / "methods_spec.json"
    spec.write_text(json.dumps({"root": str(root / "methods_runs"), "common": common,
                                "runs": [{"name": n, "args": a} for n, a in RUNS.items()]}))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    procs = run_workers(spec, 2, root / "m2.json", env) + run_workers(spec, 1, root / "m1.json", env)
    wait_all(procs)
    two, one = (json.loads((root / f"m{w}.json").read_text()) for w in (2, 1))
    for name in RUNS:
        assert_same_training(two, one, name)
    first = one["onpolicy_greedy_jsd_hidden"]["records"][0]
    assert float(first["onpolicy"]) == 1.0 and float(first["kd_loss"]) > 0 and float(first["hidden_loss"]) > 0
    log_vars = torch.load(one["hybrid_uncertainty_reverse"]["checkpoint"], map_location="cpu",
                          weights_only=True)["criterion"]["balance.log_vars"]
    assert not torch.allclose(log_vars, -torch.log(torch.tensor([0.8, 1.2])))  # the gate trained
