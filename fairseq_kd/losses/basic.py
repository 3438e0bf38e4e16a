"""Word-level KD maths as small pure functions (the criterion only wires them together).

Shapes: ``N`` target positions (B*T flattened, or B x T), ``V`` vocabulary, ``K`` top-k.
Everything is computed in fp32 log space, whatever the model's dtype, so fp16/bf16
training cannot under/overflow the KL.
"""
import math
from typing import Optional, Tuple

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


def selection_mask(ce: torch.Tensor, valid: torch.Tensor, mode: str, ratio: float,
                   queue: Optional["CEQueue"] = None, feed: bool = True) -> torch.Tensor:
    """Which positions get the KD term (selective distillation, Wang et al. 2021).

    The positions whose student cross-entropy ``ce`` is highest are selected: the top
    ``ratio`` of each sentence (``word``), of the batch (``batch``), or above the
    (1 - ratio) quantile of a global queue of the CE values of earlier updates
    (``global``; ``feed`` adds this batch's values to the queue, for training batches
    only; while the queue is empty the batch's own quantile is used).
    ``ce``/``valid``: B x T. Returns a bool mask B x T (always within ``valid``).
    """
    if mode == "none" or ratio >= 1.0:
        return valid
    ce = ce.detach().float().masked_fill(~valid, float("-inf"))
    if mode == "word":
        lengths = valid.sum(-1, keepdim=True)  # B x 1
        keep = torch.ceil(lengths.float() * ratio).long()
        rank = ce.argsort(dim=-1, descending=True).argsort(dim=-1)  # position's rank in its row
        return (rank < keep) & valid
    if mode == "global":
        if queue is None:
            raise ValueError("global selection needs a CEQueue")
        threshold = queue.threshold(ratio)
        if feed:
            queue.add(ce[valid])
        if threshold is not None:
            return (ce >= threshold.to(ce.device)) & valid
        mode = "batch"  # first update: no history yet
    if mode == "batch":
        flat = ce[valid]
        if flat.numel() == 0:
            return valid
        keep = max(1, math.ceil(flat.numel() * ratio))
        threshold = flat.topk(min(keep, flat.numel())).values[-1]
        return (ce >= threshold) & valid
    raise ValueError(f"unknown selection mode {mode!r}")


class CEQueue:
    """FIFO of the token cross-entropies of recent updates, from every worker.

    Its (1 - ratio) quantile is the global selection threshold. Values of the running
    update wait in ``pending``; ``end_update`` (called once per optimizer step on every
    worker) all-gathers them in rank order and appends them. Every worker and every
    micro-batch of an update thus see the same threshold, and N workers behave like one
    worker with ``--update-freq N``. ``state_dict`` goes into the checkpoint.
    """

    def __init__(self, size: int):
        self.size = size
        self.values = torch.empty(0)
        self.pending = []

    def threshold(self, ratio: float) -> Optional[torch.Tensor]:
        if self.values.numel() == 0:
            return None
        return torch.quantile(self.values, 1.0 - ratio)

    def add(self, ce: torch.Tensor) -> None:
        self.pending.append(ce.detach().float().cpu())

    def end_update(self) -> None:
        from fairseq_kd import distributed

        local = torch.cat(self.pending) if self.pending else torch.empty(0)
        self.pending = []
        gathered = distributed.all_gather_cat(local, device=distributed.backend_device())
        self.values = torch.cat([self.values, gathered.cpu()])[-self.size:]

    def state_dict(self):
        return {"values": self.values.clone()}

    def load_state_dict(self, state) -> None:
        self.values = state["values"].float().cpu()[-self.size:]
        self.pending = []
