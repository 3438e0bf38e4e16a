"""KL maths as small pure functions: KL from log-probabilities (full or top-k), temperature, top-k.

Shapes: ``N`` target positions (B*T flattened, or B x T), ``V`` vocabulary, ``K`` top-k.
Everything is computed in fp32 log space, whatever the model's dtype, so fp16/bf16
training cannot under/overflow the KL.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def student_log_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """fp32 log softmax(z / T).  # ... x V"""
    return F.log_softmax(logits.float() / temperature, dim=-1)


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-position dot product over the vocabulary, without a ... x V temporary.  # ... x V -> ..."""
    return torch.einsum("...v,...v->...", a, b)


def kl_full(teacher_lp: torch.Tensor, student_lp: torch.Tensor) -> torch.Tensor:
    """Per-position KL(p_t || p_s) = sum_v p_t log p_t - sum_v p_t log p_s.  # ... x V -> ...

    Two dot products instead of elementwise terms: the student's gradient is just -p_t,
    and nothing V-wide but p_t is saved for backward. Terms where the teacher's
    probability is exactly 0 contribute 0 (not 0 * -inf = nan).
    """
    p = teacher_lp.exp()
    kl = rowdot(p, teacher_lp) - rowdot(p, student_lp)
    if not bool(torch.isfinite(kl).all()):  # a -inf log-prob where p_t = 0: drop those terms
        zero = torch.zeros((), dtype=p.dtype, device=p.device)
        kl = rowdot(p, torch.where(p > 0, teacher_lp, zero)) - rowdot(p, torch.where(p > 0, student_lp, zero))
    return kl


def kl_sparse(teacher_ids: torch.Tensor, teacher_lp: torch.Tensor, student_lp: torch.Tensor) -> torch.Tensor:
    """KL of a teacher supported on ``teacher_ids`` (K per position) to the full student.

    ``teacher_lp`` are log-probabilities over the K ids (summing to 1); ``student_lp``
    is over the whole vocabulary.  # ids, lp: ... x K; student_lp: ... x V -> ...
    """
    s = student_lp.gather(-1, teacher_ids)  # ... x K
    p = teacher_lp.exp()
    return torch.where(p > 0, p * (teacher_lp - s), torch.zeros_like(p)).sum(-1)


def topk_renormalized(teacher_lp: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Restrict a distribution to its top-k tokens and renormalise.  # ... x V -> (... x K, ... x K)"""
    values, ids = teacher_lp.topk(k, dim=-1)
    return ids, values - torch.logsumexp(values, dim=-1, keepdim=True)


def temper_topk_probs(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log of top-k probabilities stored at T=1, re-tempered to T and renormalised.

    softmax(z/T) restricted to a set is proportional to p^(1/T) with p = softmax(z),
    so a cache written at T=1 serves every temperature (exactly, for a single teacher).
    """
    lp = probs.float().clamp_min(torch.finfo(torch.float32).tiny).log() / temperature
    return lp - torch.logsumexp(lp, dim=-1, keepdim=True)
