"""Criterion ``hybrid_kd``: token- and sentence-level KD on teacher-generated targets.

    loss = g * T^2 * KL(teacher_T || student_T) + (1 - g) * label-smoothed CE

both on the teacher's own translation of the batch (the task puts it in the sample, as
for ``seq_kd``: memoized; or the data's targets with ``--seq-kd-targets data``).
``g`` is ``--hybrid-weight`` (fixed) or, with ``--hybrid-gate learned``, sigmoid of a
learnable scalar initialised at logit(--hybrid-weight) and trained with the student
(arXiv 2404.14827's gate balancing token- and sentence-level losses); it is logged as
``gate``. The teacher's distribution comes from ``fairseq_kd.teacher.TeacherSource``
(online teacher, ensemble, or the offline cache: as in ``word_kd``). Validation batches use
the gold targets.
"""
import math
from dataclasses import dataclass, field

import torch
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from fairseq_kd import kd_losses
from fairseq_kd.criteria._common import add_capacity_term, log_averaged, log_seq_kd_metrics, reduce_kd_metrics
from fairseq_kd.errors import KDInputError

HYBRID_GATE_CHOICES = ChoiceEnum(["fixed", "learned"])


@dataclass
class HybridKDConfig(FairseqDataclass):
    hybrid_weight: float = field(
        default=0.5, metadata={"help": "weight g of the token-level KD term (initial value when learned)"})
    hybrid_gate: HYBRID_GATE_CHOICES = field(
        default="fixed", metadata={"help": "fixed weight, or a learned gate g = sigmoid(w)"})
    kd_temperature: float = field(default=1.0, metadata={"help": "softmax temperature T of the token-level term"})
    kd_topk: int = field(default=0, metadata={"help": "restrict the teacher to its top-k tokens; 0 = all"})
    label_smoothing: float = field(default=0.0, metadata={"help": "epsilon for label smoothing of the CE term"})
    sentence_avg: bool = II("optimization.sentence_avg")


def gate_value(weight_logit: torch.Tensor) -> torch.Tensor:
    """The gate g in (0, 1) from its logit (one value), as a 0-dim tensor."""
    return torch.sigmoid(weight_logit.float()).reshape(())


def mix(token_loss: torch.Tensor, sentence_loss: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """g * token-level + (1 - g) * sentence-level (summed losses)."""
    return g * token_loss + (1.0 - g) * sentence_loss


@register_criterion("hybrid_kd", dataclass=HybridKDConfig)
class HybridKDCriterion(FairseqCriterion):
    """Word-level KL plus sentence-level CE on the teacher's translations, fixed or gated."""

    def __init__(self, task, hybrid_weight, hybrid_gate, kd_temperature, kd_topk, label_smoothing, sentence_avg):
        super().__init__(task)
        if not hasattr(task, "use_teacher_targets") or not (task.cfg.teacher_path or task.cfg.teacher_cache):
            raise ValueError("hybrid_kd needs --task kd_translation with --teacher-path (or --teacher-cache "
                             "and --seq-kd-targets data)")
        if not 0.0 < hybrid_weight < 1.0 and str(hybrid_gate) == "learned":
            raise ValueError(f"--hybrid-weight must be in (0, 1) for a learned gate, got {hybrid_weight}")
        if not 0.0 <= hybrid_weight <= 1.0:
            raise ValueError(f"--hybrid-weight must be in [0, 1], got {hybrid_weight}")
        if kd_temperature <= 0:
            raise ValueError(f"--kd-temperature must be > 0, got {kd_temperature}")
        self.T, self.topk, self.eps, self.sentence_avg = kd_temperature, kd_topk, label_smoothing, sentence_avg
        self.learned = str(hybrid_gate) == "learned"
        if self.learned:  # trained with the student: fairseq optimizes and checkpoints criterion parameters
            # shape (1,), not a 0-dim tensor: fairseq's legacy_ddp wrapper cannot all-reduce 0-dim gradients
            self.gate_logit = torch.nn.Parameter(torch.tensor([math.log(hybrid_weight / (1.0 - hybrid_weight))]))
        else:
            self.fixed_weight = float(hybrid_weight)
        if task.use_teacher_targets() and task.cfg.teacher_cache:
            raise KDInputError(f"hybrid_kd with --teacher-cache {task.cfg.teacher_cache}: the cache holds the "
                               f"teacher's distributions for the dataset's own targets, not for translations made "
                               f"online. Train on fairseq-kd-distill's output with --seq-kd-targets data.")
        self.teacher = task.teacher_source

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "gate_logit"  # checkpoints of earlier releases stored a 0-dim gate
        if key in state_dict and state_dict[key].dim() == 0:
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def gate(self, reference: torch.Tensor) -> torch.Tensor:
        if self.learned:
            return gate_value(self.gate_logit)
        return reference.new_tensor(self.fixed_weight, dtype=torch.float32)

    def forward(self, model, sample, reduce=True):
        logging_output = {}
        net_output = model(**sample["net_input"])
        target = sample["target"]  # B x T (the teacher's translation)
        valid = target.ne(self.padding_idx)  # B x T
        lprobs = model.get_normalized_probs(net_output, log_probs=True)  # B x T x V (fp32)
        ce, nll = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.reshape(-1), self.eps,
                                          self.padding_idx, reduce=True)
        kd = self.token_kd(sample, net_output[0], valid)  # scalar, summed over tokens
        g = self.gate(kd)
        loss = mix(kd, ce, g)
        sample_size = target.size(0) if self.sentence_avg else sample["ntokens"]
        logging_output.update(nll_loss=nll.data, kd_loss=kd.data, ce_loss=ce.data, gate=float(g.detach()), gate_logs=1,
                              ntokens=sample["ntokens"], nsentences=target.size(0), sample_size=sample_size)
        loss = add_capacity_term(model, loss, sample_size, logging_output)
        logging_output["loss"] = loss.data
        return loss, sample_size, logging_output

    def token_kd(self, sample, logits, valid) -> torch.Tensor:
        """Summed T^2 * KL(teacher_T || student_T) over the non-pad target positions."""
        dist = self.teacher.distribution(sample, self.T, self.topk)  # online, ensemble or cache
        if dist is None:
            return logits.new_zeros((), dtype=torch.float32)
        kl = dist.kl(kd_losses.student_log_probs(logits, self.T))  # B x T
        return (self.T * self.T) * (kl * valid).sum()

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        total = reduce_kd_metrics(logging_outputs, token_losses=("kd_loss", "ce_loss"))
        log_averaged(logging_outputs, ("gate",), "gate_logs", round_=4)
        log_seq_kd_metrics(logging_outputs, total)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True  # every value is a sum (or a sum and its count); fairseq all-reduces them
