"""Forward KL at temperature T straight from the student's logits, fused by ``torch.compile``.

At T = 1 word_kd reuses the CE term's log-probabilities. At T != 1 the student also needs
log softmax(z / T), a second vocabulary-wide tensor: its forward, its backward, the division's
backward and the sum of two V-wide gradients cost about 30 ms per 2048-token batch on two CPU
threads (docs/benchmarks.md). The forward KL needs only lse(z / T) and z at the teacher's
support, so it can be written without that tensor:

    sparse (top-k ids, renormalised):  KL = sum_k p_k (t_k - z_k / T) + m lse(z / T)     m = sum_k p_k
    full (the whole vocabulary):       KL = sum_v p_v t_v - (p . z) / T + m lse(z / T)

with ``t`` the teacher's log-probabilities at T, ``p = exp(t)`` and terms with ``p = 0``
contributing 0 (as ``kd_losses.kl_sparse`` / ``kl_full``). Written this way, ``torch.compile``
(Inductor) fuses the student's side into one reduction over the vocabulary in forward and one
elementwise pass in backward. Run eagerly the same formulas are slower than the log-softmax
route (more separate passes; ``bench/bench_tempered_kl.py``), so the criteria use them only while
compilation works (``enabled``): with ``FAIRSEQ_KD_COMPILE=0``, without ``torch.compile`` or after a
failed compilation they keep the log-softmax route (same values).
"""
import logging
import os

import torch

logger = logging.getLogger(__name__)

_COMPILED = {}
_FAILED = set()


def _fp32_or_wider(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def kl_sparse_logits(ids: torch.Tensor, teacher_lp: torch.Tensor, logits: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """KL(teacher_T || softmax(logits / T)) of a teacher on ``ids``.  # ids, lp: ... x K; logits ... x V -> ..."""
    z = _fp32_or_wider(logits)
    p = teacher_lp.exp()
    live = p > 0
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    lse = torch.logsumexp(z / temperature, dim=-1)  # ...
    z_k = z.gather(-1, ids)  # ... x K
    return torch.where(live, p * (teacher_lp - z_k / temperature), zero).sum(-1) + p.sum(-1) * lse


def kl_full_logits(teacher_lp: torch.Tensor, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher_T || softmax(logits / T)) over the vocabulary.  # ... x V, ... x V -> ..."""
    z = _fp32_or_wider(logits)
    p = teacher_lp.exp()
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    plogp = torch.where(p > 0, p * teacher_lp, zero).sum(-1)
    lse = torch.logsumexp(z / temperature, dim=-1)
    return plogp - (p * z).sum(-1) / temperature + p.sum(-1) * lse


def compile_mode() -> str:
    """``FAIRSEQ_KD_COMPILE``: ``auto`` (default: compile, fall back to eager on failure) or ``0``."""
    return os.environ.get("FAIRSEQ_KD_COMPILE", "auto").strip().lower()


def enabled() -> bool:
    """Whether the criteria should take the fused route (compilation on and not failed so far)."""
    return compile_mode() not in ("0", "off", "false", "no") and hasattr(torch, "compile") and not _FAILED


def _fn(name: str):
    eager = {"sparse": kl_sparse_logits, "full": kl_full_logits}[name]
    if compile_mode() in ("0", "off", "false", "no") or name in _FAILED or not hasattr(torch, "compile"):
        return eager
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(eager, dynamic=True)
    return _COMPILED[name]


def _call(name: str, *args):
    fn = _fn(name)
    try:
        return fn(*args)
    except Exception as e:  # no C++ compiler, an unsupported build: the eager formula is the same maths
        if fn is {"sparse": kl_sparse_logits, "full": kl_full_logits}[name]:
            raise
        _FAILED.add(name)
        logger.warning("torch.compile of the tempered KL failed (%s: %s); using the eager version "
                       "(same values, slower at T != 1). Set FAIRSEQ_KD_COMPILE=0 to skip the attempt.",
                       type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return _fn(name)(*args)


def tempered_kl_sparse(ids, teacher_lp, logits, temperature: float) -> torch.Tensor:
    """``kl_sparse_logits``, compiled when possible.  # ... x K, ... x K, ... x V -> ..."""
    return _call("sparse", ids, teacher_lp, logits, float(temperature))


def tempered_kl_full(teacher_lp, logits, temperature: float) -> torch.Tensor:
    """``kl_full_logits``, compiled when possible.  # ... x V, ... x V -> ..."""
    return _call("full", teacher_lp, logits, float(temperature))
