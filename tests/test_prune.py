"""Pruning: closed gates removed, gate values folded, same outputs, genuinely fewer parameters."""
import json

import pytest
import torch

import fairseq_kd  # noqa: F401
from fairseq_kd.cli import prune as prune_cli
from fairseq_kd.models.ladder import build_model, num_params
from fairseq_kd.models.pruning import prune_state_dict, widths_arg

TINY = ["--encoder-layers", "2", "--decoder-layers", "2"]


def _batch(vocab=30, bsz=4, src_len=7, tgt_len=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (bsz, src_len), generator=g)
    prev = torch.randint(4, vocab, (bsz, tgt_len), generator=g)
    prev[:, 0] = 2
    return src, torch.full((bsz,), src_len), prev


def _close_some_gates(model_state, seed=0):
    """Force ~40% of units shut (z = 0), ~20% half-open (z = 0.5), leave the rest."""
    g = torch.Generator().manual_seed(seed)
    for k, theta in model_state.items():
        if k.endswith("fc1.gate.theta"):
            scale = float(model_state[k[:-len("theta")] + "scale"])
            r = torch.rand(theta.shape, generator=g)
            theta[r < 0.4] = -20.0 / scale
            theta[(r >= 0.4) & (r < 0.6)] = 0.0


@pytest.mark.parametrize("activation", ["swiglu", "relu"])
def test_pruned_model_equals_gated_model(activation):
    torch.manual_seed(0)
    overrides = TINY + ["--adaptive-capacity", "--ffn-activation", activation, "--share-all-embeddings"]
    gated = build_model("transformer_glu_tiny", 30, overrides).eval()
    with torch.no_grad():
        _close_some_gates(gated.state_dict())  # state_dict tensors alias the parameters
    new_state, widths, report = prune_state_dict(gated.state_dict(), activation)
    assert not any("gate" in k for k in new_state)
    assert all(0 < layer["kept"] < layer["total"] for layer in report)
    pruned = build_model("transformer_glu_tiny", 30, TINY + [
        "--ffn-activation", activation, "--share-all-embeddings",
        "--encoder-ffn-widths", widths_arg(widths["encoder"]), "--decoder-ffn-widths", widths_arg(widths["decoder"])])
    pruned.load_state_dict(new_state, strict=True)
    pruned.eval()
    batch = _batch()
    with torch.no_grad():
        lp_gated = gated.get_normalized_probs(gated(*batch), log_probs=True)
        lp_pruned = pruned.get_normalized_probs(pruned(*batch), log_probs=True)
    assert (lp_gated - lp_pruned).abs().max() < 1e-4
    assert num_params(pruned) == gated.active_param_count() < num_params(gated)
    # the size reduction is what the closed units owned, computed independently
    unit = (2 if activation == "swiglu" else 1) * 33 + 32
    closed = sum(layer["total"] - layer["kept"] for layer in report)
    gates = sum(layer["total"] for layer in report)
    assert num_params(gated) - num_params(pruned) == closed * unit + gates
    # gate values were folded into fc2: a half-open unit (z = 0.5) keeps half its column
    gate = gated.decoder.layers[1].fc1.gate
    z = gate.eval_values()
    kept = torch.nonzero(z > 0).flatten()
    half = [j for j, unit in enumerate(kept.tolist()) if abs(float(z[unit]) - 0.5) < 1e-6]
    assert half, "the test should have half-open units"
    w_gated, w_pruned = gated.decoder.layers[1].fc2.weight, pruned.decoder.layers[1].fc2.weight
    for j in half:
        assert torch.allclose(w_pruned[:, j], 0.5 * w_gated[:, kept[j]])


def test_prune_refuses_ungated_and_missing(tmp_path, capsys):
    assert prune_cli.cli_main(["-i", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "out.pt")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.integration
def test_end_to_end_word_kd_adaptive_train_prune_generate(tiny_teacher, tmp_path, capsys):
    """fairseq-train transformer_glu_tiny --adaptive-capacity with word_kd from a teacher: the penalty
    closes gates during training, fairseq-kd-prune removes them, and fairseq-generate gives the same
    translations with the smaller model."""
    from fairseq_kd.models.capacity import hard_concrete_eval, state_log_alpha
    from tests import helpers

    ckpt = helpers.train(
        tiny_teacher.data_bin, tmp_path / "student", task="kd_translation", max_epoch=3,
        arch_args=["--arch", "transformer_glu_tiny", "--adaptive-capacity", "--share-all-embeddings",
                   "--capacity-penalty", "1.0", "--capacity-init-keep", "0.5", "--capacity-gate-lr-scale", "100"],
        extra=["--criterion", "word_kd", "--kd-alpha", "0.5", "--teacher-path", str(tiny_teacher.checkpoint)])
    state = torch.load(ckpt, weights_only=True)
    closed = total = 0
    for k in state["model"]:
        if k.endswith("fc1.gate.theta"):
            z = hard_concrete_eval(state_log_alpha(state["model"], k[:-len(".theta")]))
            closed, total = closed + int((z == 0).sum()), total + z.numel()
    assert 0 < closed < total  # training decided: some units shut, some kept

    pruned_ckpt = tmp_path / "pruned.pt"
    assert prune_cli.cli_main(["-i", str(ckpt), "-o", str(pruned_ckpt), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params_before"] - report["params_after"] >= closed * (2 * 33 + 32)
    assert report["params_after"] == report["expected_after"]
    assert report["max_abs_logprob_diff"] < 1e-4
    assert prune_cli.cli_main(["-i", str(ckpt), "-o", str(pruned_ckpt)]) == 2  # no silent overwrite

    pruned_state = torch.load(pruned_ckpt, weights_only=True)
    assert not any("gate" in k for k in pruned_state["model"])
    assert sum(v.numel() for k, v in pruned_state["model"].items() if ".fc" in k) < \
        sum(v.numel() for k, v in state["model"].items() if ".fc" in k)
    hyp_gated = helpers.generate(tiny_teacher.data_bin, ckpt, beam=2)
    hyp_pruned = helpers.generate(tiny_teacher.data_bin, pruned_ckpt, beam=2)
    assert len(hyp_gated) == 40 and hyp_gated == hyp_pruned
