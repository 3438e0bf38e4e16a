"""The feed-forward layer's arithmetic for ``transformer_glu``, pruning and the ladder: which
activations are gated, hidden widths (per layer, parameter-matched), parameter counts, and the
elementwise non-linearity. Pure functions of configs and numbers; the modules are ``transformer_glu``.
"""
import copy
from typing import List, Optional

import torch
import torch.nn.functional as F
from fairseq import utils
from fairseq.models.transformer import TransformerConfig

from fairseq_kd.errors import KDInputError

FFN_ACTIVATIONS = ("relu", "gelu", "glu", "swiglu", "geglu")
GATED_ACTIVATIONS = ("glu", "swiglu", "geglu")


def is_gated(activation: str) -> bool:
    return activation in GATED_ACTIVATIONS


def matched_glu_width(ffn_dim: int, embed_dim: int) -> int:
    """Gated hidden width whose FFN has (to one unit) the params of an ungated ``ffn_dim`` FFN.

    Ungated: ``2 d f + f + d``; gated: ``3 d h + 2 h + d``; parity at ``h = f (2d+1) / (3d+2)``.
    """
    return int(round(ffn_dim * (2 * embed_dim + 1) / (3 * embed_dim + 2)))


def ffn_unit_params(embed_dim: int, activation: str) -> int:
    """Parameters one FFN hidden unit owns: its fc1 row(s) with bias, and its fc2 column."""
    branches = 2 if is_gated(activation) else 1
    return branches * (embed_dim + 1) + embed_dim


def ffn_params(embed_dim: int, width: int, activation: str) -> int:
    """Parameters of one FFN (fc1 + fc2 with biases) of hidden ``width``."""
    return width * ffn_unit_params(embed_dim, activation) + embed_dim


def parse_widths(text: Optional[str], n_layers: int, flag: str) -> Optional[List[int]]:
    """``"512,480"`` -> ``[512, 480]``, checked against the number of layers."""
    if text is None or str(text).strip() == "":
        return None
    try:
        widths = [int(w) for w in str(text).split(",")]
    except ValueError:
        raise KDInputError(f"{flag} {text!r}: expected comma-separated integers, e.g. \"512,480,512\"")
    if len(widths) != n_layers or any(w < 0 for w in widths):
        raise KDInputError(f"{flag} {text!r}: need {n_layers} non-negative widths (one per layer)")
    return widths


def _side(cfg, side: str):
    return cfg.encoder if side == "encoder" else cfg.decoder


def ffn_widths(cfg: TransformerConfig, side: str) -> List[int]:
    """Hidden width of every FFN on ``side`` ("encoder"/"decoder") of a built config."""
    sub = _side(cfg, side)
    explicit = parse_widths(getattr(cfg, f"{side}_ffn_widths", None), sub.layers, f"--{side}-ffn-widths")
    if explicit is not None:
        return explicit
    width = sub.ffn_embed_dim
    if getattr(cfg, "glu_match_params", False) and is_gated(getattr(cfg, "ffn_activation", "glu")):
        width = matched_glu_width(width, sub.embed_dim)
    return [width] * sub.layers


def _with_ffn_width(cfg: TransformerConfig, side: str, width: int) -> TransformerConfig:
    """Shallow copy of ``cfg`` whose ``side.ffn_embed_dim`` is ``width`` (one layer's config)."""
    layer_cfg = copy.copy(cfg)
    sub = copy.copy(_side(cfg, side))
    sub.ffn_embed_dim = width
    setattr(layer_cfg, side, sub)
    return layer_cfg


def _activation(name: str):
    """The elementwise non-linearity of the (first branch of the) FFN."""
    if name in ("relu",):
        return F.relu
    if name in ("gelu", "geglu"):
        return utils.get_activation_fn("gelu")  # fairseq's gelu (computed in fp32)
    if name == "glu":
        return torch.sigmoid
    if name == "swiglu":
        return F.silu
    raise KDInputError(f"--ffn-activation {name!r}: choose one of {', '.join(FFN_ACTIVATIONS)}")


def _identity(x):
    return x
