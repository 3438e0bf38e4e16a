"""``hybrid_kd``: the mix g * T^2 KL + (1 - g) * CE on teacher targets, fixed or learned gate.

Truths: the two extremes equal independently computed losses (fairseq's label-smoothed
CE on the memoized teacher targets; T^2 KL from the teacher's and student's softmax),
and the learned gate's gradient equals g (1 - g) (KD - CE) by hand.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from tests import helpers
from tests.test_seq_kd import seq_kd_args, small  # noqa: F401  (module fixture)


def build(small, tmp_path, *extra):
    args = seq_kd_args(small, "greedy", "--save-dir", str(tmp_path)) + list(extra)
    args[args.index("seq_kd")] = "hybrid_kd"
    task, model, crit = helpers.build_components(small.data_bin, extra=args)
    model.train()
    batch = helpers.first_batch(task, "train", n=12)
    return task, model, crit, dict(batch, kd_split="train")


def reference_losses(task, model, crit, batch, T):
    """(summed T^2 KL, summed CE) on the teacher's targets, computed here from scratch."""
    new = task.seq_targets.distilled_sample(batch)  # the memoized targets
    target = new["target"]
    valid = target.ne(task.target_dictionary.pad())
    logits = model(**new["net_input"])[0].float()
    teacher = task.load_teacher()
    t_in = dict(new["net_input"])
    with torch.no_grad():
        t_logits = teacher.models[0](**t_in)[0].float()
    p_t = F.softmax(t_logits / T, -1)
    kl = (p_t * (F.log_softmax(t_logits / T, -1) - F.log_softmax(logits / T, -1))).sum(-1)
    kd = T * T * (kl * valid).sum()
    ce = -(F.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1) * valid).sum()
    return kd, ce


@pytest.mark.integration
def test_extremes_equal_kl_and_ce_on_teacher_targets(small, tmp_path):  # noqa: F811
    for weight in ("1.0", "0.0"):
        task, model, crit, batch = build(small, tmp_path / weight, "--hybrid-weight", weight, "--kd-temperature", "2")
        loss, _, log = crit(model, task.distilled_sample(batch))  # what train_step gives it
        kd, ce = reference_losses(task, model, crit, batch, 2.0)
        torch.testing.assert_close(loss.detach(), (kd if weight == "1.0" else ce).detach(), rtol=1e-4, atol=1e-4)
        assert log["gate"] == float(weight)


@pytest.mark.integration
def test_learned_gate_gradient_and_logging(small, tmp_path):  # noqa: F811
    task, model, crit, batch = build(small, tmp_path, "--hybrid-gate", "learned", "--hybrid-weight", "0.3")
    assert [n for n, _ in crit.named_parameters()] == ["gate_logit"]
    loss, _, log = crit(model, task.distilled_sample(batch))
    assert log["gate"] == pytest.approx(0.3, abs=1e-6)
    loss.backward()
    g = 0.3
    expected = g * (1 - g) * (log["kd_loss"] - log["ce_loss"])  # d/dw [g KD + (1-g) CE], g = sigmoid(w)
    assert crit.gate_logit.grad.item() == pytest.approx(float(expected), rel=1e-4)
    assert math.isfinite(float(log["kd_loss"])) and float(log["kd_loss"]) >= 0


@pytest.mark.unit
def test_mix_by_hand():
    from fairseq_kd.gates import gate_value, mix

    g = gate_value(torch.tensor(0.0))
    assert float(g) == 0.5
    assert float(mix(torch.tensor(4.0), torch.tensor(2.0), torch.tensor(0.25))) == 0.25 * 4 + 0.75 * 2


@pytest.mark.integration
def test_fused_route_gives_the_log_softmax_routes_loss_and_gradients(small, tmp_path, monkeypatch):  # noqa: F811
    """With compilation on, hybrid_kd's CE and KL come from ``fused.ce_and_kl`` (eager here; compiled
    = eager in tests/test_fused.py): the same loss, logged CE / NLL / KD and gradients as the
    log-softmax route."""
    task, model, crit, batch = build(small, tmp_path, "--hybrid-weight", "0.4", "--kd-temperature", "2",
                                     "--label-smoothing", "0.1")
    sample = task.distilled_sample(batch)

    def run():
        model.zero_grad()
        torch.manual_seed(0)  # the same dropout masks
        loss, _, log = crit(model, sample)
        loss.backward()
        return loss.detach(), log, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    calls, out = helpers.run_both_loss_routes(monkeypatch, run)
    assert calls == ["ce_tlogits"]  # the online teacher's logits, read in the same pass
    (l0, log0, g0), (l1, log1, g1) = out["0"], out["auto"]
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-4)
    for key in ("nll_loss", "kd_loss", "ce_loss"):
        torch.testing.assert_close(log1[key], log0[key], rtol=1e-5, atol=1e-4)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
