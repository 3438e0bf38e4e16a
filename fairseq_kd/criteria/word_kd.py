"""Criterion ``word_kd``: word-level knowledge distillation (Hinton et al.; Kim & Rush 2016).

loss = (1 - alpha) * label-smoothed NLL(gold) + alpha * T^2 * KL(teacher_T || student_T)

summed over non-pad target tokens (``--kd-divergence reverse_kl|jsd`` replaces the KL,
``fairseq_kd.losses``; ``--kd-hidden-weight`` adds hidden-state distillation,
``fairseq_kd.hidden``). The teacher is the task's ``fairseq_kd.teacher.Teacher`` (online, an
ensemble averages probabilities, or its offline top-k cache, ``--teacher-cache``). With
``--kd-alpha 0`` no teacher is needed and the loss is exactly fairseq's
``label_smoothed_cross_entropy``.
"""
from dataclasses import dataclass, field

import torch
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum
from omegaconf import II

from fairseq_kd import hidden, losses, validate
from fairseq_kd.criteria._common import (add_capacity_term, plain_softmax, reduce_kd_metrics, student_log_probs,
                                         teacher_of)
from fairseq_kd.criteria._options import KDLossConfig, loss_spec
from fairseq_kd.errors import KDInputError
from fairseq_kd.losses.selection import CEQueue, selection_mask
from fairseq_kd.teacher import TeacherRequest

KD_SELECTION_CHOICES = ChoiceEnum(["none", "word", "batch", "global"])


@dataclass
class WordKDConfig(KDLossConfig, hidden.HiddenKDConfig):
    kd_alpha: float = field(default=0.5, metadata={"help": "weight of the KD term; 0 = label-smoothed CE only"})
    kd_selection: KD_SELECTION_CHOICES = field(
        default="none", metadata={"help": "selective distillation: distil only on the highest-CE tokens of each "
                                          "sentence (word), batch (batch) or a global queue (global)"}
    )
    kd_selection_ratio: float = field(default=0.5, metadata={"help": "fraction of tokens selected for the KD term"})
    kd_selection_queue_size: int = field(
        default=30000, metadata={"help": "token CE values kept for --kd-selection global"}
    )
    report_accuracy: bool = field(default=False, metadata={"help": "log the student's token accuracy"})
    ignore_prefix_size: int = field(default=0, metadata={"help": "ignore the first N target tokens"})
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("word_kd", dataclass=WordKDConfig)
class WordKDCriterion(FairseqCriterion):
    """Label-smoothed CE on the gold target interpolated with the teacher's KL at temperature T."""

    def __init__(self, task, kd_alpha, kd_temperature, label_smoothing, kd_topk, kd_selection,
                 kd_selection_ratio, kd_selection_queue_size, report_accuracy, ignore_prefix_size, sentence_avg,
                 kd_divergence="forward_kl", kd_jsd_beta=0.5, kd_topk_tail="renormalize", kd_hidden_weight=0.0,
                 kd_hidden_loss="mse", kd_hidden_map=None, kd_hidden_decoder=False):
        super().__init__(task)
        validate.probability("--kd-alpha", kd_alpha)
        validate.kd_criterion_options(None, kd_selection_ratio=kd_selection_ratio,
                                      kd_selection_queue_size=kd_selection_queue_size)
        self.teacher = teacher_of(task)  # fairseq_kd.teacher.Teacher, or None for a plain translation task
        self.spec = loss_spec(self.teacher, len(task.target_dictionary), label_smoothing, kd_temperature, kd_topk,
                              kd_divergence, kd_jsd_beta, kd_topk_tail)
        if kd_alpha > 0 and not (self.teacher is not None and (self.teacher.path or self.teacher.cache_dir)):
            raise KDInputError("word_kd with --kd-alpha > 0 needs --task kd_translation with --teacher-path or "
                               "--teacher-cache")
        self.alpha, self.selection, self.selection_ratio = kd_alpha, str(kd_selection), kd_selection_ratio
        self.queue = CEQueue(kd_selection_queue_size) if self.selection == "global" else None
        if self.queue is not None and self.teacher is not None:  # shared by workers, checkpointed
            task.register_update_hook(self.queue.end_update)
            task.register_state("kd_selection_queue", self.queue)
        self.report_accuracy, self.ignore_prefix_size, self.sentence_avg = report_accuracy, ignore_prefix_size, sentence_avg
        self.hidden = hidden.build_distiller(self.teacher, kd_hidden_weight, kd_hidden_loss, kd_hidden_map,
                                             kd_hidden_decoder)
        self.request = TeacherRequest(self.spec.temperature, self.spec.topk, ignore_prefix_size,
                                      distribution=kd_alpha > 0, hidden=hidden.teacher_layers(self.hidden))

    # --- forward ------------------------------------------------------------------
    def forward(self, model, sample, reduce=True):
        with hidden.capture_student(self.hidden, model) as states:
            net_output = model(**sample["net_input"])
        teacher = self.teacher(sample, self.request) if self.alpha > 0 or self.hidden is not None else None
        loss, logging_output = self.compute_loss(model, net_output, sample, teacher, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output.update(ntokens=sample["ntokens"], nsentences=sample["target"].size(0), sample_size=sample_size)
        if reduce:
            loss = hidden.add_hidden_term(self.hidden, states, teacher.hidden if teacher else {}, sample, loss,
                                          sample_size, self.padding_idx, logging_output)
            loss = add_capacity_term(model, loss, sample_size, logging_output)
        logging_output["loss"] = loss.data.sum() if not reduce else loss.data
        return loss, sample_size, logging_output

    def compute_loss(self, model, net_output, sample, teacher=None, reduce=True):
        """Returns the (summed or per-token) loss and the logging dict (``teacher``: the batch's
        ``teacher.TeacherOutput``)."""
        target = model.get_targets(sample, net_output)  # B x T
        logits = net_output[0]  # B x T x V
        if self.ignore_prefix_size > 0:
            logits, target = logits[:, self.ignore_prefix_size:], target[:, self.ignore_prefix_size:]
        valid = target.ne(self.padding_idx)  # B x T
        dist = teacher.distribution if teacher is not None and self.alpha > 0 else None  # None: e.g. no valid cache
        exact_ce = self.alpha == 0.0 and reduce  # fairseq's label_smoothed_cross_entropy, operation for operation
        terms = losses.ce_and_divergence(self.spec, logits, target, self.padding_idx, dist,
                                         student_log_probs(model, (logits,) + tuple(net_output[1:])),
                                         fusable=plain_softmax(model), reduce=exact_ce)
        logging = self._accuracy({"nll_loss": terms.nll.data.sum()}, logits, target, valid)
        if exact_ce:
            return terms.ce, logging
        ce_loss = terms.ce.reshape(-1)  # (B*T)
        if self.alpha == 0.0:
            loss = ce_loss
        else:
            kd = self.selected(terms.kd, terms.nll, valid, model, sample)  # B x T
            loss = (1.0 - self.alpha) * ce_loss + self.alpha * kd.view(-1)
            logging["kd_loss"] = kd.data.sum()
            if dist is not None:
                logging["teacher_nll_loss"] = terms.teacher_nll(valid).data
        return (loss.sum() if reduce else loss), logging

    def _accuracy(self, logging, logits, target, valid):
        if self.report_accuracy:  # argmax of the logits = argmax of the log-probs
            logging["n_correct"] = (logits.argmax(-1).eq(target) & valid).sum().data
            logging["total"] = valid.sum().data
        return logging

    def selected(self, kd, nll, valid, model, sample):
        """The KD term (T^2 * D per position) on the selected positions, 0 elsewhere, and everywhere when
        there is no teacher for the batch (``kd`` None).  # B x T"""
        if kd is None:  # validation split without a cache and no online teacher: no KD term
            return torch.zeros_like(nll)
        feed = model.training and bool(sample.get("kd_feeds_stats", False))  # counted training batches only
        chosen = selection_mask(nll, valid, self.selection, self.selection_ratio, self.queue, feed)
        return torch.where(chosen, kd, torch.zeros_like(kd))

    # --- metrics --------------------------------------------------------------------
    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        reduce_kd_metrics(logging_outputs, token_losses=("kd_loss", "teacher_nll_loss"))
        hidden.log_hidden_metrics(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True  # every value is a sum (or a sum and its count); fairseq all-reduces them
