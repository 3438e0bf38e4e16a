"""int8-aware fine-tuning (``fairseq_kd/quant.py``, ``--int8-qat-updates``).

Truths: hand-computed int8 roundings; CTranslate2's own int8 model (the project's exporter,
``compute_type int8``) scoring forced targets; the float gradient at the quantized point;
fairseq-train's own update counter.
"""
import contextlib

import pytest
import torch
from torch import nn

import fairseq_kd  # noqa: F401  (registrations)
from fairseq_kd import quant
from fairseq_kd.errors import KDInputError


# ----------------------------------------------------------------- (a) the maths by hand
def test_weight_rows_quantized_as_ctranslate2_by_hand():
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0],      # amax 1: scale 127, 63.5 -> 64 (half to even), 31.75 -> 32
                      [127.0, 2.5, -3.5, 0.5],     # amax 127: scale 1, 2.5 -> 2, -3.5 -> -4, 0.5 -> 0
                      [0.0, 0.0, 0.0, 0.0]])       # zero row: scale 1, stays 0
    s = quant.weight_scales(w)
    assert s.tolist() == [127.0, 1.0, 1.0]
    assert quant.quantize(w, s).tolist() == [[64, -127, 32, 0], [127, 2, -4, 0], [0, 0, 0, 0]]
    assert torch.equal(quant.fake_quant_weight(w),
                       torch.tensor([[64 / 127, -1.0, 32 / 127, 0.0], [127.0, 2.0, -4.0, 0.0], [0.0] * 4]))


def test_inputs_quantized_per_token_by_hand():
    x = torch.tensor([[[2.0, -0.5, 1.0 / 127]],    # T x B x C: each token (row) its own scale
                      [[0.0, 0.0, 0.0]]])
    s = quant.input_scales(x)
    assert s.shape == (2, 1) and s[0, 0].item() == pytest.approx(63.5) and s[1, 0].item() == 1.0
    # 2 * 63.5 = 127; -0.5 * 63.5 = -31.75 -> -32; (1/127) * 63.5 = 0.5 -> 0 (half to even)
    assert quant.quantize(x, s)[0, 0].tolist() == [127.0, -32.0, 0.0]
    got = quant.fake_quant_input(x)
    assert torch.allclose(got[0, 0], torch.tensor([2.0, -32 / 63.5, 0.0]), rtol=0, atol=1e-7)
    assert torch.equal(got[1], x[1])


def test_a_layer_pruned_to_zero_units_adds_exactly_its_bias():
    # fairseq-kd-prune can close every unit of an FFN: fc1 is 0 x d, fc2 is d x 0 (the export pads
    # it with one zero unit, which adds 0); the simulation must run it and give fc2's bias alone
    fc1, fc2 = nn.Linear(4, 0), nn.Linear(0, 4)
    x = torch.randn(2, 3, 4, requires_grad=True)
    with quant.int8_simulation(nn.Sequential(fc1, fc2)):
        y = fc2(fc1(x))
    assert torch.equal(y, fc2.bias.detach().expand(2, 3, 4))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(fc2.bias.grad, torch.full((4,), 6.0))


# ----------------------------------------------------------------- (c) straight-through gradients
def test_gradients_are_the_float_gradients_at_the_quantized_point():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    x = torch.randn(3, 4, 6, requires_grad=True)
    target = torch.randn(3, 4, 5)
    with quant.int8_simulation(lin):
        loss = ((lin(x) - target) ** 2).sum()
    loss.backward()
    # the same loss computed in float at Q(x), Q(w)
    qw = quant.fake_quant_weight(lin.weight).detach().requires_grad_(True)
    qx = quant.fake_quant_input(x).detach().requires_grad_(True)
    b = lin.bias.detach().clone().requires_grad_(True)
    ref = ((torch.nn.functional.linear(qx, qw, b) - target) ** 2).sum()
    ref.backward()
    assert torch.equal(loss.detach(), ref.detach())
    assert torch.allclose(lin.weight.grad, qw.grad, rtol=0, atol=1e-6)
    assert torch.allclose(x.grad, qx.grad, rtol=0, atol=1e-6)
    assert torch.allclose(lin.bias.grad, b.grad, rtol=0, atol=1e-6)
    assert not torch.equal(qw, lin.weight) and lin.weight.grad.abs().sum() > 0
    # the float parameter is back in place, unchanged, after the block
    assert isinstance(lin.weight, nn.Parameter) and list(lin.state_dict()) == ["weight", "bias"]
    assert torch.equal(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias))


# ----------------------------------------------------------------- (b) CTranslate2's own int8 model
def _ct2():
    return pytest.importorskip("ctranslate2")


MODELS = {
    # stock transformer, post-norm, separate embeddings and output projection, learned positions
    "transformer": ("transformer", ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
                                    "--encoder-ffn-embed-dim", "48", "--decoder-ffn-embed-dim", "64",
                                    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
                                    "--encoder-learned-pos", "--decoder-learned-pos"]),
    # gated FFN (one fc1 = [W; V]), pre-norm, every embedding tied to the output projection
    "swiglu_prenorm_tied": ("transformer_glu_tiny", ["--ffn-activation", "swiglu", "--share-all-embeddings",
                                                     "--encoder-normalize-before", "--decoder-normalize-before"]),
}


def _scores(model, d, sources, targets, simulate: bool):
    """fairseq's teacher-forced log-probabilities of ``targets`` and the smallest logit quantum of the
    int8 output layer over these tokens: ``1 / (scale_x * scale_w)``, one unit of its int32 product."""
    feats = []
    hook = model.decoder.output_projection.register_forward_hook(lambda m, a, o: feats.append(a[0].detach()))
    out = []
    try:
        for src, tgt in zip(sources, targets):
            prev = torch.cat([torch.tensor([d.eos()]), tgt])[None]
            with torch.no_grad():
                if simulate:
                    with quant.int8_simulation(model):
                        net = model(src[None], torch.tensor([src.numel()]), prev)
                else:
                    net = model(src[None], torch.tensor([src.numel()]), prev)
            lp = model.get_normalized_probs(net, log_probs=True)[0]
            out.append(lp[torch.arange(tgt.numel()), tgt])
    finally:
        hook.remove()
    sx = max(quant.input_scales(f).max().item() for f in feats)
    sw = quant.weight_scales(model.decoder.output_projection.weight).max().item()
    return out, 1.0 / (sx * sw)


def _within(scores, got, quantum) -> float:
    """The fraction of target tokens whose log-probabilities differ by at most ``quantum``."""
    diffs = torch.cat([(a - b).abs() for a, b in zip(scores, got)])
    return (diffs <= quantum).float().mean().item()


# A float32 rounding difference between PyTorch and CTranslate2 (about 127 * 2**-23 of a step) can
# flip one value's rounding to the neighbouring integer; that moves the tokens downstream of it by
# up to a whole step. Such flips are rare, so "agrees" below means: on at least 90% of the tokens.
AGREE = 0.9


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(MODELS))
def test_simulation_equals_ctranslate2_int8(name, tmp_path):
    """The simulated forward scores forced targets as CTranslate2's int8 model does, to within one unit
    of the int8 output layer's product (the logits' own resolution); the float forward does not."""
    ct2 = _ct2()
    from tests.test_export import V, _dictionary, random_model, random_sources

    from fairseq_kd.export.convert import export_model, source_tokens

    arch, overrides = MODELS[name]
    model = random_model(arch, overrides)
    d = _dictionary()
    export_model(model, d, d, str(tmp_path / "int8"), quantization="int8")
    translator = ct2.Translator(str(tmp_path / "int8"), device="cpu", compute_type="int8", intra_threads=1)
    g = torch.Generator().manual_seed(3)
    sources = random_sources(6)
    targets = [torch.randint(4, V, (8,), generator=g) for _ in sources]
    res = translator.score_batch([source_tokens(d, s) for s in sources],
                                 [[d[t] for t in tgt.tolist()] for tgt in targets])
    got = [torch.tensor(r.log_probs[:8]) for r in res]
    simulated, quantum = _scores(model, d, sources, targets, simulate=True)
    floated, _ = _scores(model, d, sources, targets, simulate=False)
    assert _within(simulated, got, quantum) >= AGREE
    assert _within(floated, got, quantum) <= 1 - AGREE  # the comparison tells int8 from float
    # parameters are float again and the model computes its float function after the block
    again, _ = _scores(model, d, sources, targets, simulate=False)
    assert all(torch.equal(a, b) for a, b in zip(again, floated))


# CTranslate2 scoring in a child process whose int8 GEMM is limited to AVX2 (oneDNN), as on a CPU
# without VNNI: both variables are read when the library loads
AVX2_ENV = {"CT2_USE_MKL": "0", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2", "CT2_FORCE_CPU_ISA": "AVX2"}
SCORE_CHILD = """
import json, sys
import ctranslate2
job = json.load(sys.stdin)
t = ctranslate2.Translator(job["model"], device="cpu", compute_type="int8", intra_threads=1)
print(json.dumps([r.log_probs for r in t.score_batch(job["sources"], job["targets"])]))
"""


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(MODELS))
def test_seven_bit_weights_export_and_score_as_simulated_on_avx2(name, tmp_path):
    """``--int8-weight-bits 7``: model.bin holds every weight rounded per row with scale 63 / max|row|
    (parsed from the file); CTranslate2 with its int8 GEMM limited to AVX2 (where 8-bit weights can
    saturate 16-bit pair sums) scores forced targets as ``int8_simulation(weight_bits=7)`` does, and
    not as the 8-bit simulation does."""
    import json
    import os
    import subprocess
    import sys

    _ct2()
    from tests import int8_checks
    from tests.test_export import V, _dictionary, random_model, random_sources

    from fairseq_kd.export.convert import export_model, source_tokens

    arch, overrides = MODELS[name]
    model = random_model(arch, overrides)
    d = _dictionary()
    export_model(model, d, d, str(tmp_path / "f32"), quantization="none")
    meta = export_model(model, d, d, str(tmp_path / "int7"), quantization="int8", int8_weight_bits=7)
    assert meta["int8_weight_bits"] == 7
    assert int8_checks.assert_weights_quantized(tmp_path / "f32" / "model.bin", tmp_path / "int7" / "model.bin",
                                                qmax=63) > 0
    g = torch.Generator().manual_seed(3)
    sources = random_sources(12)
    hyps = [" ".join(d[t] for t in torch.randint(4, V, (8,), generator=g).tolist()) for _ in sources]
    job = {"model": str(tmp_path / "int7"), "sources": [list(source_tokens(d, s)) for s in sources],
           "targets": [h.split() for h in hyps]}
    res = subprocess.run([sys.executable, "-c", SCORE_CHILD], input=json.dumps(job), capture_output=True, text=True,
                         env={**os.environ, **AVX2_ENV}, check=True)
    records = int8_checks.compare_scores(None, model, d, sources, hyps, weight_bits=7, scores=json.loads(res.stdout))
    int8_checks.assert_int8_arithmetic(records, min_exact=len(sources) // 4)
    assert sum(r["sum_to_sim"] for r in records) < sum(r["sum_to_sim8"] for r in records)  # 7-bit, not 8-bit
    with pytest.raises(KDInputError, match="--int8-weight-bits 7: 8 .default. or 7, and 7 only with --quantization int8"):
        export_model(model, d, d, str(tmp_path / "bad"), quantization="none", int8_weight_bits=7)


# ----------------------------------------------------------------- --int8-qat-updates
def test_qat_updates_range_and_window():
    assert quant.check_qat_updates(0, 0) == 0 and quant.check_qat_updates(None, None) == 0
    assert quant.check_qat_updates(3, 3) == 3
    for n, max_update, fix in ((-1, 10, ">= 0"), (5, 0, "--max-update"), (11, 10, "N <= 10")):
        with pytest.raises(KDInputError, match="--int8-qat-updates") as err:
            quant.check_qat_updates(n, max_update)
        assert fix in str(err.value)
    # fairseq counts updates from 0: the last 2 of 10 are update_num 8 and 9
    assert [u for u in range(10) if quant.qat_active(2, 10, u)] == [8, 9]
    assert not any(quant.qat_active(0, 10, u) for u in range(10))
    # a task config built outside fairseq-train: --max-update is an unresolved interpolation
    from fairseq_kd.tasks._options import KDTranslationConfig

    cfg = KDTranslationConfig()
    assert str(cfg.max_update).startswith("${")
    assert isinstance(quant.int8_training(nn.Linear(2, 2), cfg, 0), contextlib.nullcontext)  # off: no check
    cfg.int8_qat_updates = 2
    with pytest.raises(KDInputError, match="needs --max-update"):
        quant.int8_training(nn.Linear(2, 2), cfg, 0)


@pytest.mark.integration
def test_training_runs_the_last_n_updates_int8_and_the_checkpoint_exports(tmp_path, monkeypatch):
    """fairseq-train with --int8-qat-updates 3 --max-update 6: the simulation wraps exactly the last
    3 updates; the checkpoint keeps float weights and exports; its int8 export is what the simulation
    computed."""
    ct2 = _ct2()
    from tests.helpers import make_synthetic_corpus, preprocess, train

    from fairseq_kd import checkpoint_safety
    from fairseq_kd.export.convert import export_checkpoint, load_single, source_tokens

    seen = []
    real = quant.int8_simulation

    def counting(model):
        seen.append(model)
        return real(model)

    monkeypatch.setattr(quant, "int8_simulation", counting)
    data_bin = preprocess(make_synthetic_corpus(tmp_path / "raw", n_train=120, n_valid=8, n_test=8), tmp_path / "bin")
    ckpt = train(data_bin, tmp_path / "ckpt", task="kd_translation", max_epoch=100, max_tokens=200,
                 extra=["--max-update", "6", "--int8-qat-updates", "3"])
    assert len(seen) == 3
    state = checkpoint_safety.load_checkpoint(str(ckpt))
    assert state["optimizer_history"][-1]["num_updates"] == 6
    w = state["model"]["decoder.layers.0.fc1.weight"]
    assert w.dtype == torch.float32 and not torch.equal(quant.fake_quant_weight(w), w)  # not stored on the grid
    meta = export_checkpoint(str(ckpt), str(tmp_path / "ct2"), quantization="int8", data=str(data_bin))
    assert meta["quantization"] == "int8"
    translator = ct2.Translator(str(tmp_path / "ct2"), device="cpu", compute_type="int8", intra_threads=1)
    model, sd, td, _ = load_single(str(ckpt), data=str(data_bin))
    lines = ["w1 w2 w3 w4", "w5 w0 w7", "w9 w9 w2 w11 w3", "w6 w8"]
    sources = [torch.tensor([sd.index(w) for w in line.split()] + [sd.eos()]) for line in lines]
    targets = [torch.tensor([td.index(w) for w in line.split()]) for line in lines]
    sim, quantum = _scores(model.eval(), td, sources, targets, simulate=True)
    res = translator.score_batch([source_tokens(sd, s) for s in sources],
                                 [[td[t] for t in tgt.tolist()] for tgt in targets])
    got = [torch.tensor(r.log_probs[:len(t)]) for r, t in zip(res, targets)]
    assert _within(sim, got, quantum) >= AGREE


def test_refused_before_the_first_update(tmp_path):
    from tests.helpers import build_components, first_batch, make_synthetic_corpus, preprocess

    data_bin = preprocess(make_synthetic_corpus(tmp_path / "raw", n_train=20, n_valid=4, n_test=4), tmp_path / "bin")
    task, model, criterion = build_components(data_bin, ["--max-update", "4", "--int8-qat-updates", "5"])
    with pytest.raises(KDInputError, match="exceeds --max-update 4"):
        task.train_step(first_batch(task), model, criterion, None, 0)


def test_translate_warns_about_saturation_only_without_vnni(tmp_path):
    from fairseq_kd.export.quantize import cpu_has_vnni, saturation_warning

    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512bw\n\nprocessor : 1\nflags : fpu sse2 avx2\n")
    assert cpu_has_vnni(str(info)) is False
    info.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_vnni\n")
    assert cpu_has_vnni(str(info)) is True
    assert cpu_has_vnni(str(tmp_path / "missing")) is None
    eight, seven = {"quantization": "int8", "int8_weight_bits": 8}, {"quantization": "int8", "int8_weight_bits": 7}
    assert "--int8-weight-bits 7" in saturation_warning(eight, "int8", "cpu", False)
    assert "--int8-weight-bits 7" in saturation_warning({}, "int8_float32", "cpu", False)  # int8 at load time
    for args in ((seven, "int8", "cpu", False), (eight, "int8", "cpu", True), (eight, "int8", "cpu", None),
                 (eight, "float32", "cpu", False), (eight, "int8", "cuda", False)):
        assert saturation_warning(*args) == ""
