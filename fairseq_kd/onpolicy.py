"""On-policy pieces for ``onpolicy_kd``: the lambda schedule, student sampling, the rebuilt batch.

* **Schedule.** ``constant``: lambda(u) = lambda. ``exp``: lambda(u) = lambda (1 - r^u)
  at update u, r = ``--onpolicy-decay``: the probability of training on gold prefixes
  decays exponentially from 1, as ImitKD (Lin et al. 2020) decays its oracle share.
* **Sampling.** The student decodes the batch's sources autoregressively with fairseq's
  incremental decoder state, under ``torch.no_grad`` and in eval mode (no dropout; the
  training mode is restored), either greedily or by sampling softmax(z / tau) at
  ``--onpolicy-temperature`` tau. Per sentence, at most a * source length + b tokens
  before a forced EOS; padding is never produced.
* **Batch.** The outputs become the decoder's input/target exactly as fairseq collates a
  target: ``target = y_1 .. y_n EOS PAD..``, ``prev_output_tokens = EOS y_1 .. y_n PAD..``.
"""
import math
from typing import Dict

import torch


def schedule_lambda(base: float, schedule: str, decay: float, num_updates: int) -> float:
    """The on-policy probability at update ``num_updates``."""
    if schedule == "constant":
        return float(base)
    if schedule == "exp":
        return float(base) * (1.0 - math.pow(decay, max(0, num_updates)))
    raise ValueError(f"unknown --onpolicy-schedule {schedule!r}; choose constant or exp")


@torch.no_grad()
def sample_outputs(model, net_input: Dict, eos: int, pad: int, temperature: float = 1.0, greedy: bool = False,
                   max_len_a: float = 1.2, max_len_b: int = 10) -> torch.Tensor:
    """The student's own translations of the batch: ``B x (1 + L)`` starting with EOS (the BOS
    fairseq uses), each row ending with EOS then PAD."""
    was_training = model.training
    model.eval()
    try:
        src = net_input["src_tokens"]  # B x S
        src_len = src.ne(pad).sum(-1)  # B
        max_len = (src_len.float() * max_len_a + max_len_b).long().clamp_min(1)  # B: tokens incl. EOS
        encoder_out = model.encoder(src, src_lengths=net_input.get("src_lengths", src_len))
        tokens = src.new_full((src.size(0), 1), eos)  # B x 1
        done = torch.zeros_like(src_len, dtype=torch.bool)
        state: Dict = {}
        for step in range(int(max_len.max())):
            logits = model.decoder(tokens, encoder_out=encoder_out, incremental_state=state)[0][:, -1]  # B x V
            lp = torch.log_softmax(logits.float() / (1.0 if greedy else temperature), dim=-1)
            lp[:, pad] = float("-inf")
            last = step + 1 >= max_len  # this token is the last allowed: EOS
            lp[last] = float("-inf")
            lp[last, eos] = 0.0
            nxt = lp.argmax(-1) if greedy else torch.multinomial(lp.exp(), 1).squeeze(-1)  # B
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            tokens = torch.cat([tokens, nxt.unsqueeze(-1)], dim=1)
            done |= nxt.eq(eos)
            if bool(done.all()):
                break
        return tokens
    finally:
        model.train(was_training)


def onpolicy_sample(sample: Dict, tokens: torch.Tensor, pad: int) -> Dict:
    """``sample`` with the decoder input/target replaced by ``tokens`` (``sample_outputs``' rows)."""
    prev, target = tokens[:, :-1].clone(), tokens[:, 1:].clone()  # B x L each
    prev[target.eq(pad)] = pad  # the EOS after a finished row is padding for the decoder too
    new = dict(sample)
    new["net_input"] = dict(sample["net_input"], prev_output_tokens=prev)
    if "teacher_net_input" in sample and sample["teacher_net_input"] is not None:
        new["teacher_net_input"] = dict(sample["teacher_net_input"], prev_output_tokens=prev)
    new["target"] = target
    new["ntokens"] = int(target.ne(pad).sum())
    return new
