"""Independent truths for a CTranslate2 int8 export (used by tests/test_export.py).

* ``read_model_bin``: the variables of a ``model.bin`` as numpy arrays, parsed from the file
  format ``ctranslate2.specs.model_spec.ModelSpec._serialize`` writes (not through the exporter).
* ``assert_weights_quantized``: every ``weight`` of the float32 export is stored int8 per row in
  the int8 export with CTranslate2's scale ``127 / max|row|``, and dequantizes to within half a
  quantization step (``0.5 / scale``) of the float weight; every other variable is unchanged.
* ``compare_scores`` / ``assert_int8_arithmetic``: CTranslate2's int8 teacher-forced log-probabilities
  equal the fairseq model's under ``fairseq_kd.quant.int8_simulation`` (CTranslate2's int8
  arithmetic written in float32: per-row int8 weights, per-token int8 linear inputs) up to float
  rounding, wherever no int8 input sits on a rounding boundary.
"""
import contextlib
import struct

import numpy as np
import torch

DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # model_spec._dtype_to_type_id order
FLOAT_ATOL = 1e-4  # float32 rounding across a 1+1-layer model (as the float32 export's score test)
# int8 units: an input this close to k + 1/2 may round the other way in CTranslate2 (float32 rounding of
# |x * scale| <= 127 is ~1e-5; CTranslate2 and PyTorch sum in other orders)
BOUNDARY = 1e-4


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


def assert_weights_quantized(f32_bin, int8_bin, qmax: float = 127.0) -> int:
    """The int8 export holds the float32 export's weights rounded per row (see module doc; ``qmax`` 63:
    7-bit weights); returns the number of int8 weights checked."""
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
        np.testing.assert_allclose(scale, qmax / np.where(amax == 0, qmax, amax), rtol=1e-6, err_msg=name)
        assert np.abs(q.astype(np.int32)).max() <= qmax, name
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


@contextlib.contextmanager
def rounding_boundaries(model, found):
    """Append to ``found`` each linear input's smallest distance (in int8 units) to a rounding
    boundary ``k + 1/2`` of its per-token quantization (enter before ``int8_simulation``: its hooks
    then see the float input)."""
    from fairseq_kd import quant

    def pre(mod, args):
        y = args[0].detach().float() * quant.input_scales(args[0]).unsqueeze(-1)
        found.append((y - torch.floor(y) - 0.5).abs().min().item() if y.numel() else 1.0)

    handles = [m.register_forward_pre_hook(pre) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


def compare_scores(translator, model, dictionary, sources, hypotheses, weight_bits: int = 8, scores=None):
    """Per sentence: CTranslate2's int8 teacher-forced log-probs of the hypothesis against fairseq's
    under int8 simulation (``weight_bits``) and in float: ``{"to_sim": max |int8 - sim|, "sum_to_sim",
    "sum_to_float", "sum_to_sim8": against the 8-bit simulation, "boundary": the simulation's smallest
    distance to a rounding boundary}``. ``scores``: CTranslate2's log-probs computed elsewhere (e.g. in
    a process with another int8 GEMM), one list per sentence, instead of ``translator``."""
    from fairseq_kd import quant
    from fairseq_kd.export.convert import source_tokens

    records = []
    for i, (src, hyp) in enumerate(zip(sources, hypotheses)):
        toks = hyp.split()
        tgt = torch.tensor([dictionary.index(t) for t in toks] + [dictionary.eos()])
        got = torch.tensor(scores[i] if scores is not None else
                           translator.score_batch([source_tokens(dictionary, src)], [toks])[0].log_probs)
        with rounding_boundaries(model, []) as found, quant.int8_simulation(model, weight_bits=weight_bits):
            sim = teacher_forced(model, src, tgt, dictionary.eos())
        if weight_bits == 8:
            sim8 = sim
        else:
            with quant.int8_simulation(model):
                sim8 = teacher_forced(model, src, tgt, dictionary.eos())
        flt = teacher_forced(model, src, tgt, dictionary.eos())
        records.append({"to_sim": (got - sim).abs().max().item(), "sum_to_sim": (got - sim).abs().sum().item(),
                        "sum_to_float": (got - flt).abs().sum().item(), "sum_to_sim8": (got - sim8).abs().sum().item(),
                        "boundary": min(found)})
    return records


def assert_int8_arithmetic(records, min_exact: int):
    """CTranslate2's int8 scores are fairseq's under int8 simulation: to float rounding on every sentence
    whose simulated forward has no int8 input within BOUNDARY of a rounding boundary (there, float
    rounding alone may send it either way; at least ``min_exact`` such sentences), and over all
    sentences nearer the simulation than the float model. Returns the exactly checked indices."""
    exact = [i for i, r in enumerate(records) if r["boundary"] > BOUNDARY]
    for i in exact:
        assert records[i]["to_sim"] <= FLOAT_ATOL, (i, records[i])
    assert len(exact) >= min_exact, [r["boundary"] for r in records]
    assert sum(r["sum_to_sim"] for r in records) < sum(r["sum_to_float"] for r in records)
    return exact
