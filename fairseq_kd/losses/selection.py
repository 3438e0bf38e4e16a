"""Selective distillation (Wang et al. 2021): which target positions get the KD term."""
import math
from typing import Optional

import torch


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
