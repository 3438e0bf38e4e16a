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
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from omegaconf import II

from fairseq_kd import hidden, validate
from fairseq_kd.criteria._common import add_capacity_term, log_seq_kd_metrics, reduce_kd_metrics


@dataclass
class SeqKDConfig(hidden.HiddenKDConfig):
    label_smoothing: float = field(default=0.0, metadata={"help": "epsilon for label smoothing"})
    report_accuracy: bool = field(default=False, metadata={"help": "log the student's token accuracy"})
    sentence_avg: bool = II("optimization.sentence_avg")


def ls_ce(model, net_output, target, eps: float, pad: int):
    """Summed label-smoothed CE and NLL of ``target`` (fairseq's own function).  # scalars"""
    lprobs = model.get_normalized_probs(net_output, log_probs=True)  # B x T x V
    return label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.reshape(-1), eps, pad, reduce=True)


@register_criterion("seq_kd", dataclass=SeqKDConfig)
class SeqKDCriterion(FairseqCriterion):
    """Label-smoothed CE on the teacher's own translations of the batch."""

    def __init__(self, task, label_smoothing, report_accuracy, sentence_avg, kd_hidden_weight=0.0,
                 kd_hidden_loss="mse", kd_hidden_map=None, kd_hidden_decoder=False):
        super().__init__(task)
        if not getattr(task.cfg, "teacher_path", None) or not hasattr(task, "use_teacher_targets"):
            raise ValueError("seq_kd needs --task kd_translation with --teacher-path (for offline distilled data "
                             "made by fairseq-kd-distill, train with label_smoothed_cross_entropy instead)")
        validate.kd_criterion_options(task, label_smoothing)
        self.eps, self.report_accuracy, self.sentence_avg = label_smoothing, report_accuracy, sentence_avg
        task.use_teacher_targets()  # training samples now carry the teacher's translations
        self.hidden = hidden.build_distiller(task, kd_hidden_weight, kd_hidden_loss, kd_hidden_map, kd_hidden_decoder)

    def forward(self, model, sample, reduce=True):
        logging_output = {}
        with hidden.capture_student(self.hidden, model) as states:
            net_output = model(**sample["net_input"])
        target = sample["target"]  # B x T
        loss, nll = ls_ce(model, net_output, target, self.eps, self.padding_idx)
        sample_size = target.size(0) if self.sentence_avg else sample["ntokens"]
        logging_output.update(nll_loss=nll.data, ntokens=sample["ntokens"], nsentences=target.size(0),
                              sample_size=sample_size)
        if self.report_accuracy:
            valid = target.ne(self.padding_idx)
            logging_output["n_correct"] = (net_output[0].argmax(-1).eq(target) & valid).sum().data
            logging_output["total"] = valid.sum().data
        loss = hidden.add_hidden_term(self.hidden, states, self.task, sample, loss, sample_size, self.padding_idx,
                                      logging_output)
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
