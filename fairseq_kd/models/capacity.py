"""Learned capacity gates for FFN hidden units: hard-concrete (L0) relaxation.

Why hard-concrete (Louizos et al., 2018) rather than a sigmoid gate with an L1 penalty:

* its gates reach *exact* zeros (and ones) in eval mode, so pruning a closed unit removes
  a term that is already 0: the pruned model computes the same function, not an
  approximation that depends on a magnitude threshold;
* the L0 penalty has a closed form, ``P(z > 0)`` per unit, so the *expected number of
  active parameters* is a differentiable quantity that a budget
  (``--capacity-target-params``) can steer directly, in parameters rather than in
  arbitrary gate magnitudes.

Each gate is ``z = clamp(sigmoid((log u - log(1-u) + log_alpha) / beta) * (zeta - gamma) + gamma, 0, 1)``
with ``u ~ U(0, 1)`` in training, and the deterministic
``z = clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)`` in eval mode.
Everything is computed in fp32 and cast to the activations' dtype by the caller, so
fp16/bf16 training sees the same gates.
"""
import math

import torch
import torch.nn as nn

from fairseq_kd.errors import KDInputError

# Stretch interval and temperature from Louizos et al. (2018).
HC_BETA = 2.0 / 3.0
HC_GAMMA = -0.1
HC_ZETA = 1.1


def hard_concrete_sample(log_alpha: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Stochastic gate values in [0, 1] for uniform noise ``u`` (same shape as ``log_alpha``)."""
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / HC_BETA)
    return (s * (HC_ZETA - HC_GAMMA) + HC_GAMMA).clamp(0.0, 1.0)


def hard_concrete_eval(log_alpha: torch.Tensor) -> torch.Tensor:
    """Deterministic gate values used in eval mode (and folded in by pruning)."""
    return (torch.sigmoid(log_alpha) * (HC_ZETA - HC_GAMMA) + HC_GAMMA).clamp(0.0, 1.0)


def hard_concrete_prob_open(log_alpha: torch.Tensor) -> torch.Tensor:
    """``P(z > 0)`` per unit: the expected L0 norm, differentiable in ``log_alpha``."""
    return torch.sigmoid(log_alpha - HC_BETA * math.log(-HC_GAMMA / HC_ZETA))


def init_log_alpha(keep_prob: float) -> float:
    """``log_alpha`` whose eval gate opens with ``sigmoid(log_alpha) = keep_prob``."""
    if not 0.0 < keep_prob < 1.0:
        raise KDInputError(f"--capacity-init-keep must be in (0, 1), got {keep_prob}: pass e.g. 0.9")
    return math.log(keep_prob) - math.log1p(-keep_prob)


def budget_penalty(expected_params: torch.Tensor, gated_params: float, weight: float,
                   target_params=None) -> torch.Tensor:
    """Capacity penalty (already weighted) added per target token by every criterion.

    * no target: ``weight * E[active gated params] / gated_params``, the expected L0
      fraction of the FFN hidden units (scale-free: 1.0 means every unit open);
    * target ``N``: the hinge ``weight * relu(E[active params] - N) / N``, which pushes
      until the expected model size is within budget and then lets the task loss decide.

    ``expected_params`` counts the gated FFN params only when ``target_params`` is None,
    and the whole model otherwise (the caller passes the matching quantity).
    """
    if target_params is None:
        return weight * expected_params / max(gated_params, 1.0)
    return weight * torch.relu(expected_params - float(target_params)) / float(target_params)


class HardConcreteGate(nn.Module):
    """One learned gate per FFN hidden unit; ``forward()`` returns ``z`` (H,) in fp32.

    ``log_alpha = scale * theta`` with ``theta`` the trained parameter: under Adam-type
    optimizers (step size ~ lr whatever the gradient's scale) this multiplies the gates'
    learning rate by ``scale`` without a separate optimizer group, so gates can close within
    an ordinary training run. ``scale`` is a buffer, so a checkpoint is self-describing.
    """

    def __init__(self, n_units: int, init_keep: float = 0.9, scale: float = 10.0):
        super().__init__()
        if scale <= 0:
            raise KDInputError(f"--capacity-gate-lr-scale must be > 0, got {scale}: pass e.g. 10")
        self.n_units = n_units
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.theta = nn.Parameter(torch.full((n_units,), init_log_alpha(init_keep) / scale))

    @property
    def log_alpha(self) -> torch.Tensor:
        """fp32 (H,), differentiable in ``theta``."""
        return self.theta.float() * self.scale.float()

    @torch.no_grad()
    def set_log_alpha(self, values: torch.Tensor) -> None:
        """Overwrite the gates' ``log_alpha`` (tests, benchmarks, warm starts)."""
        self.theta.copy_((values.float() / self.scale.float()).to(self.theta.dtype))

    def forward(self) -> torch.Tensor:
        log_alpha = self.log_alpha
        if self.training:
            # one noise draw per unit per forward pass (shared by the batch)
            u = torch.rand_like(log_alpha).clamp(1e-6, 1.0 - 1e-6)
            return hard_concrete_sample(log_alpha, u)
        return hard_concrete_eval(log_alpha)

    def prob_open(self) -> torch.Tensor:
        """Expected open units per position, fp32 (H,)."""
        return hard_concrete_prob_open(self.log_alpha)

    def eval_values(self) -> torch.Tensor:
        """Deterministic gate values (H,), fp32, no grad."""
        with torch.no_grad():
            return hard_concrete_eval(self.log_alpha)

    def extra_repr(self) -> str:
        return f"n_units={self.n_units}, beta={HC_BETA:.3f}, gamma={HC_GAMMA}, zeta={HC_ZETA}"


def state_log_alpha(state_dict, prefix: str) -> torch.Tensor:
    """``log_alpha`` (fp32) of the gate stored under ``prefix`` (e.g. "...fc1.gate") in a state dict."""
    return state_dict[f"{prefix}.theta"].float() * state_dict[f"{prefix}.scale"].float()
