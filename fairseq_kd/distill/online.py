"""Teacher-generated targets for a training batch (criteria ``seq_kd`` and ``hybrid_kd``).

The decoding settings come from the task (``--seq-kd-decoding`` etc.); targets are
memoized by sample index (``memo.TargetMemo``) and produced by the same
``decoding.TeacherDecoder`` as ``fairseq-kd-distill``, so online and offline targets agree.
"""
import atexit
import logging
import os
from typing import Dict, List, Optional, Tuple

import torch

from fairseq_kd.distill import decoding as dec
from fairseq_kd.distill.memo import TargetMemo, memo_key

logger = logging.getLogger(__name__)


def decoding_config_from_task(task_cfg) -> dec.DecodingConfig:
    """The task's ``seq_kd_*`` fields as a ``DecodingConfig``."""
    return dec.DecodingConfig(
        decoding=str(getattr(task_cfg, "seq_kd_decoding", "beam")), beam=int(getattr(task_cfg, "seq_kd_beam", 5)),
        nbest=1, lenpen=float(getattr(task_cfg, "seq_kd_lenpen", 1.0)),
        sampling_topk=int(getattr(task_cfg, "seq_kd_sampling_topk", -1)),
        sampling_topp=float(getattr(task_cfg, "seq_kd_sampling_topp", -1.0)),
        max_len_a=float(getattr(task_cfg, "seq_kd_max_len_a", 1.2)),
        max_len_b=int(getattr(task_cfg, "seq_kd_max_len_b", 10)))


def select_rows(net_input: Dict, rows: torch.Tensor) -> Dict:
    """The sub-batch ``rows`` of a fairseq ``net_input`` (batch-first tensors)."""
    return {k: (v.index_select(0, rows) if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in net_input.items()}


class OnlineTargets:
    """Replace a batch's gold targets by the teacher's (memoized), optionally mixing gold."""

    def __init__(self, task, save_dir: Optional[str], use_memo: bool = True, gold_mix: float = 0.0,
                 seed: int = 1, flush_every: int = 1000):
        if not 0.0 <= gold_mix <= 1.0:
            raise ValueError(f"--seq-kd-gold-mix must be in [0, 1], got {gold_mix}")
        self.task, self.save_dir, self.use_memo, self.gold_mix = task, save_dir, use_memo, gold_mix
        self.flush_every = flush_every
        self.cfg = decoding_config_from_task(task.cfg)
        self.rng = torch.Generator().manual_seed(int(seed))
        self.memo: Optional[TargetMemo] = None
        self.decoder: Optional[dec.TeacherDecoder] = None
        self.decoded = 0  # sentences decoded by the teacher in this process
        self.fallbacks = 0  # of those, sentences whose hypothesis was empty: trained on the gold target

    def _setup(self, teacher):
        if self.decoder is None:
            self.decoder = dec.TeacherDecoder(teacher.models, teacher.tgt_dict, self.cfg)
        if self.memo is None:
            folder = None
            if self.use_memo and self.save_dir:
                if hasattr(self.task, "memo_key_parts"):  # data content, shard, noise (kd_translation)
                    parts = self.task.memo_key_parts()
                else:
                    parts = [os.path.abspath(str(getattr(self.task.cfg, "data", "")).split(":")[0]),
                             str(getattr(self.task.cfg, "train_subset", "train"))]
                key = memo_key(teacher.fingerprint(), self.cfg.signature(), *parts)
                folder = os.path.join(self.save_dir, "seq_kd_memo", key)
            try:
                from fairseq.distributed import utils as dist_utils

                rank = dist_utils.get_global_rank()
            except Exception:  # no distributed setup
                rank = 0
            self.memo = TargetMemo(folder, self.flush_every, rank)
            atexit.register(self.memo.flush)

    def targets(self, sample: Dict) -> Tuple[List[torch.Tensor], int]:
        """The teacher's target per sentence of ``sample`` (CPU LongTensors ending in EOS)."""
        teacher = self.task.load_teacher()
        self._setup(teacher)
        ids = sample["id"].tolist()
        missing = [j for j, i in enumerate(ids) if i not in self.memo]
        teacher_input = self.task.teacher_net_input(sample)
        eos = teacher.tgt_dict.eos()
        if missing:  # one call for the whole batch: TeacherDecoder's outputs do not depend on batching
            rows = torch.tensor(missing, device=sample["id"].device)
            sub = {"net_input": select_rows(sample["net_input"], rows)}
            if sample.get("target") is not None:
                sub["target"] = sample["target"].index_select(0, rows)
            hyps = self.decoder(sub, trim_left_pad(select_rows(teacher_input, rows), teacher.src_dict.pad()))
            for j, h in zip(missing, hyps):
                tokens = h[0]["tokens"] if h else None
                if tokens is None or dec.is_empty(tokens, eos):  # empty hypothesis: fall back to gold (counted)
                    tokens = strip_pad(sample["target"][j], teacher.tgt_dict.pad()).cpu()
                    self.fallbacks += 1
                    if self.fallbacks == 1:
                        logger.warning("seq-KD: the teacher's hypothesis of sentence %d is empty; it trains on the "
                                       "gold target (counted in the log as teacher_empty)", ids[j])
                self.memo.put(ids[j], tokens.tolist())
            self.decoded += len(missing)
        out = [torch.tensor(self.memo.get(i), dtype=torch.long) for i in ids]
        n_gold = 0
        if self.gold_mix > 0 and sample.get("target") is not None:
            use_gold = torch.rand(len(ids), generator=self.rng) < self.gold_mix
            pad = teacher.tgt_dict.pad()
            for j in torch.nonzero(use_gold).flatten().tolist():
                out[j] = strip_pad(sample["target"][j], pad).cpu()
            n_gold = int(use_gold.sum())
        return out, n_gold

    def flush(self) -> None:
        """Write the memo's pending targets to disk."""
        if self.memo is not None:
            self.memo.flush()

    def distilled_sample(self, sample: Dict) -> Dict:
        """A shallow copy of ``sample`` with teacher targets and matching ``prev_output_tokens``."""
        targets, n_gold = self.targets(sample)
        d = self.task.target_dictionary
        device = sample["net_input"]["src_tokens"].device
        target, prev = dec.collate_targets(targets, d.pad(), d.eos(), device=device)  # B x T', B x T'
        new = dict(sample)
        new["net_input"] = dict(sample["net_input"], prev_output_tokens=prev)
        new["target"] = target
        new["ntokens"] = int(target.ne(d.pad()).sum())
        new["gold_target"] = sample.get("target")
        new["seq_kd_gold"] = n_gold
        return new


def trim_left_pad(net_input: Dict, pad: int) -> Dict:
    """Drop all-pad leading columns of left-padded ``src_tokens`` (a sub-batch of shorter rows)."""
    src = net_input["src_tokens"]
    keep = src.ne(pad).any(0).nonzero()
    start = int(keep[0]) if keep.numel() else 0
    return dict(net_input, src_tokens=src[:, start:]) if start > 0 else net_input


def strip_pad(row: torch.Tensor, pad: int) -> torch.Tensor:
    return row[row.ne(pad)]
