"""Physically remove closed FFN units from an adaptive-capacity ``transformer_glu`` state dict.

A unit whose eval-mode hard-concrete gate is exactly 0 contributes nothing, so it is
dropped (its fc1 row(s) and fc2 column); the gate value of every kept unit (in (0, 1])
is folded into its fc2 column, since ``W2 (h * z) = (W2 diag z) h``. The result has no
gates and per-layer widths, and computes the gated model's eval-mode function.
"""
import re
from typing import Dict, List, Tuple

import torch

from fairseq_kd.errors import KDInputError

from fairseq_kd.models.capacity import hard_concrete_eval, state_log_alpha
from fairseq_kd.models.ffn import is_gated

_FC1 = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.fc1\.weight$")


def ffn_layers(state_dict: Dict[str, torch.Tensor]) -> List[Tuple[str, int]]:
    """``[(side, layer_index), ...]`` of every FFN in the state dict, encoder first."""
    found = [(m.group(1), int(m.group(2))) for k in state_dict for m in [_FC1.match(k)] if m]
    return sorted(found, key=lambda s: (s[0] != "encoder", s[1]))


def prune_state_dict(state_dict: Dict[str, torch.Tensor], activation: str):
    """Prune every gated FFN; returns ``(new_state_dict, widths, report)``.

    ``widths`` maps "encoder"/"decoder" to the per-layer hidden widths to rebuild with;
    ``report`` lists ``{"layer", "kept", "total"}`` per FFN. Ungated FFNs are left as they are.
    """
    out = dict(state_dict)
    widths: Dict[str, List[int]] = {"encoder": [], "decoder": []}
    report = []
    for side, i in ffn_layers(state_dict):
        prefix = f"{side}.layers.{i}"
        w1, b1 = state_dict[f"{prefix}.fc1.weight"], state_dict[f"{prefix}.fc1.bias"]
        w2 = state_dict[f"{prefix}.fc2.weight"]  # C x H
        hidden = w2.shape[1]
        gate = f"{prefix}.fc1.gate"
        if f"{gate}.theta" not in state_dict:
            widths[side].append(hidden)
            report.append({"layer": prefix, "kept": hidden, "total": hidden})
            continue
        branches = 2 if is_gated(activation) else 1
        if w1.shape[0] != branches * hidden:
            raise KDInputError(f"{prefix}.fc1 has {w1.shape[0]} rows, expected {branches} x {hidden} for "
                               f"--ffn-activation {activation}: checkpoint and its args disagree")
        z = hard_concrete_eval(state_log_alpha(state_dict, gate))  # H
        keep = torch.nonzero(z > 0, as_tuple=False).flatten()  # K
        rows = torch.cat([keep, keep + hidden]) if is_gated(activation) else keep
        out[f"{prefix}.fc1.weight"] = w1[rows].clone()
        out[f"{prefix}.fc1.bias"] = b1[rows].clone()
        out[f"{prefix}.fc2.weight"] = (w2.float()[:, keep] * z[keep]).to(w2.dtype)  # C x K
        del out[f"{gate}.theta"], out[f"{gate}.scale"]
        widths[side].append(int(keep.numel()))
        report.append({"layer": prefix, "kept": int(keep.numel()), "total": int(hidden)})
    return out, widths, report


def widths_arg(widths: List[int]) -> str:
    """``[512, 480]`` -> ``"512,480"`` (the ``--*-ffn-widths`` format)."""
    return ",".join(str(w) for w in widths)
