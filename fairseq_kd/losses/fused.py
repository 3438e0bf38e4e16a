"""word_kd's loss terms straight from the logits, fused by ``torch.compile``.

At T = 1 word_kd reuses the CE term's log-probabilities. At T != 1 the student also needs
log softmax(z / T), a second vocabulary-wide tensor: its forward, its backward, the division's
backward and the sum of two V-wide gradients cost about 30 ms per 2048-token batch on two CPU
threads (docs/benchmarks.md). The forward KL needs only lse(z / T) and z at the teacher's
support, so it can be written without that tensor:

    sparse (top-k ids, renormalised):  KL = sum_k p_k (t_k - z_k / T) + m lse(z / T)     m = sum_k p_k
    full (the whole vocabulary):       KL = sum_v p_v t_v - (p . z) / T + m lse(z / T)

with ``t`` the teacher's log-probabilities at T, ``p = exp(t)`` and terms with ``p = 0``
contributing 0 (as ``basic.kl_sparse`` / ``kl_full``). Written this way, ``torch.compile``
(Inductor) fuses the student's side into one reduction over the vocabulary in forward and one
elementwise pass in backward.

The criteria go one step further (``ce_and_kl``): the label-smoothed CE term needs
only lse(z) and z at the gold token (nll = lse - z_gold, -sum_v lp = V lse - sum_v z), so CE, NLL
and KL come from one compiled pass over the logits and the student's log-softmax is never
written either; a single online teacher hands over its raw logits, so neither is its own
(``ce_kl_teacher_logits``, with the teacher's gold log-prob from the same pass). Forward and
backward of the loss on a 2048 x 3,996 batch drop from 46 / 72 ms (cache / online, T = 1) to
23 / 36 ms on two CPU threads (``bench/bench_tempered_kl.py``, docs/benchmarks.md). Run eagerly the same formulas are slower than the log-softmax
route (more separate passes; ``bench/bench_tempered_kl.py``), so the criteria use them only while
compilation works (``enabled``): with ``FAIRSEQ_KD_COMPILE=0``, without ``torch.compile`` or after a
failed compilation they keep the log-softmax route (same values). On a CPU, Inductor cannot link while
torch or Python lives under a path with a blank (a checkout in "~/My Projects"): its C++ command line
leaves the -L directories unquoted and is then split on blanks (torch 2.13), so every compilation would
fail after seconds of tracing; the route is skipped there, with one warning that names the path.
"""
import functools
import logging
import os
import sysconfig
from typing import Optional, Tuple

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


def _ce_terms(z: torch.Tensor, target: torch.Tensor, eps: float, pad: int):
    """fairseq's label_smoothed_nll_loss per position from fp32 logits, without log softmax(z):
    lp = z - lse(z), so nll = lse - z[gold] and -sum_v lp = V lse - sum_v z; 0 at ``pad``.
    # z: ... x V, target: ... -> (ce, nll, lse), each ...
    """
    V = z.size(-1)
    lse = torch.logsumexp(z, dim=-1)
    nll = lse - z.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smooth = V * lse - z.sum(-1)
    at_pad = target.eq(pad)
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    nll, smooth = torch.where(at_pad, zero, nll), torch.where(at_pad, zero, smooth)
    eps_i = eps / (V - 1)
    return (1.0 - eps - eps_i) * nll + eps_i * smooth, nll, lse


def ce_kl_sparse_logits(logits: torch.Tensor, target: torch.Tensor, ids: torch.Tensor, teacher_lp: torch.Tensor,
                        temperature: float, eps: float, pad: int):
    """(label-smoothed CE, NLL, ``kl_sparse_logits``) per position in one pass over the logits.
    # logits ... x V, target ..., ids / teacher_lp ... x K -> 3 x ...
    """
    z = _fp32_or_wider(logits)
    ce, nll, lse = _ce_terms(z, target, eps, pad)
    p = teacher_lp.exp()
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    lse_t = lse if temperature == 1.0 else torch.logsumexp(z / temperature, dim=-1)
    z_k = z.gather(-1, ids)  # ... x K
    kl = torch.where(p > 0, p * (teacher_lp - z_k / temperature), zero).sum(-1) + p.sum(-1) * lse_t
    return ce, nll, kl


def ce_kl_full_logits(logits: torch.Tensor, target: torch.Tensor, teacher_lp: torch.Tensor, temperature: float,
                      eps: float, pad: int):
    """(label-smoothed CE, NLL, ``kl_full_logits``) per position in one pass over the logits.
    # logits, teacher_lp ... x V, target ... -> 3 x ...
    """
    z = _fp32_or_wider(logits)
    ce, nll, lse = _ce_terms(z, target, eps, pad)
    p = teacher_lp.exp()
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    lse_t = lse if temperature == 1.0 else torch.logsumexp(z / temperature, dim=-1)
    plogp = torch.where(p > 0, p * teacher_lp, zero).sum(-1)
    return ce, nll, plogp - (p * z).sum(-1) / temperature + p.sum(-1) * lse_t


def ce_kl_teacher_logits(logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor,
                         temperature: float, eps: float, pad: int):
    """(label-smoothed CE, NLL, KL(softmax(zt / T) || softmax(z / T)), the teacher's log-prob of
    ``target`` at T = 1) per position, from the student's and the teacher's logits: neither side's
    log-softmax is written out. With a = zt / T, p = exp(a - lse(a)) sums to 1, so
    KL = sum_v p (a - z / T) - lse(a) + lse(z / T).
    # logits, teacher_logits ... x V, target ... -> 4 x ...
    """
    z = _fp32_or_wider(logits)
    ce, nll, lse = _ce_terms(z, target, eps, pad)
    zt = _fp32_or_wider(teacher_logits)
    a = zt / temperature
    lse_a = torch.logsumexp(a, dim=-1)
    p = torch.exp(a - lse_a.unsqueeze(-1))
    lse_t = lse if temperature == 1.0 else torch.logsumexp(z / temperature, dim=-1)
    kl = (p * (a - z / temperature)).sum(-1) - lse_a + lse_t
    lse_zt = lse_a if temperature == 1.0 else torch.logsumexp(zt, dim=-1)
    gold = zt.gather(-1, target.unsqueeze(-1)).squeeze(-1) - lse_zt
    return ce, nll, kl, gold


def gold_log_probs(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log softmax(z)[target] without the log-softmax tensor.  # ... x V, ... -> ..."""
    z = _fp32_or_wider(logits)
    return z.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


def compile_mode() -> str:
    """``FAIRSEQ_KD_COMPILE``: ``auto`` (default: compile, fall back to eager on failure) or ``0``."""
    return os.environ.get("FAIRSEQ_KD_COMPILE", "auto").strip().lower()


def enabled() -> bool:
    """Whether the criteria should take the fused route (compilation on and not failed so far)."""
    return compile_mode() not in ("0", "off", "false", "no") and hasattr(torch, "compile") and not _FAILED


_EAGER = {"sparse": kl_sparse_logits, "full": kl_full_logits,
          "ce_sparse": ce_kl_sparse_logits, "ce_full": ce_kl_full_logits, "ce_tlogits": ce_kl_teacher_logits,
          "gold": gold_log_probs}


def _fn(name: str):
    eager = _EAGER[name]
    if compile_mode() in ("0", "off", "false", "no") or name in _FAILED or not hasattr(torch, "compile"):
        return eager
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(eager, dynamic=True)
    return _COMPILED[name]


@functools.lru_cache(maxsize=None)
def blank_link_dir() -> Optional[str]:
    """The first directory Inductor's CPU build links from (torch's lib, Python's LIBDIR) whose path holds a
    blank, or None: there no CPU compilation can succeed (``_call``)."""
    for d in (os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "lib"),
              sysconfig.get_config_var("LIBDIR") or ""):
        if any(c.isspace() for c in d):
            return d
    return None


def _unlinkable(name: str, args) -> bool:
    """True (the kernel marked failed, one warning) for a CPU call while ``blank_link_dir`` names a path."""
    where = blank_link_dir()
    if where is None or not any(isinstance(a, torch.Tensor) and a.device.type == "cpu" for a in args):
        return False
    if not _FAILED:
        logger.warning("torch.compile cannot build CPU kernels here: %r holds a blank, which Inductor's C++ "
                       "command line splits; the KD losses use the eager route (same values, slower). For the "
                       "compiled route, move the checkout and its .venv (or FAIRSEQ_KD_VENV) to a path without "
                       "spaces.", where)
    _FAILED.add(name)
    return True


def _call(name: str, *args):
    fn = _fn(name)
    if fn is not _EAGER[name] and _unlinkable(name, args):
        fn = _EAGER[name]
    try:
        return fn(*args)
    except Exception as e:  # no C++ compiler, an unsupported build: the eager formula is the same maths
        if fn is _EAGER[name]:
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


def teacher_gold(logits: torch.Tensor, target: torch.Tensor) -> Optional[torch.Tensor]:
    """``gold_log_probs`` compiled (one pass over the logits), or None while compilation is off or failed."""
    if not enabled() or "gold" in _FAILED:
        return None
    return _call("gold", logits, target)


def ce_and_kl(dist, logits: torch.Tensor, target: torch.Tensor, eps: float, pad: int,
              temperature: Optional[float] = None
              ) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]]:
    """(label-smoothed CE, NLL, forward KL(teacher_T || student_T), the teacher's gold log-prob at T = 1
    or None) per position for a ``teacher.TeacherDistribution``, compiled into one pass over the
    student's logits (no log-softmax tensor, at any T); None while compilation is off or has failed
    (eagerly these formulas are slower than the log-softmax route, so the caller keeps that route). A
    distribution that holds only the teacher's logits is read from them (its log-softmax is never
    written), and its gold log-prob comes from the same pass (else the fourth value is None: the
    distribution has it). The distribution is only read. ``temperature``: the loss's T (default the
    distribution's; a caller passes its own and checks they agree).
    # logits: B x T x V, target: B x T -> 4 x (B x T)
    """
    name = "ce_sparse" if dist.sparse else "ce_tlogits" if dist.from_logits else "ce_full"
    if not enabled() or name in _FAILED:
        return None
    T = float(dist.temperature if temperature is None else temperature)
    if name == "ce_tlogits":
        ce, nll, kl, gold = _call(name, logits, target, dist.logits, T, float(eps), int(pad))
        return ce, nll, kl, gold.detach()
    teacher = (dist.ids, dist.topk_lprobs) if dist.sparse else (dist.lprobs,)
    return (*_call(name, logits, target, *teacher, T, float(eps), int(pad)), None)
