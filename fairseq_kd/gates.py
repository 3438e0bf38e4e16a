"""How ``hybrid_kd`` combines its token-level (KD) and sentence-level (CE) losses.

Every gate is a small ``nn.Module`` held by the criterion (fairseq optimizes and
checkpoints criterion parameters under ``"criterion"``, never in the model that
``fairseq-generate`` loads) and maps two summed losses to one summed loss plus the
*effective weights* it applied, for logging.

* ``fixed``:   g * L_tok + (1 - g) * L_sent, g = ``--hybrid-weight``.
* ``learned``: the same with g = sigmoid(w) trained with the student (the literal reading
  of arXiv 2404.14827). d/dw = g (1 - g) (L_tok - L_sent): g always moves towards the
  numerically smaller loss and never stops there while the losses differ, so it
  collapses to 0 or 1 at a speed set by learning rate x updates. A learned minimum,
  not a balance.
* ``uncertainty``: homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018),
  on per-token losses l_i = L_i / n:

      l = l_tok / (2 s_tok^2) + l_sent / (2 s_sent^2) + log s_tok s_sent

  with learned log-variances v_i = log s_i^2 (so l = sum_i 0.5 (exp(-v_i) l_i + v_i)).
  Its minimum over v_i is at s_i^2 = l_i: each loss is divided by its own scale, both
  contribute equally, and the weights settle instead of collapsing (the log s term
  stops them). Effective weights w_i = exp(-v_i) / 2; the logged gate is
  w_tok / (w_tok + w_sent).
"""
import math
from typing import Dict, Tuple

import torch

GATES = ("fixed", "learned", "uncertainty")


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def gate_value(weight_logit: torch.Tensor) -> torch.Tensor:
    """The gate g in (0, 1) from its logit (one value), as a 0-dim tensor."""
    return torch.sigmoid(weight_logit.float()).reshape(())


def mix(token_loss: torch.Tensor, sentence_loss: torch.Tensor, g) -> torch.Tensor:
    """g * token-level + (1 - g) * sentence-level (summed losses)."""
    return g * token_loss + (1.0 - g) * sentence_loss


class FixedGate(torch.nn.Module):
    def __init__(self, weight: float):
        super().__init__()
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"--hybrid-weight must be in [0, 1], got {weight}")
        self.weight = float(weight)

    def forward(self, token_loss: torch.Tensor, sentence_loss: torch.Tensor, n_tokens) -> Tuple[torch.Tensor, Dict]:
        g = self.weight
        return mix(token_loss, sentence_loss, g), {"gate": g, "w_tok": g, "w_sent": 1.0 - g}


class LearnedGate(torch.nn.Module):
    """g = sigmoid(w), w initialised at logit(--hybrid-weight)."""

    def __init__(self, weight: float):
        super().__init__()
        if not 0.0 < weight < 1.0:
            raise ValueError(f"--hybrid-weight must be in (0, 1) for a learned gate, got {weight}")
        # shape (1,): fairseq's legacy_ddp wrapper cannot all-reduce 0-dim gradients
        self.gate_logit = torch.nn.Parameter(torch.tensor([logit(weight)]))

    def forward(self, token_loss, sentence_loss, n_tokens):
        g = gate_value(self.gate_logit)
        loss = mix(token_loss, sentence_loss, g)
        gv = float(g.detach())
        return loss, {"gate": gv, "w_tok": gv, "w_sent": 1.0 - gv}


class UncertaintyGate(torch.nn.Module):
    """Kendall et al. 2018 weighting with learned log-variances (initial weights from --hybrid-weight)."""

    def __init__(self, weight: float = 0.5):
        super().__init__()
        if not 0.0 < weight < 1.0:
            raise ValueError(f"--hybrid-weight must be in (0, 1) for the uncertainty gate, got {weight}")
        # exp(-v)/2 = initial weight  =>  v = -log(2 w)
        self.log_vars = torch.nn.Parameter(torch.tensor([-math.log(2 * weight), -math.log(2 * (1 - weight))]))

    def forward(self, token_loss, sentence_loss, n_tokens):
        v = self.log_vars.float()
        w = 0.5 * torch.exp(-v)  # 2
        # summed losses: the regulariser 0.5 * v_i is per token, so it is scaled by n like the losses' sum
        loss = w[0] * token_loss + w[1] * sentence_loss + 0.5 * v.sum() * float(n_tokens)
        w_tok, w_sent = (float(x) for x in w.detach())
        return loss, {"gate": w_tok / (w_tok + w_sent), "w_tok": w_tok, "w_sent": w_sent}


def build_gate(kind: str, weight: float) -> torch.nn.Module:
    kind = str(kind)
    if kind == "fixed":
        return FixedGate(weight)
    if kind == "learned":
        return LearnedGate(weight)
    if kind == "uncertainty":
        return UncertaintyGate(weight)
    raise ValueError(f"unknown --hybrid-gate {kind!r}; choose one of {', '.join(GATES)}")
