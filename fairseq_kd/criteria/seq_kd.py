"""Criterion ``seq_kd``: online sequence-level KD (Kim & Rush 2016).

For each training batch the teacher produces the targets (``--seq-kd-decoding``
greedy / beam / teacher_forcing, set on the task, which puts them in the sample before the
criterion sees it); the student is trained with label-smoothed CE on them. Targets are memoized by sample index under
``<save-dir>/seq_kd_memo`` (each sentence is decoded once per run, also across
resumes). ``--seq-kd-gold-mix p`` trains on the gold target instead with probability p.
Validation batches use the gold targets (a loss comparable across KD methods).
``--kd-hidden-weight`` adds hidden-state distillation (``fairseq_kd.hidden``).
"""
from dataclasses import dataclass, field

from fairseq.criterions import FairseqCriterion, register_criterion
from omegaconf import II

from fairseq_kd import hidden, losses
from fairseq_kd.criteria._common import (add_capacity_term, log_seq_kd_metrics, reduce_kd_metrics, student_log_probs,
                                         teacher_of)
from fairseq_kd.criteria._options import CEConfig, loss_spec
from fairseq_kd.errors import KDInputError
from fairseq_kd.teacher import TeacherRequest


@dataclass
class SeqKDConfig(CEConfig, hidden.HiddenKDConfig):
    report_accuracy: bool = field(default=False, metadata={"help": "log the student's token accuracy"})
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("seq_kd", dataclass=SeqKDConfig)
class SeqKDCriterion(FairseqCriterion):
    """Label-smoothed CE on the teacher's own translations of the batch."""

    def __init__(self, task, label_smoothing, report_accuracy, sentence_avg, kd_hidden_weight=0.0,
                 kd_hidden_loss="mse", kd_hidden_map=None, kd_hidden_decoder=False):
        super().__init__(task)
        self.teacher = teacher_of(task)
        if self.teacher is None or not self.teacher.path:
            raise KDInputError("seq_kd needs --task kd_translation with --teacher-path (for offline distilled data "
                               "made by fairseq-kd-distill, train with label_smoothed_cross_entropy instead)")
        self.spec = loss_spec(None, len(task.target_dictionary), label_smoothing)
        self.report_accuracy, self.sentence_avg = report_accuracy, sentence_avg
        task.use_teacher_targets()  # training samples now carry the teacher's translations
        self.hidden = hidden.build_distiller(self.teacher, kd_hidden_weight, kd_hidden_loss, kd_hidden_map,
                                             kd_hidden_decoder)
        self.request = TeacherRequest(distribution=False, hidden=hidden.teacher_layers(self.hidden))

    def forward(self, model, sample, reduce=True):
        logging_output = {}
        with hidden.capture_student(self.hidden, model) as states:
            net_output = model(**sample["net_input"])
        target = sample["target"]  # B x T
        terms = losses.ce_and_divergence(self.spec, net_output[0], target, self.padding_idx,
                                         log_probs=student_log_probs(model, net_output), reduce=True)
        loss, nll = terms.ce, terms.nll
        sample_size = target.size(0) if self.sentence_avg else sample["ntokens"]
        logging_output.update(nll_loss=nll.data, ntokens=sample["ntokens"], nsentences=target.size(0),
                              sample_size=sample_size)
        if self.report_accuracy:
            valid = target.ne(self.padding_idx)
            logging_output["n_correct"] = (net_output[0].argmax(-1).eq(target) & valid).sum().data
            logging_output["total"] = valid.sum().data
        if self.hidden is not None:  # the teacher's layer outputs on the student's inputs
            loss = hidden.add_hidden_term(self.hidden, states, self.teacher(sample, self.request).hidden, sample,
                                          loss, sample_size, self.padding_idx, logging_output)
        loss = add_capacity_term(model, loss, sample_size, logging_output)
        logging_output["loss"] = loss.data
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        log_seq_kd_metrics(logging_outputs, reduce_kd_metrics(logging_outputs))
        hidden.log_hidden_metrics(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True  # every value is a sum (or a sum and its count); fairseq all-reduces them
