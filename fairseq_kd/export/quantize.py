"""int8 weights with 7 bits for CPUs without VNNI (``fairseq-kd-export --int8-weight-bits 7``).

CTranslate2 runs an int8 linear layer as an unsigned x signed 8-bit product: the input, quantized
per token to [-127, 127], is shifted to [0, 255]. On x86 CPUs without VNNI (AVX2, AVX-512F/BW) the
int8 GEMM of both its backends (MKL, oneDNN) multiplies such pairs with ``vpmaddubsw``, which adds
two adjacent products into a *saturating* 16-bit integer: ``2 x 255 x 127 = 64,770`` does not fit in
32,767, so large products are clipped. With weights in [-63, 63] every pair sum fits
(``2 x 255 x 63 = 32,130``): no saturation, at the cost of one bit of weight precision. VNNI CPUs
(``vpdpbusd``) accumulate in 32 bits and need neither.

The scheme is CTranslate2's own (``ctranslate2.specs.model_spec``: per output row, symmetric,
``scale = q / max|row|``, round half to even) with ``q = 63`` instead of 127, applied to the same
variables (those with a ``*_scale`` companion), after CTranslate2's aliasing of shared variables.
"""
from fairseq_kd.quant import qmax_of


def quantize_spec(spec, bits: int) -> int:
    """Quantize ``spec``'s weights to ``bits``-bit values stored as int8 (after ``spec.optimize(None)``);
    returns how many variables were quantized."""
    from ctranslate2.specs.model_spec import NumpyVariable, Variable

    import torch

    from fairseq_kd.quant import quantize, weight_scales

    qmax = qmax_of(bits)
    done = []

    def visit(layer, name, value):
        key = name.split("/")[-1]
        if not isinstance(value, Variable) or value.is_scalar() or not hasattr(layer, f"{key}_scale"):
            return
        w = torch.from_numpy(value.to("float32").numpy())  # out x in
        scale = weight_scales(w, qmax)  # the one implementation of the rounding (also the simulation's)
        setattr(layer, key, NumpyVariable(quantize(w, scale).to(torch.int8).numpy()))
        setattr(layer, f"{key}_scale", NumpyVariable(scale.numpy()))
        done.append(name)

    spec._visit(visit)  # CTranslate2's own traversal (what its _quantize uses)
    return len(done)


def cpu_has_vnni(cpuinfo: str = "/proc/cpuinfo"):
    """Whether this x86 CPU has VNNI (``avx512_vnni`` or ``avx_vnni`` among its flags); None when the
    flags cannot be read (not Linux, not x86)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    if not flags or "avx2" not in flags and "sse2" not in flags:
        return None
    return bool(flags & {"avx512_vnni", "avx_vnni"})


def saturation_warning(meta, compute_type: str, device: str, has_vnni) -> str:
    """The warning ``fairseq-kd-translate`` prints when int8 runs with 8-bit weights on a CPU without VNNI
    ("" when it does not apply)."""
    if device != "cpu" or not str(compute_type).startswith("int8") or has_vnni is not False:
        return ""
    if int((meta or {}).get("int8_weight_bits", 8)) == 7:
        return ""
    return ("this CPU has no VNNI (/proc/cpuinfo): CTranslate2's int8 products saturate here and an 8-bit "
            "int8 model loses about 0.5 BLEU; export with fairseq-kd-export --quantization int8 "
            "--int8-weight-bits 7 for such CPUs (docs/benchmarks.md)")
