"""A built fairseq Transformer (stock ``transformer`` or ``transformer_glu``) -> a CTranslate2
``TransformerSpec`` holding the same function.

The mapping reads the modules themselves (what will run), not only the args:

* attention: fairseq's separate q/k/v projections fused as CTranslate2 expects
  (``[q; k; v]`` for self-attention, ``q`` and ``[k; v]`` for encoder attention);
* embeddings: ``embed_scale`` (``--no-scale-embedding`` gives 1.0), sinusoidal or learned
  positions from fairseq's own table (rows after ``padding_idx``, where fairseq starts);
* FFN: ungated ``fc1``/``fc2`` -> ``linear_0``/``linear_1``; a gated ``transformer_glu``
  ``fc1 = [W; V]`` (``(act(x W) * x V) W2``) -> ``linear_0 = W`` (activated),
  ``linear_0_noact = V``, ``linear_1 = fc2`` with ``ffn_glu=True``, which CTranslate2
  computes as ``linear_1(act(linear_0 x) * linear_0_noact x)``;
* per-layer FFN widths (pruned checkpoints): CTranslate2 reads every layer's weight shapes,
  so layers keep their own widths; a layer pruned to 0 units is padded with exactly one
  zero unit (zero ``fc1`` row(s) and bias, zero ``fc2`` column: it adds exactly 0);
* pre-/post-norm, a decoder without final norm, ``layernorm_embedding``, shared or separate
  embeddings, ``project_in``/``project_out`` dims.

Anything else raises ``KDInputError`` naming what CTranslate2 cannot express.
"""
from typing import Dict, List, Tuple

import numpy as np
import torch

from fairseq_kd.errors import KDInputError

LAYER_NORM_EPS = 1e-5  # fairseq's LayerNorm (torch default); CTranslate2's default is 1e-6


def activation_for(model) -> Tuple[int, bool]:
    """``(ctranslate2 Activation, gated)`` of the model's FFNs."""
    from ctranslate2.specs import common_spec

    act = common_spec.Activation
    cfg = _model_cfg(model)
    ffn_activation = getattr(cfg, "ffn_activation", None)
    if _is_glu_model(model):
        table = {"relu": (act.RELU, False), "gelu": (act.GELU, False), "glu": (act.Sigmoid, True),
                 "swiglu": (act.SWISH, True), "geglu": (act.GELU, True)}
        if ffn_activation not in table:
            raise KDInputError(f"--ffn-activation {ffn_activation!r} has no CTranslate2 equivalent")
        return table[ffn_activation]
    name = str(getattr(cfg, "activation_fn", "relu"))
    table = {"relu": act.RELU, "gelu": act.GELU, "gelu_accurate": act.GELUTanh, "gelu_fast": act.GELUTanh,
             "tanh": act.Tanh}
    if name not in table:
        raise KDInputError(f"--activation-fn {name} has no CTranslate2 equivalent (supported: {', '.join(table)})")
    return table[name], False


def _model_cfg(model):
    cfg = getattr(model, "cfg", None) or getattr(model, "args", None)
    if cfg is None:
        raise KDInputError("the model carries neither cfg nor args: not a fairseq Transformer")
    return cfg


def _is_glu_model(model) -> bool:
    from fairseq_kd.models.transformer_glu import TransformerGLUModel

    return isinstance(model, TransformerGLUModel)


def check_exportable(model) -> None:
    """Refuse (``KDInputError``) what CTranslate2's Transformer cannot hold."""
    from fairseq.models.transformer import TransformerModel

    from fairseq_kd.models.transformer_glu import GLUInput

    if not isinstance(model, TransformerModel):
        raise KDInputError(f"{type(model).__name__} is not a fairseq Transformer: fairseq-kd-export converts "
                           f"the models 'transformer' and 'transformer_glu' only")
    enc, dec = model.encoder, model.decoder
    problems: List[str] = []
    for name, module in model.named_modules():
        if isinstance(module, GLUInput) and module.gate is not None:
            raise KDInputError(
                "this is an adaptive-capacity checkpoint with its FFN gates still in place: run "
                "`fairseq-kd-prune -i CKPT -o PRUNED.pt` first (it removes closed units and folds the gates), "
                "then export the pruned checkpoint")
    if getattr(dec, "adaptive_softmax", None) is not None:
        problems.append("--adaptive-softmax-cutoff (adaptive softmax output)")
    if getattr(dec, "cross_self_attention", False):
        problems.append("--cross-self-attention")
    if any(getattr(layer, "encoder_attn", None) is None for layer in dec.layers):
        problems.append("--no-cross-attention")
    if enc.embed_positions is None or dec.embed_positions is None:
        problems.append("--no-token-positional-embeddings")
    if getattr(enc, "layernorm_embedding", None) is not None and getattr(dec, "layernorm_embedding", None) is None \
            or getattr(enc, "layernorm_embedding", None) is None and getattr(dec, "layernorm_embedding", None) is not None:
        problems.append("--layernorm-embedding on one side only")
    pre = {bool(layer.normalize_before) for layer in list(enc.layers) + list(dec.layers)}
    if len(pre) != 1:
        problems.append("--encoder-normalize-before differs from --decoder-normalize-before")
    heads = {layer.self_attn.num_heads for layer in list(enc.layers) + list(dec.layers)}
    if len(heads) != 1:
        problems.append("different numbers of attention heads in encoder and decoder")
    if enc.embed_tokens.embedding_dim != dec.embed_tokens.embedding_dim and dec.project_in_dim is None:
        problems.append("different encoder and decoder embedding dims")
    if (dec.project_in_dim is None) != (dec.project_out_dim is None):
        problems.append("only one of the decoder's input/output projections (--decoder-input-dim/--decoder-output-dim)")
    for layer in dec.layers:
        for attr, flag in (("attn_ln", "--scale-attn"), ("c_attn", "--scale-heads"), ("ffn_layernorm", "--scale-fc"),
                           ("w_resid", "--scale-resids")):
            if getattr(layer, attr, None) is not None:
                problems.append(f"{flag} (NormFormer)")
    for layer in list(enc.layers) + list(dec.layers):
        if layer.self_attn.k_proj.bias is None or layer.self_attn.bias_k is not None:
            problems.append("attention without biases or with --add-bias-kv")
            break
    if problems:
        raise KDInputError("CTranslate2's Transformer cannot express " + "; ".join(sorted(set(problems))) +
                           ": decode this model with fairseq-generate (or --backend fairseq)")


# --- weights ------------------------------------------------------------------------
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().copy()


def _linear(spec, module) -> None:
    spec.weight = _np(module.weight)
    if module.bias is not None:
        spec.bias = _np(module.bias)


def _layer_norm(spec, module) -> None:
    spec.gamma, spec.beta = _np(module.weight), _np(module.bias)


def _fused(spec, modules) -> None:
    spec.weight = np.concatenate([_np(m.weight) for m in modules])
    spec.bias = np.concatenate([_np(m.bias) for m in modules])


def _attention(spec, attn, self_attention: bool) -> None:
    if self_attention:
        _fused(spec.linear[0], [attn.q_proj, attn.k_proj, attn.v_proj])
    else:
        _linear(spec.linear[0], attn.q_proj)
        _fused(spec.linear[1], [attn.k_proj, attn.v_proj])
    _linear(spec.linear[-1], attn.out_proj)


def ffn_weights(layer, gated: bool) -> Dict[str, np.ndarray]:
    """``linear_0`` (activated), ``linear_0_noact`` (gated only), ``linear_1`` weights/biases of
    one layer's FFN, with a layer of 0 units padded to one zero unit (an exact no-op)."""
    w1, b1 = layer.fc1.weight.detach().float().cpu(), layer.fc1.bias.detach().float().cpu()  # (H or 2H) x C, .
    w2, b2 = layer.fc2.weight.detach().float().cpu(), layer.fc2.bias.detach().float().cpu()  # C x H, C
    hidden = w2.shape[1]
    out = {}
    if gated:
        out["w0"], out["b0"] = w1[:hidden], b1[:hidden]
        out["wn"], out["bn"] = w1[hidden:], b1[hidden:]
    else:
        out["w0"], out["b0"] = w1, b1
    out["w1"], out["b1"] = w2, b2
    if hidden == 0:  # CTranslate2 has no empty GEMM: one unit of zeros adds exactly nothing
        c = w2.shape[0]
        for k in ("w0", "wn"):
            if k in out:
                out[k] = torch.zeros(1, c)
        for k in ("b0", "bn"):
            if k in out:
                out[k] = torch.zeros(1)
        out["w1"] = torch.zeros(c, 1)
    return {k: v.numpy().copy() for k, v in out.items()}


def _ffn(spec, layer, gated: bool) -> int:
    """Fill ``spec`` (a FeedForwardSpec) from ``layer``; returns the zero units padded."""
    w = ffn_weights(layer, gated)
    _layer_norm(spec.layer_norm, layer.final_layer_norm)
    spec.linear_0.weight, spec.linear_0.bias = w["w0"], w["b0"]
    if gated:
        spec.linear_0_noact.weight, spec.linear_0_noact.bias = w["wn"], w["bn"]
    spec.linear_1.weight, spec.linear_1.bias = w["w1"], w["b1"]
    return int(layer.fc2.weight.shape[1] == 0)


def _inputs(spec, side) -> None:
    emb = side.embed_tokens
    (spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings).weight = _np(emb.weight)
    spec.scale_embeddings = float(side.embed_scale)  # sqrt(dim), or 1.0 with --no-scale-embedding
    pos = side.embed_positions
    table = pos.weight if isinstance(pos, torch.nn.Embedding) else pos.weights  # (P + pad + 1) x C
    spec.position_encodings.encodings = _np(table)[pos.padding_idx + 1:]


def build_spec(model):
    """``(TransformerSpec, info)`` for a built, exportable fairseq Transformer in eval mode.

    ``info``: activation, gated, pre_norm, per-layer FFN widths and the zero units padded.
    """
    from ctranslate2.specs import transformer_spec

    check_exportable(model)
    activation, gated = activation_for(model)
    enc, dec = model.encoder, model.decoder
    pre_norm = bool(enc.layers[0].normalize_before)
    heads = enc.layers[0].self_attn.num_heads
    enc_spec = transformer_spec.TransformerEncoderSpec(
        len(enc.layers), heads, pre_norm=pre_norm, no_final_norm=enc.layer_norm is None, activation=activation,
        layernorm_embedding=enc.layernorm_embedding is not None, ffn_glu=gated)
    dec_spec = transformer_spec.TransformerDecoderSpec(
        len(dec.layers), heads, pre_norm=pre_norm, no_final_norm=dec.layer_norm is None, activation=activation,
        layernorm_embedding=dec.layernorm_embedding is not None, ffn_glu=gated,
        project_in_out=dec.project_in_dim is not None)
    padded = 0
    with torch.no_grad():
        _inputs(enc_spec, enc)
        for ls, layer in zip(enc_spec.layer, enc.layers):
            _attention(ls.self_attention, layer.self_attn, True)
            _layer_norm(ls.self_attention.layer_norm, layer.self_attn_layer_norm)
            padded += _ffn(ls.ffn, layer, gated)
        _inputs(dec_spec, dec)
        _linear(dec_spec.projection, dec.output_projection)
        for ls, layer in zip(dec_spec.layer, dec.layers):
            _attention(ls.self_attention, layer.self_attn, True)
            _layer_norm(ls.self_attention.layer_norm, layer.self_attn_layer_norm)
            _attention(ls.attention, layer.encoder_attn, False)
            _layer_norm(ls.attention.layer_norm, layer.encoder_attn_layer_norm)
            padded += _ffn(ls.ffn, layer, gated)
        for side, s in ((enc, enc_spec), (dec, dec_spec)):
            if side.layer_norm is not None:
                if not pre_norm:
                    raise KDInputError("a final layer norm in a post-norm model: CTranslate2 cannot express it")
                _layer_norm(s.layer_norm, side.layer_norm)
            if side.layernorm_embedding is not None:
                _layer_norm(s.layernorm_embedding, side.layernorm_embedding)
        if dec.project_in_dim is not None:
            _linear(dec_spec.project_in, dec.project_in_dim)
            _linear(dec_spec.project_out, dec.project_out_dim)
    spec = transformer_spec.TransformerSpec(enc_spec, dec_spec)
    info = {
        "activation": transformer_activation_name(activation), "gated": gated, "pre_norm": pre_norm,
        "encoder_ffn_widths": [int(layer.fc2.weight.shape[1]) for layer in enc.layers],
        "decoder_ffn_widths": [int(layer.fc2.weight.shape[1]) for layer in dec.layers],
        "zero_units_padded": padded,
    }
    return spec, info


def transformer_activation_name(activation: int) -> str:
    from ctranslate2.specs import common_spec

    return common_spec.Activation(int(activation)).name
