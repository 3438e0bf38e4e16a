"""Independent truths for a CTranslate2 int8 export (used by tests/test_export.py).

* ``read_model_bin``: the variables of a ``model.bin`` as numpy arrays, parsed from the file
  format ``ctranslate2.specs.model_spec.ModelSpec._serialize`` writes (not through the exporter).
* ``assert_weights_quantized``: every ``weight`` of the float32 export is stored int8 per row in
  the int8 export with CTranslate2's scale ``127 / max|row|``, and dequantizes to within half a
  quantization step (``0.5 / scale``) of the float weight; every other variable is unchanged.
* ``assert_scores_equal_simulation``: CTranslate2's int8 teacher-forced log-probabilities equal
  the fairseq model's under ``fairseq_kd.quant.int8_simulation`` (CTranslate2's int8 arithmetic
  written in float32: per-row int8 weights, per-token int8 linear inputs) up to float rounding.
"""
import struct

import numpy as np
import torch

DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # model_spec._dtype_to_type_id order
FLOAT_ATOL = 1e-4  # float32 rounding across a 1+1-layer model (as the float32 export's score test)


def read_model_bin(path):
    """``({name: array}, {alias: name})``."""
    data = open(path, "rb").read()
    pos = 0

    def take(fmt):
        nonlocal pos
        out = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return out[0]

    def string():
        nonlocal pos
        n = take("H")
        s = data[pos:pos + n - 1].decode("utf-8")
        pos += n
        return s

    take("I"), string(), take("I")  # binary version, spec name, revision
    variables = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        dtype = DTYPES[take("B")]
        nbytes = take("I")
        variables[name] = np.frombuffer(data[pos:pos + nbytes], dtype=dtype).reshape(shape)
        pos += nbytes
    aliases = dict((string(), string()) for _ in range(take("I")))  # shared weights: alias -> variable
    return variables, aliases


def assert_weights_quantized(f32_bin, int8_bin) -> int:
    """The int8 export holds the float32 export's weights rounded per row (see module doc); returns
    the number of int8 weights checked."""
    (f32, f32_aliases), (i8, i8_aliases) = read_model_bin(f32_bin), read_model_bin(int8_bin)
    assert i8_aliases == f32_aliases
    assert set(i8) - {n for n in i8 if n.endswith("_scale")} == set(f32)
    checked = 0
    for name, w in f32.items():
        if name.rsplit("/", 1)[-1] != "weight":
            np.testing.assert_array_equal(i8[name], w, err_msg=name)  # LayerNorm, biases, positions: float
            continue
        q, scale = i8[name], i8[name + "_scale"]
        assert q.dtype == np.int8 and q.shape == w.shape, name
        amax = np.abs(w).max(axis=1)
        np.testing.assert_allclose(scale, 127.0 / np.where(amax == 0, 127.0, amax), rtol=1e-6, err_msg=name)
        err = np.abs(q.astype(np.float32) / scale[:, None] - w)
        assert np.all(err <= 0.5 / scale[:, None] * (1 + 1e-5) + 1e-12), (name, float(err.max()))
        checked += 1
    return checked


def teacher_forced(model, src, tgt, eos):
    """fairseq's log-probabilities of ``tgt`` (ids, EOS last) given ``src``."""
    prev = torch.cat([torch.tensor([eos]), tgt[:-1]])[None]
    with torch.no_grad():
        out = model(src[None], torch.tensor([src.numel()]), prev)
        lp = model.get_normalized_probs(out, log_probs=True)[0]
    return lp[torch.arange(tgt.numel()), tgt]


def assert_scores_equal_simulation(translator, model, dictionary, sources, hypotheses):
    """CTranslate2 int8 scores of each hypothesis = fairseq's under int8 simulation (module doc);
    returns the largest difference to the float model's scores (the quantization's own effect)."""
    from fairseq_kd import quant
    from fairseq_kd.export.convert import source_tokens

    float_gap = 0.0
    for src, hyp in zip(sources, hypotheses):
        toks = hyp.split()
        tgt = torch.tensor([dictionary.index(t) for t in toks] + [dictionary.eos()])
        got = torch.tensor(translator.score_batch([source_tokens(dictionary, src)], [toks])[0].log_probs)
        with quant.int8_simulation(model):
            simulated = teacher_forced(model, src, tgt, dictionary.eos())
        assert torch.allclose(got, simulated, atol=FLOAT_ATOL), (hyp, got, simulated)
        float_gap = max(float_gap, (got - teacher_forced(model, src, tgt, dictionary.eos())).abs().max().item())
    return float_gap
