"""transformer_glu: GLU FFN maths, parameter parity, capacity gates and the penalty."""
import math

import pytest
import torch

import fairseq_kd  # noqa: F401  (registers transformer_glu)
from fairseq_kd.models import capacity as C
from fairseq_kd.models.ladder import build_model, num_params
from fairseq_kd.models.ffn import ffn_params, matched_glu_width, parse_widths
from fairseq_kd.models.transformer_glu import GLUInput
from fairseq_kd.errors import KDInputError

TINY = ["--encoder-layers", "2", "--decoder-layers", "2"]


def _batch(vocab=20, bsz=3, src_len=6, tgt_len=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (bsz, src_len), generator=g)
    prev = torch.randint(4, vocab, (bsz, tgt_len), generator=g)
    prev[:, 0] = 2
    return src, torch.full((bsz,), src_len), prev


def _logprobs(model, batch):
    out = model(*batch)
    return model.get_normalized_probs(out, log_probs=True)


# ---------------------------------------------------------------- GLU maths

def test_glu_by_hand():
    """x = (1, 2); W = 0 so sigmoid(xW) = 1/2; V = [[1, 0], [1, 1]], c = (0, 1): h = (0.5, 2)."""
    fc1 = GLUInput(2, 2, "glu")
    with torch.no_grad():
        fc1.weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]))
        fc1.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    h = fc1(torch.tensor([[1.0, 2.0]]))
    assert torch.allclose(h, torch.tensor([[0.5, 2.0]]))


@pytest.mark.parametrize("activation,act", [
    ("glu", torch.sigmoid), ("swiglu", lambda a: a * torch.sigmoid(a)),
    ("geglu", lambda a: 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))), ("relu", lambda a: a.clamp(min=0)),
    ("gelu", lambda a: 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))),
])
def test_ffn_matches_reference(activation, act):
    """Layer FFN == (act(xW + b) * (xV + c)) W2 + b2 written out with plain tensor ops."""
    torch.manual_seed(0)
    model = build_model("transformer_glu_tiny", 20, TINY + ["--ffn-activation", activation]).eval()
    layer = model.decoder.layers[1]
    x = torch.randn(4, 3, 32)  # T x B x C
    w, b = layer.fc1.weight, layer.fc1.bias
    hidden = layer.fc2.weight.shape[1]
    if activation in ("glu", "swiglu", "geglu"):
        assert w.shape == (2 * hidden, 32)
        ref_h = act(x @ w[:hidden].T + b[:hidden]) * (x @ w[hidden:].T + b[hidden:])
    else:
        assert w.shape == (hidden, 32)
        ref_h = act(x @ w.T + b)
    ref = ref_h @ layer.fc2.weight.T + layer.fc2.bias
    got = layer.fc2(layer.activation_dropout_module(layer.activation_fn(layer.fc1(x))))
    assert torch.allclose(got, ref, atol=1e-5)


def test_relu_model_equals_fairseq_transformer():
    """--ffn-activation relu is fairseq's transformer: same keys, same outputs on the same weights."""
    torch.manual_seed(0)
    ours = build_model("transformer_glu_tiny", 20, TINY + ["--ffn-activation", "relu", "--share-all-embeddings"]).eval()
    ref = build_model("transformer", 20, ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32",
                                          "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
                                          "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
                                          "--decoder-attention-heads", "2", "--dropout", "0",
                                          "--share-all-embeddings"]).eval()
    assert set(ours.state_dict()) == set(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    batch = _batch()
    assert torch.allclose(_logprobs(ours, batch), _logprobs(ref, batch), atol=1e-6)


# ---------------------------------------------------------------- parameter parity

@pytest.mark.parametrize("d,f", [(32, 64), (128, 512), (512, 2048), (1024, 4096), (300, 1000)])
def test_matched_width_is_nearest_parity(d, f):
    """The matched GLU width is the integer whose FFN params are closest to the ungated FFN's."""
    target = ffn_params(d, f, "relu")
    h = matched_glu_width(f, d)
    best = min(range(1, f + 1), key=lambda w: abs(ffn_params(d, w, "glu") - target))
    assert abs(ffn_params(d, h, "glu") - target) == abs(ffn_params(d, best, "glu") - target)
    assert abs(ffn_params(d, h, "glu") - target) <= (3 * d + 2) / 2
    assert abs(h - 2 * f / 3) <= 0.02 * f  # "about 2/3"


def test_glu_match_params_model_parity():
    """A --glu-match-params model has the relu model's parameter count to within one unit per layer."""
    common = TINY + ["--encoder-ffn-embed-dim", "96", "--decoder-ffn-embed-dim", "96"]
    relu = num_params(build_model("transformer_glu_tiny", 50, common + ["--ffn-activation", "relu"], device="meta"))
    glu_full = num_params(build_model("transformer_glu_tiny", 50, common + ["--ffn-activation", "swiglu"], device="meta"))
    glu = num_params(build_model("transformer_glu_tiny", 50, common + ["--ffn-activation", "swiglu",
                                                                        "--glu-match-params"], device="meta"))
    assert glu_full > relu * 1.1  # unmatched GLU is genuinely bigger
    assert abs(glu - relu) <= 4 * (3 * 32 + 2) / 2  # 4 FFNs, at most half a unit each


def test_per_layer_widths_and_bad_widths():
    model = build_model("transformer_glu_tiny", 20, TINY + ["--encoder-ffn-widths", "5,7", "--decoder-ffn-widths", "0,3"])
    assert [l.fc2.weight.shape[1] for l in model.encoder.layers] == [5, 7]
    assert [l.fc2.weight.shape[1] for l in model.decoder.layers] == [0, 3]
    _logprobs(model.eval(), _batch())  # a zero-width FFN still runs (its output is fc2's bias)
    with pytest.raises(KDInputError, match="one per layer"):
        parse_widths("5,7,9", 2, "--encoder-ffn-widths")
    with pytest.raises(KDInputError, match="integers"):
        parse_widths("5,x", 2, "--encoder-ffn-widths")


# ---------------------------------------------------------------- gates and penalty

def test_hard_concrete_closed_forms():
    la = torch.tensor([-10.0, 0.0, 10.0])
    z = C.hard_concrete_eval(la)
    assert z[0] == 0.0 and z[2] == 1.0 and abs(float(z[1]) - (0.5 * 1.2 - 0.1)) < 1e-6
    # P(z > 0) by Monte Carlo against the closed form
    torch.manual_seed(0)
    u = torch.rand(200000, 1).clamp(1e-6, 1 - 1e-6)
    for a in (-1.0, 0.5, 2.0):
        mc = float((C.hard_concrete_sample(torch.tensor([a]), u) > 0).float().mean())
        assert abs(mc - float(C.hard_concrete_prob_open(torch.tensor([a])))) < 0.005
    assert abs(float(C.hard_concrete_eval(torch.tensor([C.init_log_alpha(0.9)]))) - 0.98) < 1e-6


def test_gates_deterministic_in_eval_stochastic_in_train():
    model = build_model("transformer_glu_tiny", 20, TINY + ["--adaptive-capacity"])
    batch = _batch()
    model.eval()
    a, b = _logprobs(model, batch), _logprobs(model, batch)
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(1)
    c = _logprobs(model, batch)
    torch.manual_seed(2)
    d = _logprobs(model, batch)
    assert not torch.allclose(c, d)


def test_gate_gradients_and_penalty_differentiable():
    torch.manual_seed(0)
    model = build_model("transformer_glu_tiny", 20, TINY + ["--adaptive-capacity", "--capacity-penalty", "0.3"]).train()
    gates = [fc1.gate for _, fc1 in model.ffn_inputs()]
    assert len(gates) == 4
    lp = _logprobs(model, _batch())
    lp.mean().neg().backward()
    for g in gates:  # the task loss reaches every gate
        assert g.theta.grad is not None and g.theta.grad.abs().sum() > 0
    model.zero_grad()
    penalty, active = model.capacity_loss()
    penalty.backward()
    for g in gates:  # more open units -> more penalty: the gradient is positive everywhere
        assert (g.theta.grad > 0).all()
    # the analytic gradient matches a finite difference
    g0 = gates[0]
    with torch.no_grad():
        g0.theta[3] += 1e-2
        up = float(model.capacity_loss()[0])
        g0.theta[3] -= 2e-2
        down = float(model.capacity_loss()[0])
        g0.theta[3] += 1e-2
    fd, grad = (up - down) / 2e-2, float(g0.theta.grad[3])
    assert abs(fd - grad) < 0.05 * abs(grad)  # central difference in fp32


def test_gate_lr_scale_reparametrisation():
    """log_alpha = scale * theta: same gates, a gradient on theta `scale` times larger."""
    from fairseq_kd.models.capacity import HardConcreteGate

    g1, g10 = HardConcreteGate(5, 0.7, scale=1.0), HardConcreteGate(5, 0.7, scale=10.0)
    assert torch.allclose(g1.log_alpha, g10.log_alpha) and torch.allclose(g1.eval().forward(), g10.eval().forward())
    g1.prob_open().sum().backward()
    g10.prob_open().sum().backward()
    assert torch.allclose(g10.theta.grad, 10 * g1.theta.grad)


def test_penalty_values_by_hand():
    model = build_model("transformer_glu_tiny", 20, TINY + ["--adaptive-capacity", "--capacity-penalty", "0.5"])
    total = num_params(model)
    gate_params = sum(fc1.hidden for _, fc1 in model.ffn_inputs())
    with torch.no_grad():
        for _, fc1 in model.ffn_inputs():
            fc1.gate.set_log_alpha(torch.full((fc1.hidden,), 50.0))  # every unit surely open
    penalty, active = model.capacity_loss()
    assert abs(float(penalty) - 0.5) < 1e-5  # weight * open fraction (= 1)
    assert abs(active - (total - gate_params)) < 1e-3 * total
    assert model.active_param_count() == total - gate_params
    with torch.no_grad():
        for i, (_, fc1) in enumerate(model.ffn_inputs()):
            fc1.gate.set_log_alpha(torch.full((fc1.hidden,), -50.0 if i % 2 else 50.0))  # half the FFNs closed
    penalty, active = model.capacity_loss()
    assert abs(float(penalty) - 0.25) < 1e-5
    unit = 2 * (32 + 1) + 32
    closed = sum(fc1.hidden for i, (_, fc1) in enumerate(model.ffn_inputs()) if i % 2)
    assert model.active_param_count() == total - gate_params - closed * unit
    # budget mode: hinge on the expected size relative to the budget
    budget = model.active_param_count() - 1000
    model.cfg.capacity_target_params = budget
    penalty, active = model.capacity_loss()
    assert abs(float(penalty) - 0.5 * (active - budget) / budget) < 1e-6
    model.cfg.capacity_target_params = int(active) + 10
    assert float(model.capacity_loss()[0]) == 0.0


def test_capacity_loss_off_is_zero():
    model = build_model("transformer_glu_tiny", 20, TINY)
    penalty, active = model.capacity_loss()
    assert float(penalty) == 0.0 and not penalty.requires_grad and active == num_params(model)
    assert not any(fc1.gate is not None for _, fc1 in model.ffn_inputs())


def test_criterion_hook_adds_penalty_per_token():
    """The lead's add_capacity_term adds penalty * sample_size and logs active_params."""
    from fairseq_kd.criteria._common import add_capacity_term

    model = build_model("transformer_glu_tiny", 20, TINY + ["--adaptive-capacity"]).train()
    log = {}
    loss = add_capacity_term(model, torch.tensor(10.0), 7, log)
    penalty, active = model.capacity_loss()
    assert abs(float(loss) - (10.0 + 7 * float(penalty))) < 1e-4
    assert log["active_params"] == pytest.approx(active)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_runs_with_fp32_gates(dtype):
    """What fairseq's --bf16/--fp16 do to the model (model.to(dtype)); gates stay fp32 maths."""
    torch.manual_seed(0)
    model = build_model("transformer_glu_tiny", 20, TINY + ["--adaptive-capacity", "--ffn-activation", "swiglu"])
    ref = _logprobs(model.eval(), _batch())
    model = model.to(dtype)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        lp = _logprobs(model, _batch())
        assert lp.dtype in (dtype, torch.float32) and torch.isfinite(lp.float()).all()
        lp.float().sum().backward()  # gradients flow through the cast gates
        assert all(torch.isfinite(fc1.gate.theta.grad.float()).all() for _, fc1 in model.ffn_inputs())
        model.zero_grad()
    assert (lp.float() - ref).abs().max() < 0.25  # bf16 has ~3 significant digits
    assert model.capacity_loss()[0].dtype == torch.float32


def test_bad_gate_settings_are_refused():
    with pytest.raises(KDInputError, match="--capacity-init-keep"):
        build_model("transformer_glu_tiny", 20, ["--adaptive-capacity", "--capacity-init-keep", "1.5"])
    with pytest.raises(KDInputError, match="--capacity-gate-lr-scale"):
        C.HardConcreteGate(4, 0.9, scale=0.0)


def test_bad_activation_is_refused():
    from fairseq_kd.models.ffn import _activation

    with pytest.raises(KDInputError, match="--ffn-activation"):
        _activation("tanh")


def test_activation_checkpointing_keeps_gate_noise_and_gradients():
    """--checkpoint-activations recomputes layers in backward: same sampled gates, same gradients."""
    grads = []
    for extra in ([], ["--checkpoint-activations"]):
        torch.manual_seed(0)
        model = build_model("transformer_glu_tiny", 20, TINY + ["--adaptive-capacity"] + extra).train()
        assert hasattr(model.decoder.layers[0], "precheckpoint_forward") == bool(extra)
        torch.manual_seed(5)
        _logprobs(model, _batch()).mean().neg().backward()
        grads.append(torch.cat([fc1.gate.theta.grad for _, fc1 in model.ffn_inputs()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
