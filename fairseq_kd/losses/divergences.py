"""Token-level divergences between a teacher and a student distribution, as pure functions.

``p`` is the teacher, ``q`` the student, both given as fp32 (or fp64) log-probabilities
over the last dimension (``... x V`` for the full vocabulary, ``... x (K+1)`` for the
top-k view below). Every function returns one value per position (``...``).

* ``forward_kl``  KL(p || q) = sum_v p (log p - log q)      (mode covering; Hinton KD)
* ``reverse_kl``  KL(q || p) = sum_v q (log q - log p)      (mode seeking; MiniLLM, GKD)
* ``jsd``         generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024, eq. 1):

      m = beta * p + (1 - beta) * q
      JSD(beta) = beta * KL(p || m) + (1 - beta) * KL(q || m),      0 < beta < 1

  beta = 0.5 is the symmetric JSD (bounded by log 2). Both ends are degenerate: m tends
  to q (beta -> 0) or p (beta -> 1) and JSD(beta) -> 0. Normalised by the vanishing
  weight it tends to the two KLs (first-order expansion; d KL(q || m)/d beta = 0 at 0):

      JSD(beta) / beta       -> KL(p || q)   (forward KL)   as beta -> 0
      JSD(beta) / (1 - beta) -> KL(q || p)   (reverse KL)   as beta -> 1

  so ``--kd-jsd-beta`` must lie strictly inside (0, 1); use ``forward_kl`` / ``reverse_kl``
  for the ends. (TRL's GKD trainer returns the two KLs at exactly beta = 0 / 1, which
  makes the loss jump in scale there; here the ends are refused instead.)

Terms where a probability is exactly 0 count 0 (0 log 0 = 0), also in the gradient; a
term q log(q / 0) of the reverse KL is +inf, as it should be (see the top-k view).

**Top-k view** (``bucket_view``): the vocabulary is lumped into K + 1 buckets, the teacher's
K most probable tokens and one *tail* bucket holding every other token; both
distributions are compared on these buckets (a coarse-graining, so each divergence is at
most its full-vocabulary value, and equal to it when K >= V). The student's tail mass is
1 - its top-k mass (its exact logsumexp over the other tokens). The teacher's tail is:

* ``tail="keep"``: 1 - its top-k mass (exact; needs the teacher's full distribution);
* ``tail="renormalize"``: 0, its top-k probabilities renormalised to sum to 1 (what an
  offline top-k cache holds). ``forward_kl`` is then exactly ``basic.kl_sparse``
  (word_kd's ``--kd-topk``); ``jsd`` stays finite; ``reverse_kl`` is +inf as soon as the
  student puts mass outside the top-k, so that combination is refused.

``student_divergence`` compares a teacher distribution (``fairseq_kd.teacher.TeacherDistribution``)
with the student's logits at the distribution's temperature; ``fairseq_kd.losses.terms`` adds the
CE term, the T^2 factor and the padding mask.
"""
import math
from typing import Optional, Tuple

import torch

from fairseq_kd.errors import KDInputError
from fairseq_kd.losses import basic, fused

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
TAILS = ("keep", "renormalize")


def _plogp_ratio(lp_a: torch.Tensor, lp_b: torch.Tensor) -> torch.Tensor:
    """sum_v a (log a - log b) with 0 log 0 = 0 in value and gradient.  # ... x V -> ..."""
    a = lp_a.exp()
    live = a > 0
    zero = torch.zeros((), dtype=lp_a.dtype, device=lp_a.device)
    # sanitise the dead entries before multiplying, so no 0 * inf reaches backward
    # (a live term against log b = -inf stays +inf: the divergence is infinite there)
    return torch.where(live, a * (torch.where(live, lp_a, zero) - torch.where(live, lp_b, zero)), zero).sum(-1)


def forward_kl(teacher_lp: torch.Tensor, student_lp: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher || p_student) per position.  # ... x V -> ..."""
    return _plogp_ratio(teacher_lp, student_lp)


def reverse_kl(teacher_lp: torch.Tensor, student_lp: torch.Tensor) -> torch.Tensor:
    """KL(p_student || p_teacher) per position.  # ... x V -> ..."""
    return _plogp_ratio(student_lp, teacher_lp)


def check_beta(beta: float) -> float:
    if not 0.0 < beta < 1.0:
        raise ValueError(f"--kd-jsd-beta must lie strictly between 0 and 1, got {beta} (its limits are "
                         f"forward KL at 0 and reverse KL at 1: use --kd-divergence forward_kl / reverse_kl)")
    return float(beta)


def mixture_log_probs(teacher_lp: torch.Tensor, student_lp: torch.Tensor, beta: float) -> torch.Tensor:
    """log m, m = beta * p_teacher + (1 - beta) * p_student, in log space.  # ... x V"""
    return torch.logaddexp(teacher_lp + math.log(beta), student_lp + math.log1p(-beta))


def jsd(teacher_lp: torch.Tensor, student_lp: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Generalized JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m) per position.  # ... x V -> ..."""
    beta = check_beta(beta)
    m = mixture_log_probs(teacher_lp, student_lp, beta)
    return beta * _plogp_ratio(teacher_lp, m) + (1.0 - beta) * _plogp_ratio(student_lp, m)


def divergence(teacher_lp: torch.Tensor, student_lp: torch.Tensor, kind: str, beta: float = 0.5) -> torch.Tensor:
    """The named divergence per position.  # ... x V -> ..."""
    if kind == "forward_kl":
        return forward_kl(teacher_lp, student_lp)
    if kind == "reverse_kl":
        return reverse_kl(teacher_lp, student_lp)
    if kind == "jsd":
        return jsd(teacher_lp, student_lp, beta)
    raise ValueError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")


def _tail_log_mass(lp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log of the probability outside ``ids``: logsumexp over the other tokens.  # ... x V -> ... x 1"""
    return lp.scatter(-1, ids, float("-inf")).logsumexp(-1, keepdim=True)


def bucket_view(ids: torch.Tensor, teacher_top_lp: torch.Tensor, student_lp: torch.Tensor,
                teacher_tail_lp: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student on the K + 1 buckets ``ids`` + tail; the teacher's tail is
    ``teacher_tail_lp`` (log of its mass outside ``ids``) or 0 (``None``: renormalised).

    # ids, teacher_top_lp: ... x K; student_lp: ... x V; teacher_tail_lp: ... x 1 -> (... x (K+1), ... x (K+1))
    """
    s_top = student_lp.gather(-1, ids)  # ... x K
    s_tail = _tail_log_mass(student_lp, ids)  # ... x 1
    t_tail = torch.full_like(s_tail, float("-inf")) if teacher_tail_lp is None else teacher_tail_lp.to(s_tail.dtype)
    return torch.cat([teacher_top_lp.to(s_top.dtype), t_tail], -1), torch.cat([s_top, s_tail], -1)


def is_dist_kl(dist, kind: str, tail: str) -> bool:
    """Whether D is exactly ``dist_kl`` (the forward KL, full or on the renormalised top-k): the case
    the fast routes (``dist_kl``, ``dist_kl_logits``, ``fused.ce_and_kl``) compute."""
    return kind == "forward_kl" and (tail == "renormalize" or not dist.sparse)


def dist_kl(dist, student_lp: torch.Tensor) -> torch.Tensor:
    """KL(teacher_T || student_T) per position; ``student_lp`` is log softmax(z / T).  # B x T x V -> B x T"""
    if dist.sparse:
        return basic.kl_sparse(dist.ids, dist.topk_lprobs, student_lp)
    return basic.kl_full(dist.lprobs, student_lp)


def dist_kl_logits(dist, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``dist_kl(dist, log softmax(logits / T))`` without that tensor (``fused``).  # B x T x V -> B x T"""
    if dist.sparse:
        return fused.tempered_kl_sparse(dist.ids, dist.topk_lprobs, logits, temperature)
    return fused.tempered_kl_full(dist.lprobs, logits, temperature)


def distribution_divergence(dist, student_lp: torch.Tensor, kind: str = "forward_kl", beta: float = 0.5,
                            tail: str = "renormalize") -> torch.Tensor:
    """D(teacher, student) per position for a ``fairseq_kd.teacher.TeacherDistribution``
    (no T^2, no mask: the criterion applies them).  # student_lp: B x T x V -> B x T

    Full distributions are compared over the vocabulary; a top-k one (the cache, or
    ``--kd-topk``) on the K + 1 buckets: ``renormalize`` uses the teacher's renormalised
    top-k (all a cache has; forward KL is then exactly ``dist_kl``, word_kd's top-k KL),
    ``keep`` its true tail mass (needs the online teacher's full distribution).
    """
    if is_dist_kl(dist, kind, tail):
        return dist_kl(dist, student_lp)  # two dot products (full) or a gather (top-k): the fast KL
    if not dist.sparse:
        return divergence(dist.lprobs, student_lp, kind, beta)
    if tail == "keep":
        if dist.lprobs is None:
            raise ValueError("--kd-topk-tail keep needs the teacher's full distribution (an online teacher); "
                             "an offline cache only has its renormalised top-k: use --kd-topk-tail renormalize")
        t_top = dist.lprobs.gather(-1, dist.ids)
        t, s = bucket_view(dist.ids, t_top, student_lp, _tail_log_mass(dist.lprobs, dist.ids))
    else:
        if kind == "reverse_kl":
            raise ValueError("reverse KL against a teacher renormalised to its top-k is infinite whenever the "
                             "student puts mass outside them: use --kd-topk-tail keep with an online teacher, "
                             "or forward_kl / jsd")
        t, s = bucket_view(dist.ids, dist.topk_lprobs, student_lp)
    return divergence(t, s, kind, beta)


def student_divergence(dist, logits: torch.Tensor, kind: str = "forward_kl", beta: float = 0.5,
                       tail: str = "renormalize", lprobs: Optional[torch.Tensor] = None,
                       temperature: Optional[float] = None) -> torch.Tensor:
    """D(teacher_T, student_T) per position from the student's ``logits`` at the teacher
    distribution's temperature (no T^2, no mask).  # logits: B x T x V -> B x T

    At T = 1, ``lprobs`` (the CE term's log softmax, when the caller has it) are reused. At
    T != 1 the forward KL is computed from the logits by a compiled kernel (``fused``:
    no tempered log-softmax tensor) when compilation works; otherwise, and for the other
    divergences, from log softmax(z / T).
    """
    T = float(dist.temperature if temperature is None else temperature)  # the student's T (the loss's)
    if T == 1.0:
        student_lp = lprobs if lprobs is not None else basic.student_log_probs(logits)
        return distribution_divergence(dist, student_lp, kind, beta, tail)
    if is_dist_kl(dist, kind, tail) and fused.enabled():
        return dist_kl_logits(dist, logits, T)  # the same value as dist_kl(dist, log softmax(z / T))
    return distribution_divergence(dist, basic.student_log_probs(logits, T), kind, beta, tail)


def check_options(kind: str, beta: float, topk: int, tail: str) -> None:
    """Refuse impossible option combinations before training starts (usage errors)."""
    if kind not in DIVERGENCES:
        raise KDInputError(f"unknown --kd-divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")
    if tail not in TAILS:
        raise KDInputError(f"unknown --kd-topk-tail {tail!r}; choose one of {', '.join(TAILS)}")
    if kind == "jsd":
        check_beta(beta)
    if kind == "reverse_kl" and tail == "renormalize" and topk > 0:
        raise KDInputError("--kd-divergence reverse_kl with --kd-topk needs --kd-topk-tail keep")
