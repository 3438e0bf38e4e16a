"""fairseq backend for ``fairseq-kd-distill``: fairseq's SequenceGenerator on the teacher (or
ensemble), mixed-length batches with a per-sentence length limit (``decoding.SentenceMaxLen``)."""
from typing import Dict, List

import torch

from fairseq_kd.distill import decoding as dec


class FairseqBackend:
    """Decode with fairseq's SequenceGenerator on the teacher (ensemble)."""

    name = "fairseq"

    def __init__(self, teacher, data, cfg):
        from fairseq_kd.distill.config import teacher_numerics

        self.data, self.cfg = data, cfg
        device, dtype = teacher_numerics(cfg)  # the rule the shard metadata records
        self.device = torch.device(device)
        teacher.to(self.device)
        if dtype == "fp16":
            teacher.half()
        elif dtype == "bf16":
            teacher.to(torch.bfloat16)
        self.decoder = dec.TeacherDecoder(teacher.models, data.tgt_dict, cfg.decoding)

    def decode(self, ids: List[int]) -> Dict[int, List[Dict]]:
        from fairseq import utils

        sample = self.data.pairs.collater([self.data.pairs[i] for i in ids])
        sample = utils.move_to_cuda(sample, device=self.device) if self.device.type == "cuda" else sample
        hyps = self.decoder(sample)
        return {int(i): h for i, h in zip(sample["id"].tolist(), hyps)}
