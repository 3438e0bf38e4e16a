"""``transformer_glu``: fairseq's Transformer with GLU feed-forward layers and adaptive capacity.

The FFN is replaced exactly where fairseq builds it (``build_fc1``/``build_fc2`` of the
encoder/decoder layers), so attention, layer norms, incremental decoding,
``--share-all-embeddings`` and checkpoint wrapping are fairseq's own code.

* ``--ffn-activation {relu,gelu,glu,swiglu,geglu}``: gated variants compute
  ``(act(x W) * (x V)) W2`` (Dauphin et al. 2017; Shazeer 2020) with ``W`` and ``V`` fused
  into one ``fc1`` matrix ``[W; V]`` (one GEMM); ungated ones are fairseq's FFN, with the
  same state-dict keys as ``transformer``.
* ``--glu-match-params``: hidden width ``round(f * (2d+1) / (3d+2))`` (about ``2f/3``), the
  integer nearest to exact parameter parity with an ungated layer of width ``f``.
* ``--adaptive-capacity``: a hard-concrete gate per hidden unit (see ``capacity.py``);
  ``capacity_loss()`` returns the weighted penalty and the expected active parameters.
* ``--encoder-ffn-widths`` / ``--decoder-ffn-widths``: per-layer hidden widths (written by
  ``fairseq-kd-prune`` so that fairseq can rebuild a pruned model).
"""
import logging
from dataclasses import dataclass, field
from typing import Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoder,
    TransformerEncoder,
    TransformerModel,
    base_architecture as transformer_base_architecture,
)
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from fairseq.modules.quant_noise import quant_noise
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase

from fairseq_kd.errors import KDInputError
from fairseq_kd.models.capacity import HardConcreteGate, budget_penalty
from fairseq_kd.models.ffn import (
    FFN_ACTIVATIONS, _activation, _identity, _with_ffn_width, ffn_unit_params, ffn_widths, is_gated,
)

logger = logging.getLogger(__name__)



@dataclass
class GLUConfig(FairseqDataclass):
    """Arguments ``transformer_glu`` adds to fairseq's Transformer ones."""

    ffn_activation: ChoiceEnum(FFN_ACTIVATIONS) = field(
        default="glu", metadata={"help": "FFN activation; glu/swiglu/geglu are gated: (act(xW) * xV) W2 "
                                         "(overrides --activation-fn)"})
    glu_match_params: bool = field(
        default=False, metadata={"help": "shrink a gated FFN's hidden width (about 2/3) so it has the "
                                         "parameter count of the ungated FFN of --*-ffn-embed-dim"})
    adaptive_capacity: bool = field(
        default=False, metadata={"help": "learn a hard-concrete (L0) gate per FFN hidden unit; "
                                         "closed units are removed by fairseq-kd-prune"})
    capacity_penalty: float = field(
        default=0.1, metadata={"help": "weight of the capacity penalty per target token: the expected "
                                       "open fraction of FFN units, or the hinge on "
                                       "--capacity-target-params when given"})
    capacity_target_params: Optional[int] = field(
        default=None, metadata={"help": "parameter budget N: penalty = weight * relu(E[active params] - N) / N"})
    capacity_init_keep: float = field(
        default=0.9, metadata={"help": "initial sigmoid(log_alpha) of every gate, in (0, 1)"})
    capacity_gate_lr_scale: float = field(
        default=10.0, metadata={"help": "log_alpha = scale * theta: multiplies the gates' learning rate "
                                        "under Adam so they can close within a normal run"})
    encoder_ffn_widths: Optional[str] = field(
        default=None, metadata={"help": "comma-separated hidden width of each encoder FFN "
                                        "(overrides --encoder-ffn-embed-dim and --glu-match-params)"})
    decoder_ffn_widths: Optional[str] = field(
        default=None, metadata={"help": "comma-separated hidden width of each decoder FFN"})


# ---------------------------------------------------------------- modules

class GLUInput(nn.Linear):
    """``fc1`` with the activation (and the capacity gate) folded in: C -> H hidden units.

    Weight rows ``[0, H)`` are ``W`` (activated branch), rows ``[H, 2H)`` are ``V`` (linear
    branch) for gated activations. Subclassing ``nn.Linear`` keeps fairseq's quant-noise and
    the ``fc1.weight``/``fc1.bias`` key names.
    """

    def __init__(self, in_features: int, hidden: int, activation: str, adaptive: bool = False,
                 init_keep: float = 0.9, gate_scale: float = 10.0):
        self.hidden = hidden
        self.activation = activation
        self.gated = is_gated(activation)
        super().__init__(in_features, hidden * (2 if self.gated else 1))
        self.act = _activation(activation)
        self.gate = HardConcreteGate(hidden, init_keep, gate_scale) if adaptive else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # T x B x C -> T x B x H
        y = F.linear(x, self.weight, self.bias)  # T x B x (H or 2H)
        if self.gated:
            a, b = y.split([self.hidden, self.hidden], dim=-1)  # T x B x H each
            h = self.act(a) * b
        else:
            h = self.act(y)
        if self.gate is not None:
            h = h * self.gate().to(h.dtype)  # gates in fp32, cast for fp16/bf16
        return h

    @property
    def unit_params(self) -> int:
        return ffn_unit_params(self.in_features, self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, hidden={self.hidden}, activation={self.activation}"


def _build_glu_fc1(layer, input_dim: int, output_dim: int, q_noise, qn_block_size):
    spec = layer.ffn_spec
    fc1 = GLUInput(input_dim, output_dim, spec["activation"], spec["adaptive"], spec["init_keep"],
                   spec["gate_scale"])
    return quant_noise(fc1, q_noise, qn_block_size)


def _ffn_spec(cfg) -> dict:
    return {
        "activation": str(getattr(cfg, "ffn_activation", "glu")),
        "adaptive": bool(getattr(cfg, "adaptive_capacity", False)),
        "init_keep": float(getattr(cfg, "capacity_init_keep", 0.9)),
        "gate_scale": float(getattr(cfg, "capacity_gate_lr_scale", 10.0)),
    }


class GLUTransformerEncoderLayer(TransformerEncoderLayerBase):
    """fairseq encoder layer whose ``fc1`` is a :class:`GLUInput` (activation folded in)."""

    def __init__(self, cfg, return_fc: bool = False):
        self.ffn_spec = _ffn_spec(cfg)  # read by build_fc1 during the base __init__
        super().__init__(cfg, return_fc=return_fc)
        self.activation_fn = _identity

    def build_fc1(self, input_dim, output_dim, q_noise, qn_block_size):
        return _build_glu_fc1(self, input_dim, output_dim, q_noise, qn_block_size)


class GLUTransformerDecoderLayer(TransformerDecoderLayerBase):
    """fairseq decoder layer whose ``fc1`` is a :class:`GLUInput` (activation folded in)."""

    def __init__(self, cfg, no_encoder_attn=False, add_bias_kv=False, add_zero_attn=False):
        self.ffn_spec = _ffn_spec(cfg)
        super().__init__(cfg, no_encoder_attn=no_encoder_attn, add_bias_kv=add_bias_kv,
                         add_zero_attn=add_zero_attn)
        self.activation_fn = _identity

    def build_fc1(self, input_dim, output_dim, q_noise, qn_block_size):
        return _build_glu_fc1(self, input_dim, output_dim, q_noise, qn_block_size)


def _wrap_layer(layer: nn.Module, cfg) -> nn.Module:
    """Activation checkpointing / FSDP wrapping, as fairseq's build_*_layer does."""
    checkpoint = cfg.checkpoint_activations
    if checkpoint:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    min_params_to_wrap = cfg.min_params_to_wrap if not checkpoint else 0
    return fsdp_wrap(layer, min_num_params=min_params_to_wrap)


class GLUTransformerEncoder(TransformerEncoder):
    """fairseq encoder building :class:`GLUTransformerEncoderLayer` with per-layer widths."""

    def __init__(self, args, dictionary, embed_tokens, return_fc=False):
        self._ffn_plan = ffn_widths(TransformerConfig.from_namespace(args), "encoder")
        self._n_built = 0
        super().__init__(args, dictionary, embed_tokens, return_fc=return_fc)

    def build_encoder_layer(self, cfg):
        cfg = TransformerConfig.from_namespace(cfg)
        width = self._ffn_plan[self._n_built]
        self._n_built += 1
        layer = GLUTransformerEncoderLayer(_with_ffn_width(cfg, "encoder", width), return_fc=self.return_fc)
        return _wrap_layer(layer, cfg)


class GLUTransformerDecoder(TransformerDecoder):
    """fairseq decoder building :class:`GLUTransformerDecoderLayer` with per-layer widths."""

    def __init__(self, args, dictionary, embed_tokens, no_encoder_attn=False, output_projection=None):
        self._ffn_plan = ffn_widths(TransformerConfig.from_namespace(args), "decoder")
        self._n_built = 0
        super().__init__(args, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn,
                         output_projection=output_projection)

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        cfg = TransformerConfig.from_namespace(cfg)
        width = self._ffn_plan[self._n_built]
        self._n_built += 1
        layer = GLUTransformerDecoderLayer(_with_ffn_width(cfg, "decoder", width), no_encoder_attn)
        return _wrap_layer(layer, cfg)


@register_model("transformer_glu")
class TransformerGLUModel(TransformerModel):
    """Transformer with GLU FFNs and optional learned FFN capacity (arXiv 2312.08585)."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        # no defaults here: architectures fill them with getattr (fairseq's convention)
        gen_parser_from_dataclass(parser, GLUConfig(), delete_default=True, with_prefix="")

    @classmethod
    def build_model(cls, args, task):
        base_architecture(args)
        if args.ffn_activation not in FFN_ACTIVATIONS:
            raise KDInputError(f"--ffn-activation {args.ffn_activation!r}: choose one of {', '.join(FFN_ACTIVATIONS)}")
        if args.capacity_target_params is not None and int(args.capacity_target_params) <= 0:
            raise KDInputError("--capacity-target-params must be a positive parameter count")
        return super().build_model(args, task)

    @classmethod
    def build_encoder(cls, cfg, src_dict, embed_tokens):
        return GLUTransformerEncoder(cfg, src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, cfg, tgt_dict, embed_tokens):
        return GLUTransformerDecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)

    # ------------------------------------------------------------ capacity

    def ffn_inputs(self) -> Iterator[Tuple[str, GLUInput]]:
        """Every FFN ``fc1`` of the model with its module name, encoder first."""
        for name, module in self.named_modules():
            if isinstance(module, GLUInput):
                yield name, module

    def _fixed_params(self) -> float:
        """Parameters no gate can remove (everything but FFN hidden units and gates); cached."""
        if getattr(self, "_capacity_fixed_cache", None) is None:
            total = sum(p.numel() for p in self.parameters())
            for _, fc1 in self.ffn_inputs():
                total -= fc1.hidden * fc1.unit_params
                if fc1.gate is not None:
                    total -= fc1.gate.theta.numel()
            self._capacity_fixed_cache = float(total)
        return self._capacity_fixed_cache

    def capacity_loss(self) -> Tuple[torch.Tensor, float]:
        """(weighted penalty scalar, expected active params); zeros/actual size when not adaptive."""
        gated = [fc1 for _, fc1 in self.ffn_inputs() if fc1.gate is not None]
        if not gated:
            ref = next(self.parameters())
            return ref.new_zeros((), dtype=torch.float32), float(sum(p.numel() for p in self.parameters()))
        expected_ffn = sum(fc1.gate.prob_open().sum() * fc1.unit_params for fc1 in gated)  # fp32 scalar
        gated_total = float(sum(fc1.hidden * fc1.unit_params for fc1 in gated))
        expected_total = expected_ffn + self._fixed_params()
        weight = float(getattr(self.cfg, "capacity_penalty", 0.1))
        target = getattr(self.cfg, "capacity_target_params", None)
        if target is None:
            penalty = budget_penalty(expected_ffn, gated_total, weight)
        else:
            penalty = budget_penalty(expected_total, gated_total, weight, int(target))
        return penalty, float(expected_total.detach())

    def active_param_count(self) -> int:
        """Exact parameters of the pruned model: units whose eval-mode gate is nonzero."""
        total = int(self._fixed_params())
        for _, fc1 in self.ffn_inputs():
            kept = fc1.hidden if fc1.gate is None else int((fc1.gate.eval_values() > 0).sum())
            total += kept * fc1.unit_params
        return total


# ---------------------------------------------------------------- architectures

@register_model_architecture("transformer_glu", "transformer_glu")
def base_architecture(args):
    args.ffn_activation = getattr(args, "ffn_activation", "glu")
    args.glu_match_params = getattr(args, "glu_match_params", False)
    args.adaptive_capacity = getattr(args, "adaptive_capacity", False)
    args.capacity_penalty = getattr(args, "capacity_penalty", 0.1)
    args.capacity_target_params = getattr(args, "capacity_target_params", None)
    args.capacity_init_keep = getattr(args, "capacity_init_keep", 0.9)
    args.capacity_gate_lr_scale = getattr(args, "capacity_gate_lr_scale", 10.0)
    args.encoder_ffn_widths = getattr(args, "encoder_ffn_widths", None)
    args.decoder_ffn_widths = getattr(args, "decoder_ffn_widths", None)
    # the FFN non-linearity is --ffn-activation; keep fairseq's field consistent for ungated ones
    if args.ffn_activation in ("relu", "gelu"):
        args.activation_fn = args.ffn_activation
    transformer_base_architecture(args)


@register_model_architecture("transformer_glu", "transformer_glu_tiny")
def transformer_glu_tiny(args):
    """A model that learns the synthetic copy task in seconds (tests)."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 32)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 64)
    args.encoder_layers = getattr(args, "encoder_layers", 1)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 2)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 32)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 64)
    args.decoder_layers = getattr(args, "decoder_layers", 1)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 2)
    args.dropout = getattr(args, "dropout", 0.0)
    base_architecture(args)
