"""The capacity ladder: named student sizes from about 3M to about 146M parameters.

arXiv 2312.08585 studies students across this range. Every size comes in two families
with matched parameter counts: ``transformer_relu_<N>m`` (ungated ReLU FFN of width ``f``)
and ``transformer_glu_<N>m`` (GLU FFN, ``--glu-match-params``: width about ``2f/3``).
``<N>`` is the size for a 10k joint dictionary (``len(dict) == 10000``, special symbols
included) with ``--share-all-embeddings``; exact counts for any vocabulary come from
:func:`count_params` (closed form) and :func:`build_model` (a real fairseq model), which
the tests check against each other. ``fairseq-kd-ladder`` prints the table.
"""
import argparse
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from fairseq.models import register_model_architecture

from fairseq_kd.models.ffn import ffn_params, matched_glu_width
from fairseq_kd.models.transformer_glu import base_architecture

DEFAULT_VOCAB = 10000


@dataclass(frozen=True)
class LadderSize:
    """One rung: post-norm Transformer, sinusoidal positions, shared embeddings."""
    name: str            # e.g. "9m": nominal size at a 10k joint vocabulary
    embed_dim: int
    ffn_dim: int         # ungated FFN width f (the GLU family uses matched_glu_width(f, d))
    heads: int
    encoder_layers: int
    decoder_layers: int


# Deeper encoders than decoders: decoding cost grows with decoder depth, not encoder depth.
LADDER: List[LadderSize] = [
    LadderSize("3m", 128, 512, 4, 5, 3),
    LadderSize("9m", 256, 1024, 4, 4, 3),
    LadderSize("20m", 384, 1536, 6, 5, 3),
    LadderSize("44m", 512, 2048, 8, 7, 4),
    LadderSize("95m", 768, 3072, 12, 7, 4),
    LadderSize("146m", 1024, 3072, 16, 6, 5),
]
FAMILIES = ("relu", "glu")


def arch_name(family: str, size: LadderSize) -> str:
    return f"transformer_{family}_{size.name}"


def ffn_width(family: str, size: LadderSize) -> int:
    return size.ffn_dim if family == "relu" else matched_glu_width(size.ffn_dim, size.embed_dim)


def count_params(family: str, size: LadderSize, vocab_size: int = DEFAULT_VOCAB) -> int:
    """Closed-form parameter count (what ``sum(p.numel())`` of the fairseq model gives).

    encoder layer: self-attn ``4d^2 + 4d``, 2 layer norms ``4d``, FFN;
    decoder layer: self- and cross-attn ``8d^2 + 8d``, 3 layer norms ``6d``, FFN;
    plus one shared ``V x d`` embedding (also the output projection), no positional params.
    """
    d, width = size.embed_dim, ffn_width(family, size)
    act = "relu" if family == "relu" else "glu"
    enc_layer = 4 * d * d + 4 * d + 4 * d + ffn_params(d, width, act)
    dec_layer = 8 * d * d + 8 * d + 6 * d + ffn_params(d, width, act)
    return vocab_size * d + size.encoder_layers * enc_layer + size.decoder_layers * dec_layer


def ladder_rows(vocab_size: int = DEFAULT_VOCAB) -> List[Dict]:
    """One dict per (size, family): the table ``fairseq-kd-ladder`` prints."""
    rows = []
    for size in LADDER:
        for family in FAMILIES:
            rows.append({
                "arch": arch_name(family, size),
                "family": family,
                "encoder_layers": size.encoder_layers,
                "decoder_layers": size.decoder_layers,
                "embed_dim": size.embed_dim,
                "heads": size.heads,
                "ffn_width": ffn_width(family, size),
                "params": count_params(family, size, vocab_size),
            })
    return rows


def _apply_size(args, family: str, size: LadderSize) -> None:
    for side, layers in (("encoder", size.encoder_layers), ("decoder", size.decoder_layers)):
        setattr(args, f"{side}_embed_dim", getattr(args, f"{side}_embed_dim", size.embed_dim))
        setattr(args, f"{side}_ffn_embed_dim", getattr(args, f"{side}_ffn_embed_dim", size.ffn_dim))
        setattr(args, f"{side}_attention_heads", getattr(args, f"{side}_attention_heads", size.heads))
        setattr(args, f"{side}_layers", getattr(args, f"{side}_layers", layers))
    args.share_all_embeddings = getattr(args, "share_all_embeddings", True)
    if family == "relu":
        args.ffn_activation = getattr(args, "ffn_activation", "relu")
    else:
        args.ffn_activation = getattr(args, "ffn_activation", "glu")
        args.glu_match_params = getattr(args, "glu_match_params", True)
    base_architecture(args)


def _register(family: str, size: LadderSize) -> None:
    def arch_fn(args):
        _apply_size(args, family, size)
    arch_fn.__name__ = arch_name(family, size)
    arch_fn.__doc__ = f"{size.name} {family} rung of the capacity ladder (10k shared vocab)."
    register_model_architecture("transformer_glu", arch_name(family, size))(arch_fn)


for _size in LADDER:
    for _family in FAMILIES:
        _register(_family, _size)


# ---------------------------------------------------------------- real models

class _VocabTask:
    """The two dictionaries ``TransformerModel.build_model`` asks a task for."""

    def __init__(self, vocab_size: int):
        from fairseq.data import Dictionary

        d = Dictionary()
        for i in range(vocab_size - len(d)):
            d.add_symbol(f"w{i}")
        self.source_dictionary = self.target_dictionary = d


def make_args(arch: str, overrides: Sequence[str] = ()) -> argparse.Namespace:
    """Parse fairseq training args for ``--arch arch`` (no data is read)."""
    from fairseq import options

    import fairseq_kd  # noqa: F401  (registers the architectures)

    parser = options.get_training_parser()
    return options.parse_args_and_arch(parser, ["/nonexistent", "--arch", arch, "--task", "translation",
                                                "--source-lang", "src", "--target-lang", "tgt", *overrides])


def build_model(arch: str, vocab_size: int = DEFAULT_VOCAB, overrides: Sequence[str] = (),
                device: Optional[str] = None):
    """A real fairseq model of ``arch`` for a joint dictionary of ``vocab_size`` symbols.

    ``device="meta"`` builds it without allocating weights (parameter counting only).
    """
    import torch
    from fairseq.models import ARCH_MODEL_REGISTRY

    args = make_args(arch, overrides)
    task = _VocabTask(vocab_size)
    if device is None:
        return ARCH_MODEL_REGISTRY[arch].build_model(args, task)
    with torch.device(device):
        return ARCH_MODEL_REGISTRY[arch].build_model(args, task)


def num_params(model) -> int:
    """Unique parameters (shared embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
