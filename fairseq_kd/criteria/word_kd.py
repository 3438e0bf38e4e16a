"""Criterion ``word_kd``: word-level knowledge distillation (Hinton et al.; Kim & Rush 2016).

loss = (1 - alpha) * label-smoothed NLL(gold) + alpha * T^2 * KL(teacher_T || student_T)

summed over non-pad target tokens (``--kd-divergence reverse_kl|jsd`` replaces the KL,
``fairseq_kd.divergences``; ``--kd-hidden-weight`` adds hidden-state distillation,
``fairseq_kd.hidden``). The teacher is the task's (online, an ensemble
averages probabilities) or its offline top-k cache (``--teacher-cache``). With
``--kd-alpha 0`` no teacher is needed and the loss is exactly fairseq's
``label_smoothed_cross_entropy``.
"""
from dataclasses import dataclass, field

import torch
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import ChoiceEnum
from omegaconf import II

from fairseq_kd import divergences, hidden, kd_losses, validate
from fairseq_kd.criteria._common import add_capacity_term, reduce_kd_metrics
from fairseq_kd.criteria._options import DivergenceConfig, check_divergence_options

KD_SELECTION_CHOICES = ChoiceEnum(["none", "word", "batch", "global"])


@dataclass
class WordKDConfig(DivergenceConfig, hidden.HiddenKDConfig):
    kd_alpha: float = field(default=0.5, metadata={"help": "weight of the KD term; 0 = label-smoothed CE only"})
    kd_temperature: float = field(default=1.0, metadata={"help": "softmax temperature T of teacher and student"})
    label_smoothing: float = field(default=0.0, metadata={"help": "epsilon for label smoothing of the gold NLL term"})
    kd_topk: int = field(default=0, metadata={"help": "restrict the teacher to its top-k tokens (renormalised); 0 = all"})
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
        if not 0.0 <= kd_alpha <= 1.0:
            raise ValueError(f"--kd-alpha must be in [0, 1], got {kd_alpha}")
        if kd_temperature <= 0:
            raise ValueError(f"--kd-temperature must be > 0, got {kd_temperature}")
        validate.kd_criterion_options(task, label_smoothing, kd_topk, kd_selection_ratio, kd_selection_queue_size)
        self.alpha, self.temperature, self.eps = kd_alpha, kd_temperature, label_smoothing
        self.topk, self.selection, self.selection_ratio = kd_topk, str(kd_selection), kd_selection_ratio
        self.queue = kd_losses.CEQueue(kd_selection_queue_size) if self.selection == "global" else None
        if self.queue is not None and hasattr(task, "register_state"):  # shared by workers, checkpointed
            task.register_update_hook(self.queue.end_update)
            task.register_state("kd_selection_queue", self.queue)
        self.report_accuracy, self.ignore_prefix_size, self.sentence_avg = report_accuracy, ignore_prefix_size, sentence_avg
        self.teacher = getattr(task, "teacher_source", None)  # fairseq_kd.teacher.TeacherSource
        needs_teacher = kd_alpha > 0
        if needs_teacher and not (getattr(task.cfg, "teacher_path", None) or getattr(task.cfg, "teacher_cache", None)):
            raise ValueError("word_kd with --kd-alpha > 0 needs --task kd_translation with --teacher-path or --teacher-cache")
        self.divergence, self.jsd_beta, self.topk_tail = str(kd_divergence), kd_jsd_beta, str(kd_topk_tail)
        check_divergence_options(task, self.divergence, kd_jsd_beta, kd_topk, self.topk_tail)
        self.hidden = hidden.build_distiller(task, kd_hidden_weight, kd_hidden_loss, kd_hidden_map, kd_hidden_decoder)

    # --- forward ------------------------------------------------------------------
    def forward(self, model, sample, reduce=True):
        with hidden.capture_student(self.hidden, model) as states:
            net_output = model(**sample["net_input"])
        loss, logging_output = self.compute_loss(model, net_output, sample, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output.update(ntokens=sample["ntokens"], nsentences=sample["target"].size(0), sample_size=sample_size)
        if reduce:
            loss = hidden.add_hidden_term(self.hidden, states, self.task, sample, loss, sample_size,
                                          self.padding_idx, logging_output)
            loss = add_capacity_term(model, loss, sample_size, logging_output)
        logging_output["loss"] = loss.data.sum() if not reduce else loss.data
        return loss, sample_size, logging_output

    def _trim(self, x, target):
        if self.ignore_prefix_size > 0:
            x, target = x[:, self.ignore_prefix_size:], target[:, self.ignore_prefix_size:]
        return x, target

    def compute_loss(self, model, net_output, sample, reduce=True):
        """Returns the (summed or per-token) loss and the logging dict."""
        target = model.get_targets(sample, net_output)  # B x T
        logits, target = self._trim(net_output[0], target)  # B x T x V
        valid = target.ne(self.padding_idx)  # B x T
        if self.alpha == 0.0 and reduce:  # fairseq's label_smoothed_cross_entropy, operation for operation
            lprobs = model.get_normalized_probs((logits,) + tuple(net_output[1:]), log_probs=True)  # fp32
            loss, nll_sum = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.reshape(-1), self.eps,
                                                    self.padding_idx, reduce=True)
            return loss, self._accuracy({"nll_loss": nll_sum.data}, logits, target, valid)
        dist = self.teacher.distribution(sample, self.temperature, self.topk, self.ignore_prefix_size) \
            if self.alpha > 0 and self.teacher else None  # None: e.g. a valid split without a cache
        terms = divergences.fused_ce_and_divergence(dist, model, logits, target, self.eps, self.padding_idx,
                                                    self.divergence, self.topk_tail)
        if terms is not None:  # CE, NLL and KL in one compiled pass over the logits
            ce_loss, nll, kl = (t.reshape(-1) for t in terms)  # (B*T) each
        else:
            lprobs = model.get_normalized_probs((logits,) + tuple(net_output[1:]), log_probs=True)  # fp32
            ce_loss, nll = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.reshape(-1), self.eps,
                                                   self.padding_idx, reduce=False)
            ce_loss, nll = ce_loss.view(-1), nll.view(-1)  # (B*T)
            kl = None if dist is None else divergences.student_divergence(
                dist, logits, self.divergence, self.jsd_beta, self.topk_tail, lprobs=lprobs).view(-1)
        logging = self._accuracy({"nll_loss": nll.data.sum()}, logits, target, valid)
        if self.alpha == 0.0:
            loss = ce_loss
        else:
            kd = self.kd_term(kl, nll.view_as(target), valid, model)  # B x T
            loss = (1.0 - self.alpha) * ce_loss + self.alpha * kd.view(-1)
            logging["kd_loss"] = kd.data.sum()
            if dist is not None:
                logging["teacher_nll_loss"] = dist.nll(valid).data.sum()
        return (loss.sum() if reduce else loss), logging

    def _accuracy(self, logging, logits, target, valid):
        if self.report_accuracy:  # argmax of the logits = argmax of the log-probs
            logging["n_correct"] = (logits.argmax(-1).eq(target) & valid).sum().data
            logging["total"] = valid.sum().data
        return logging

    def kd_term(self, kl, nll, valid, model):
        """T^2 * D(teacher_T, student_T) per position (D: --kd-divergence; 0 at pad / unselected, and
        everywhere when there is no teacher for the batch: ``kl`` None).  # B x T"""
        if kl is None:  # validation split without a cache and no online teacher: no KD term
            return torch.zeros_like(nll)
        kl = kl.view_as(nll)
        T = self.temperature
        feed = model.training and getattr(self.task, "feeding_stats", True)  # training batches only
        selected = kd_losses.selection_mask(nll, valid, self.selection, self.selection_ratio, self.queue, feed)
        return (T * T) * torch.where(selected, kl, torch.zeros_like(kl))

    # --- metrics --------------------------------------------------------------------
    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        reduce_kd_metrics(logging_outputs, token_losses=("kd_loss", "teacher_nll_loss"))
        hidden.log_hidden_metrics(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True  # every value is a sum (or a sum and its count); fairseq all-reduces them
