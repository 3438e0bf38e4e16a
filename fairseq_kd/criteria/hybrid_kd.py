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
(``fairseq_kd.losses``); ``--kd-hidden-weight`` adds hidden-state distillation.
The teacher's distribution comes from the task's ``fairseq_kd.teacher.Teacher`` (online teacher,
ensemble, or the offline cache: as in ``word_kd``). Validation batches use the gold targets.
"""
from dataclasses import dataclass, field

import torch
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum
from omegaconf import II

from fairseq_kd import gates, hidden, losses
from fairseq_kd.criteria._common import (add_capacity_term, log_averaged, log_seq_kd_metrics, plain_softmax,
                                         reduce_kd_metrics, student_log_probs, teacher_of)
from fairseq_kd.criteria._options import KDLossConfig, loss_spec
from fairseq_kd.errors import KDInputError
from fairseq_kd.teacher import TeacherRequest

HYBRID_GATE_CHOICES = ChoiceEnum(list(gates.GATES))


@dataclass
class HybridKDConfig(KDLossConfig, hidden.HiddenKDConfig):
    hybrid_weight: float = field(
        default=0.5, metadata={"help": "weight g of the token-level KD term (initial value when learned)"})
    hybrid_gate: HYBRID_GATE_CHOICES = field(
        default="fixed", metadata={"help": "fixed weight; learned gate g = sigmoid(w) (arXiv 2404.14827: collapses "
                                           "onto the smaller loss); uncertainty: Kendall et al. 2018 weighting "
                                           "with learned log-variances (balances the two losses)"})
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("hybrid_kd", dataclass=HybridKDConfig)
class HybridKDCriterion(FairseqCriterion):
    """Word-level KL plus sentence-level CE on the teacher's translations, fixed or gated."""

    def __init__(self, task, hybrid_weight, hybrid_gate, kd_temperature, kd_topk, label_smoothing, sentence_avg,
                 kd_divergence="forward_kl", kd_jsd_beta=0.5, kd_topk_tail="renormalize", kd_hidden_weight=0.0,
                 kd_hidden_loss="mse", kd_hidden_map=None, kd_hidden_decoder=False):
        super().__init__(task)
        self.teacher = teacher_of(task)
        if self.teacher is None or not (self.teacher.path or self.teacher.cache_dir):
            raise KDInputError("hybrid_kd needs --task kd_translation with --teacher-path (or --teacher-cache "
                               "and --seq-kd-targets data)")
        gate = gates.build_gate(hybrid_gate, hybrid_weight)  # checks the weight for its kind
        # checkpoint keys as in earlier releases: "gate_logit" (learned), "balance.log_vars" (uncertainty)
        if isinstance(gate, gates.LearnedGate):
            self.gate_logit = gate.gate_logit
        elif isinstance(gate, gates.UncertaintyGate):
            self.balance = gate
        self._gate = [gate]  # not a submodule: its parameters are registered above under their old names
        self.spec = loss_spec(self.teacher, len(task.target_dictionary), label_smoothing, kd_temperature, kd_topk,
                              kd_divergence, kd_jsd_beta, kd_topk_tail)
        self.sentence_avg = sentence_avg
        self.hidden = hidden.build_distiller(self.teacher, kd_hidden_weight, kd_hidden_loss, kd_hidden_map,
                                             kd_hidden_decoder)
        self.request = TeacherRequest(self.spec.temperature, self.spec.topk, hidden=hidden.teacher_layers(self.hidden))
        if task.use_teacher_targets() and self.teacher.cache_dir:
            raise KDInputError(f"hybrid_kd with --teacher-cache {self.teacher.cache_dir}: the cache holds the "
                               f"teacher's distributions for the dataset's own targets, not for translations made "
                               f"online. Train on fairseq-kd-distill's output with --seq-kd-targets data.")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "gate_logit"  # checkpoints of earlier releases stored a 0-dim gate
        if key in state_dict and state_dict[key].dim() == 0:
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, model, sample, reduce=True):
        logging_output = {}
        with hidden.capture_student(self.hidden, model) as states:
            net_output = model(**sample["net_input"])
        target = sample["target"]  # B x T (the teacher's translation)
        teacher = self.teacher(sample, self.request)  # online, ensemble or cache; distribution None: no teacher
        terms = losses.ce_and_divergence(self.spec, net_output[0], target, self.padding_idx, teacher.distribution,
                                         student_log_probs(model, net_output), fusable=plain_softmax(model),
                                         reduce=True)
        ce, nll = terms.ce, terms.nll
        kd = terms.kd.sum() if terms.kd is not None else net_output[0].new_zeros((), dtype=torch.float32)
        sample_size = target.size(0) if self.sentence_avg else sample["ntokens"]
        loss, weights = self._gate[0](kd, ce, sample_size)
        logging_output.update(nll_loss=nll.data, kd_loss=kd.data, ce_loss=ce.data, gate_logs=1, **weights,
                              ntokens=sample["ntokens"], nsentences=target.size(0), sample_size=sample_size)
        loss = hidden.add_hidden_term(self.hidden, states, teacher.hidden, sample, loss, sample_size,
                                      self.padding_idx, logging_output)
        loss = add_capacity_term(model, loss, sample_size, logging_output)
        logging_output["loss"] = loss.data
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        total = reduce_kd_metrics(logging_outputs, token_losses=("kd_loss", "ce_loss"))
        log_averaged(logging_outputs, ("gate", "w_tok", "w_sent"), "gate_logs", round_=4)
        hidden.log_hidden_metrics(logging_outputs)
        log_seq_kd_metrics(logging_outputs, total)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True  # every value is a sum (or a sum and its count); fairseq all-reduces them
