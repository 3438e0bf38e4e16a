"""CTranslate2's int8 inference simulated in a PyTorch forward pass (int8-aware fine-tuning).

What CTranslate2 does with ``compute_type int8`` (``ctranslate2.specs.model_spec`` at export,
``ops::Quantize`` / ``layers::Dense`` at run time, CPU):

* every variable named ``weight`` (each linear layer's and the token embeddings'; not the
  position table, not LayerNorm) is stored int8 per output row, symmetric:
  ``scale = 127 / max|row|`` (a zero row gets ``scale = 1``), ``q = rint(w * scale)``
  (round half to even), dequantized as ``q / scale``;
* each linear layer's *input* is quantized at run time the same way, one scale per row, i.e.
  per token: ``scale = 127 / max|x_row|`` (1 for a zero row), ``q = nearbyint(x * scale)``
  (half to even); the product runs in int32 and is rescaled by ``1 / (scale_x * scale_w)``,
  then the bias is added in float. Embeddings are looked up from the int8 table and
  dequantized (their input is token ids: nothing to quantize). Attention scores, softmax,
  LayerNorm, activations and residuals stay float.

The simulation computes ``dequant(quant(x)) @ dequant(quant(w)).T + b`` in float32, which is
CTranslate2's result up to float rounding. Gradients pass straight through both roundings
(``d out / d w`` is the float gradient evaluated at the quantized point): the parameters stay
float, so checkpoints and the exporter are unchanged; the export quantizes them.

``int8_simulation(model)`` wraps every ``nn.Linear`` (fused or subclassed ones too, e.g. the GLU
``fc1``) and token ``nn.Embedding`` of a model for the duration of a block; ``int8_training`` is
the task's hook for ``--int8-qat-updates N`` (the last N updates of a run).
"""
import contextlib
import logging

import torch
from torch import nn

from fairseq_kd.errors import KDInputError

logger = logging.getLogger(__name__)

INT8_MAX = 127.0


# ----------------------------------------------------------------- the maths (pure)
def qmax_of(bits: int) -> float:
    """The largest integer of a symmetric ``bits``-bit weight: 127 for 8 bits, 63 for 7."""
    if bits not in (7, 8):
        raise KDInputError(f"int8 weight bits {bits}: choose 8 (CTranslate2's own) or 7 (CPUs without VNNI)")
    return float(2 ** (bits - 1) - 1)


def weight_scales(w: torch.Tensor, qmax: float = INT8_MAX) -> torch.Tensor:
    """Per-row scales of a 2-D weight as ``model_spec`` computes them (float32, one per row); ``qmax`` 63
    for the 7-bit weights of ``fairseq-kd-export --int8-weight-bits 7``."""
    amax = w.detach().float().abs().amax(dim=-1)
    amax = torch.where(amax == 0, torch.full_like(amax, qmax), amax).clamp_min(qmax / torch.finfo(torch.float32).max)
    return qmax / amax


def input_scales(x: torch.Tensor) -> torch.Tensor:
    """Per-row (per-token: last dimension) scales of a run-time input, as ``quantize_s8`` does."""
    amax = x.detach().float().abs().amax(dim=-1)
    return torch.where(amax == 0, torch.ones_like(amax), INT8_MAX / amax)


def quantize(x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``rint(x * scale)`` per row (round half to even; integers held in float32)."""
    return torch.round(x.detach().float() * scales.unsqueeze(-1))


def dequantize(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return q / scales.unsqueeze(-1)


def _straight_through(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, identity in the backward pass."""
    return x + (value.to(x.dtype) - x).detach()


def fake_quant_weight(w: torch.Tensor, qmax: float = INT8_MAX) -> torch.Tensor:
    """The weight CTranslate2 computes with (int8 per row, dequantized), straight-through gradient."""
    if w.numel() == 0:  # a layer pruned to zero units: nothing to round (the export pads it with zeros)
        return w
    s = weight_scales(w, qmax)
    return _straight_through(w, dequantize(quantize(w, s), s))


def fake_quant_input(x: torch.Tensor) -> torch.Tensor:
    """A linear layer's input as CTranslate2 quantizes it per token, straight-through gradient."""
    if x.numel() == 0:
        return x
    s = input_scales(x)
    return _straight_through(x, dequantize(quantize(x, s), s))


# ----------------------------------------------------------------- the model hook
def _is_position_table(mod: nn.Module) -> bool:
    """fairseq's learned positions are an ``nn.Embedding`` that CTranslate2 keeps float (``encodings``)."""
    from fairseq.modules import LearnedPositionalEmbedding

    return isinstance(mod, LearnedPositionalEmbedding)


def int8_modules(model: nn.Module):
    """``(name, module, quantize_input)`` for every module CTranslate2 runs with int8 weights."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            yield name, mod, True
        elif isinstance(mod, nn.Embedding) and not _is_position_table(mod):
            yield name, mod, False


@contextlib.contextmanager
def int8_simulation(model: nn.Module, weight_bits: int = 8):
    """Within the block, ``model``'s forward passes compute as CTranslate2 int8 does (``weight_bits`` 7:
    the weights of an ``--int8-weight-bits 7`` export).

    Each wrapped module's ``weight`` is swapped for its fake-quantized value during its own
    forward (the float parameter is back in place afterwards and receives the gradient), and a
    linear layer's first argument is fake-quantized per token. fairseq's ``MultiheadAttention``
    fast path (``F.multi_head_attention_forward`` reading ``q_proj.weight`` directly) is
    switched off so that its projections run through their modules.
    """
    handles, swapped, flags = [], {}, []
    qmax = qmax_of(weight_bits)

    def swap_in(mod):
        param = mod._parameters["weight"]
        swapped[id(mod)] = (mod, param)
        mod._parameters["weight"] = fake_quant_weight(param, qmax)  # a tensor, not a Parameter: this forward only

    def swap_out(mod):
        mod_, param = swapped.pop(id(mod), (None, None))
        if mod_ is not None:
            mod._parameters["weight"] = param

    def linear_pre(mod, args):
        swap_in(mod)
        return (fake_quant_input(args[0]),) + tuple(args[1:])

    def embedding_pre(mod, args):
        swap_in(mod)

    def post(mod, args, out):
        swap_out(mod)

    for _, mod, quant_input in int8_modules(model):
        handles.append(mod.register_forward_pre_hook(linear_pre if quant_input else embedding_pre))
        handles.append(mod.register_forward_hook(post))
    for mod in model.modules():
        if hasattr(mod, "skip_embed_dim_check") and hasattr(mod, "q_proj"):
            flags.append((mod, mod.skip_embed_dim_check))
            mod.skip_embed_dim_check = True
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        for mod, param in list(swapped.values()):  # a forward that raised never reached its post hook
            mod._parameters["weight"] = param
        swapped.clear()
        for mod, value in flags:
            mod.skip_embed_dim_check = value


# ----------------------------------------------------------------- --int8-qat-updates
def check_qat_updates(n, max_update) -> int:
    """``--int8-qat-updates N`` checked against ``--max-update``; returns N."""
    n = int(n or 0)
    if n < 0:
        raise KDInputError(f"--int8-qat-updates {n}: the number of final updates with int8 simulation must "
                           f"be >= 0 (0: off)")
    if n == 0:
        return 0
    max_update = int(max_update or 0)
    if max_update <= 0:
        raise KDInputError(f"--int8-qat-updates {n} needs --max-update: int8-aware fine-tuning runs the last N "
                           f"updates of a run, so the run's length must be set")
    if n > max_update:
        raise KDInputError(f"--int8-qat-updates {n} exceeds --max-update {max_update}: choose N <= {max_update} "
                           f"(N = --max-update fine-tunes the whole run int8-aware)")
    return n


def _int_or_zero(value) -> int:
    """An integer config value; 0 for None or an unresolved ``${...}`` interpolation (a task config
    built outside fairseq-train)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def qat_active(n: int, max_update: int, update_num: int) -> bool:
    """Update ``update_num`` (0-based, as fairseq counts) is one of the last ``n`` of ``max_update``."""
    return n > 0 and update_num >= max_update - n


def int8_training(model: nn.Module, cfg, update_num: int):
    """The task's ``train_step`` hook: ``int8_simulation(model)`` for the last ``cfg.int8_qat_updates``
    updates of ``cfg.max_update``, else a no-op context."""
    if not getattr(cfg, "int8_qat_updates", 0):
        return contextlib.nullcontext()
    max_update = _int_or_zero(getattr(cfg, "max_update", 0))
    n = check_qat_updates(cfg.int8_qat_updates, max_update)
    if not qat_active(n, max_update, update_num):
        return contextlib.nullcontext()
    if not getattr(model, "_fairseq_kd_int8_logged", False):
        logger.info("int8-aware fine-tuning (CTranslate2 int8 simulated) from update %d to %d",
                    update_num + 1, max_update)
        try:
            model._fairseq_kd_int8_logged = True
        except AttributeError:  # a wrapper refusing attributes: log again, harmless
            pass
    return int8_simulation(model)
