"""The one entry every criterion uses: label-smoothed CE of the target plus T^2 * D(teacher_T, student_T).

    ce  = fairseq's label-smoothed NLL of the target (``--label-smoothing`` eps)
    kd  = T^2 * D(p_teacher_T, p_student_T) per non-pad position, 0 at padding

``D`` is ``--kd-divergence`` (``divergences``), on the teacher's top-k plus a tail where the
teacher is top-k; T is ``--kd-temperature``: the teacher's distribution is asked for at T
(``teacher.TeacherRequest``), the student is tempered here, and T^2 (Hinton et al. 2015: keeps
gradient magnitudes comparable across temperatures) is applied here and nowhere else.

Two routes, the same values: while ``torch.compile`` works and D is the forward KL of a plain
softmax decoder, CE, NLL and KL come from one compiled pass over the logits (``fused.ce_and_kl``);
otherwise from the student's log-softmax (fairseq's ``label_smoothed_nll_loss``, then D).
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

from fairseq_kd.losses import basic, divergences, fused


@dataclass(frozen=True)
class KDLossSpec:
    """The shared loss options of a criterion, checked once (``fairseq_kd.validate.kd_loss_options``)."""
    temperature: float = 1.0
    topk: int = 0
    label_smoothing: float = 0.0
    divergence: str = "forward_kl"
    jsd_beta: float = 0.5
    topk_tail: str = "renormalize"


@dataclass(frozen=True)
class LossTerms:
    """``ce``/``nll``: summed scalars (``reduce``) or B x T; ``kd``: B x T, T^2 * D, 0 at pad (None
    without a teacher distribution)."""
    ce: torch.Tensor
    nll: torch.Tensor
    kd: Optional[torch.Tensor]
    dist: Optional[object] = None
    teacher_gold: Optional[torch.Tensor] = None  # B x T, when the fused pass computed it

    def teacher_nll(self, valid: torch.Tensor) -> Optional[torch.Tensor]:
        """The teacher's summed NLL of the target over ``valid`` positions (at T = 1), or None."""
        if self.dist is None:
            return None
        gold = self.teacher_gold if self.teacher_gold is not None else self.dist.gold_lprobs  # B x T
        return -(gold * valid).sum()


def ce_and_divergence(spec: KDLossSpec, logits: torch.Tensor, target: torch.Tensor, pad: int, dist=None,
                      log_probs: Optional[Callable[[], torch.Tensor]] = None, fusable: bool = True,
                      reduce: bool = False) -> LossTerms:
    """CE and NLL of ``target`` and T^2 * D(teacher_T, student_T) for the student's ``logits``.

    ``dist``: the teacher's ``TeacherDistribution`` at ``spec.temperature`` (None: CE only).
    ``log_probs()``: the student's fp32 log-probabilities at T = 1 (default log softmax(logits); a
    criterion passes ``model.get_normalized_probs``). ``fusable``: the decoder's output is a plain
    softmax of ``logits`` (no adaptive softmax). ``reduce``: CE and NLL summed by fairseq's own
    reduction (``kd`` stays per position: criteria select and mix it per token).
    # logits: B x T x V, target: B x T
    """
    T = float(spec.temperature)
    if dist is not None and float(dist.temperature) != T:  # the teacher was asked for spec.temperature
        raise ValueError(f"the teacher's distribution is at T = {dist.temperature}, the loss at T = {T}")
    valid = target.ne(pad)  # B x T
    terms = None
    if dist is not None and fusable and divergences.is_dist_kl(dist, spec.divergence, spec.topk_tail):
        terms = fused.ce_and_kl(dist, logits, target, spec.label_smoothing, pad, T)
    if terms is not None:  # one compiled pass over the logits
        ce, nll, d, gold = terms  # B x T each (0 CE / NLL at pad)
        if reduce:
            ce, nll = ce.sum(), nll.sum()
    else:
        lprobs = log_probs() if log_probs is not None else basic.student_log_probs(logits)  # B x T x V
        ce, nll = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.reshape(-1),
                                          spec.label_smoothing, pad, reduce=reduce)
        if not reduce:
            ce, nll = ce.view_as(target), nll.view_as(target)
        gold = None
        d = None if dist is None else divergences.student_divergence(
            dist, logits, spec.divergence, spec.jsd_beta, spec.topk_tail, lprobs=lprobs, temperature=T)
    kd = None if d is None else (T * T) * torch.where(valid, d, torch.zeros_like(d))
    return LossTerms(ce, nll, kd, dist, gold)
