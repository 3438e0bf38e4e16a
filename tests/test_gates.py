"""Hybrid gates: a learned g collapses onto the smaller loss; uncertainty weighting settles at the analytic balance.

The toy problem: one shared parameter theta and two conflicting per-token losses of
different scale (10x), l_tok = 10 (4 + (theta - 1)^2), l_sent = 4 + (theta + 1)^2.
Uncertainty weighting minimises, after its optimal log-variances v_i = log l_i,
0.5 log l_tok + 0.5 log l_sent + const, whose minimum is at theta = 0 ((theta^2 + 4)^2
- 4 theta^2 = theta^4 + 4 theta^2 + 16): l_tok = 50, l_sent = 5, so the effective token
weight w_tok / (w_tok + w_sent) = l_sent / (l_tok + l_sent) = 1/11 and both weighted
terms equal 1/2. The learned gate g = sigmoid(w) instead drifts to 0 (the smaller loss)
and theta to -1 (the sentence loss alone).
"""
import math

import pytest
import torch

from fairseq_kd.gates import FixedGate, LearnedGate, UncertaintyGate, build_gate


def losses(theta):
    return 10.0 * (4.0 + (theta - 1.0) ** 2), 4.0 + (theta + 1.0) ** 2


def optimise(gate, steps=1500, lr=0.05, n_tokens=3):
    theta = torch.nn.Parameter(torch.tensor(0.5))
    opt = torch.optim.Adam([theta, *gate.parameters()], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        l_tok, l_sent = losses(theta)
        loss, log = gate(n_tokens * l_tok, n_tokens * l_sent, n_tokens)  # summed over n tokens
        (loss / n_tokens).backward()
        opt.step()
    return float(theta), log


def test_learned_gate_collapses_onto_the_smaller_loss():
    theta, log = optimise(LearnedGate(0.5))
    assert log["gate"] < 1e-3  # the token-level term is switched off
    assert theta == pytest.approx(-1.0, abs=0.02)  # the student fits the sentence loss alone


def test_uncertainty_gate_settles_at_the_analytic_balance():
    gate = UncertaintyGate(0.5)
    theta, log = optimise(gate)
    assert theta == pytest.approx(0.0, abs=0.02)
    assert log["gate"] == pytest.approx(1 / 11, abs=0.005)
    l_tok, l_sent = losses(torch.tensor(theta))
    assert log["w_tok"] * float(l_tok) == pytest.approx(0.5, abs=0.01)  # each term contributes equally
    assert log["w_sent"] * float(l_sent) == pytest.approx(0.5, abs=0.01)
    torch.testing.assert_close(gate.log_vars.detach(), torch.tensor([math.log(50.0), math.log(5.0)]),
                               atol=0.02, rtol=0)


def test_uncertainty_gate_value_by_hand():
    gate = UncertaintyGate(0.25)
    assert gate.log_vars.detach().tolist() == pytest.approx([-math.log(0.5), -math.log(1.5)])
    loss, log = gate(torch.tensor(8.0), torch.tensor(2.0), 4)
    v = [-math.log(0.5), -math.log(1.5)]
    want = 0.5 * math.exp(-v[0]) * 8 + 0.5 * math.exp(-v[1]) * 2 + 0.5 * sum(v) * 4
    assert float(loss) == pytest.approx(want)
    assert log["w_tok"] == pytest.approx(0.25) and log["w_sent"] == pytest.approx(0.75)
    assert log["gate"] == pytest.approx(0.25)


def test_fixed_and_learned_by_hand_and_bad_weights():
    loss, log = FixedGate(0.25)(torch.tensor(4.0), torch.tensor(2.0), 1)
    assert float(loss) == 0.25 * 4 + 0.75 * 2 and log["gate"] == 0.25
    gate = LearnedGate(0.3)
    loss, log = gate(torch.tensor(4.0), torch.tensor(2.0), 1)
    loss.backward()
    assert float(gate.gate_logit.grad) == pytest.approx(0.3 * 0.7 * (4.0 - 2.0), rel=1e-5)
    for kind, w in (("learned", 0.0), ("uncertainty", 1.0), ("fixed", 1.5)):
        with pytest.raises(ValueError, match="hybrid-weight"):
            build_gate(kind, w)
    with pytest.raises(ValueError, match="hybrid-gate"):
        build_gate("nope", 0.5)
