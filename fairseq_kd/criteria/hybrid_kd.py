"""Criterion ``hybrid_kd``: token- and sentence-level KD on teacher-generated targets.

    loss = g * T^2 * KL(teacher_T || student_T) + (1 - g) * label-smoothed CE

both on the teacher's own translation of the batch (the task puts it in the sample, as
for ``seq_kd``: memoized; or the data's targets with ``--seq-kd-targets data``).
``g`` is ``--hybrid-weight`` (fixed) or, with ``--hybrid-gate learned``, sigmoid of a
learnable scalar initialised at logit(--hybrid-weight) and trained with the student
(arXiv 2404.14827's gate; it drifts to whichever loss is smaller, see
``fairseq_kd.gates``), or, with ``--hybrid-gate uncertainty``, Kendall et al.'s uncertainty
weighting, which balances the two instead. ``gate`` (the token share of the weights),
``w_tok`` and ``w_sent`` are logged. ``--kd-divergence`` replaces the KL
(``fairseq_kd.divergences``); ``--kd-hidden-weight`` adds hidden-state distillation.
The teacher's distribution comes from ``fairseq_kd.teacher.TeacherSource`` (online teacher, ensemble, or the offline cache: as in ``word_kd``). Validation batches use
the gold targets.
"""
import math
from dataclasses import dataclass, field

import torch
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import ChoiceEnum
from omegaconf import II

from fairseq_kd import divergences, gates, hidden, validate
from fairseq_kd.criteria._common import add_capacity_term, log_averaged, log_seq_kd_metrics, reduce_kd_metrics
from fairseq_kd.criteria._options import DivergenceConfig, check_divergence_options
from fairseq_kd.errors import KDInputError

HYBRID_GATE_CHOICES = ChoiceEnum(list(gates.GATES))


@dataclass
class HybridKDConfig(DivergenceConfig, hidden.HiddenKDConfig):
    hybrid_weight: float = field(
        default=0.5, metadata={"help": "weight g of the token-level KD term (initial value when learned)"})
    hybrid_gate: HYBRID_GATE_CHOICES = field(
        default="fixed", metadata={"help": "fixed weight; learned gate g = sigmoid(w) (arXiv 2404.14827: collapses "
                                           "onto the smaller loss); uncertainty: Kendall et al. 2018 weighting "
                                           "with learned log-variances (balances the two losses)"})
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

    def __init__(self, task, hybrid_weight, hybrid_gate, kd_temperature, kd_topk, label_smoothing, sentence_avg,
                 kd_divergence="forward_kl", kd_jsd_beta=0.5, kd_topk_tail="renormalize", kd_hidden_weight=0.0,
                 kd_hidden_loss="mse", kd_hidden_map=None, kd_hidden_decoder=False):
        super().__init__(task)
        if not hasattr(task, "use_teacher_targets") or not (task.cfg.teacher_path or task.cfg.teacher_cache):
            raise ValueError("hybrid_kd needs --task kd_translation with --teacher-path (or --teacher-cache "
                             "and --seq-kd-targets data)")
        if not 0.0 < hybrid_weight < 1.0 and str(hybrid_gate) in ("learned", "uncertainty"):
            raise ValueError(f"--hybrid-weight must be in (0, 1) for a {hybrid_gate} gate, got {hybrid_weight}")
        if not 0.0 <= hybrid_weight <= 1.0:
            raise ValueError(f"--hybrid-weight must be in [0, 1], got {hybrid_weight}")
        if kd_temperature <= 0:
            raise ValueError(f"--kd-temperature must be > 0, got {kd_temperature}")
        validate.kd_criterion_options(task, label_smoothing, kd_topk)
        self.T, self.topk, self.eps, self.sentence_avg = kd_temperature, kd_topk, label_smoothing, sentence_avg
        self.learned = str(hybrid_gate) == "learned"
        if self.learned:  # trained with the student: fairseq optimizes and checkpoints criterion parameters
            # shape (1,), not a 0-dim tensor: fairseq's legacy_ddp wrapper cannot all-reduce 0-dim gradients
            self.gate_logit = torch.nn.Parameter(torch.tensor([math.log(hybrid_weight / (1.0 - hybrid_weight))]))
        elif str(hybrid_gate) == "uncertainty":  # learned log-variances, also criterion parameters
            self.balance = gates.UncertaintyGate(hybrid_weight)
        else:
            self.fixed_weight = float(hybrid_weight)
        self.divergence, self.jsd_beta, self.topk_tail = str(kd_divergence), kd_jsd_beta, str(kd_topk_tail)
        check_divergence_options(task, self.divergence, kd_jsd_beta, kd_topk, self.topk_tail)
        self.hidden = hidden.build_distiller(task, kd_hidden_weight, kd_hidden_loss, kd_hidden_map, kd_hidden_decoder)
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
        with hidden.capture_student(self.hidden, model) as states:
            net_output = model(**sample["net_input"])
        target = sample["target"]  # B x T (the teacher's translation)
        valid = target.ne(self.padding_idx)  # B x T
        dist = self.teacher.distribution(sample, self.T, self.topk)  # online, ensemble or cache; None: no teacher
        terms = divergences.fused_ce_and_divergence(dist, model, net_output[0], target, self.eps, self.padding_idx,
                                                    self.divergence, self.topk_tail)
        if terms is not None:  # CE, NLL and KL in one compiled pass over the logits
            ce_pos, nll_pos, kl = terms  # B x T each (0 CE / NLL at pad)
            ce, nll, kd = ce_pos.sum(), nll_pos.sum(), self.masked_kd(kl, valid)
        else:
            lprobs = model.get_normalized_probs(net_output, log_probs=True)  # B x T x V (fp32)
            ce, nll = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.reshape(-1), self.eps,
                                              self.padding_idx, reduce=True)
            kd = self.token_kd(dist, net_output[0], valid)  # scalar, summed over tokens
        sample_size = target.size(0) if self.sentence_avg else sample["ntokens"]
        if hasattr(self, "balance"):
            loss, weights = self.balance(kd, ce, sample_size)
        else:
            g = self.gate(kd)
            loss = mix(kd, ce, g)
            weights = {"gate": float(g.detach()), "w_tok": float(g.detach()), "w_sent": 1.0 - float(g.detach())}
        logging_output.update(nll_loss=nll.data, kd_loss=kd.data, ce_loss=ce.data, gate_logs=1, **weights,
                              ntokens=sample["ntokens"], nsentences=target.size(0), sample_size=sample_size)
        loss = hidden.add_hidden_term(self.hidden, states, self.task, sample, loss, sample_size, self.padding_idx,
                                      logging_output)
        loss = add_capacity_term(model, loss, sample_size, logging_output)
        logging_output["loss"] = loss.data
        return loss, sample_size, logging_output

    def token_kd(self, dist, logits, valid) -> torch.Tensor:
        """Summed T^2 * D(teacher_T, student_T) over the non-pad target positions (D = --kd-divergence)."""
        if dist is None:
            return logits.new_zeros((), dtype=torch.float32)
        return self.masked_kd(divergences.student_divergence(dist, logits, self.divergence, self.jsd_beta,
                                                             self.topk_tail), valid)

    def masked_kd(self, kl, valid) -> torch.Tensor:
        """T^2 * the sum of the per-position divergence ``kl`` (B x T) over ``valid`` positions."""
        return (self.T * self.T) * torch.where(valid, kl, torch.zeros_like(kl)).sum()

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        total = reduce_kd_metrics(logging_outputs, token_losses=("kd_loss", "ce_loss"))
        log_averaged(logging_outputs, ("gate", "w_tok", "w_sent"), "gate_logs", round_=4)
        hidden.log_hidden_metrics(logging_outputs)
        log_seq_kd_metrics(logging_outputs, total)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True  # every value is a sum (or a sum and its count); fairseq all-reduces them
