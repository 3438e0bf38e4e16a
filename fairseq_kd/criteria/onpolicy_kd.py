"""Criterion ``onpolicy_kd``: distillation on the student's own outputs (ImitKD, Lin et al. 2020;
GKD, Agarwal et al. 2024).

Per training batch, with probability lambda (``--onpolicy-lambda``, optionally on the
``exp`` schedule of ``fairseq_kd.onpolicy``), the student first translates the batch
(greedy or sampled at ``--onpolicy-temperature``; no gradient through the sampling) and its
outputs replace the gold target as the decoder input; otherwise the gold target is used.
The teacher (or ensemble; on the clean source when the student's is noised) scores the same
prefixes, and the loss is the chosen divergence (``fairseq_kd.losses``) at every
non-pad position:

    loss = sum_t T^2 * D(p_teacher_T(. | x, y_<t), p_student_T(. | x, y_<t))

On gold batches ``--kd-alpha`` alpha < 1 mixes in the gold cross-entropy exactly as
``word_kd`` does, ``(1 - alpha) * label-smoothed NLL + alpha * D`` (on-policy batches
have no gold continuation: D alone). With lambda = 0 this is ``word_kd`` with the same
alpha (alpha = 1 by default: the divergence alone). Validation batches always use gold
prefixes. Logged: ``kd_loss``, the student's ``nll_loss`` of its
decoder target, ``onpolicy`` (share of on-policy batches), ``onpolicy_lambda`` and
``onpolicy_len`` (tokens per sampled sentence), ``hidden_loss`` with ``--kd-hidden-weight``
(``fairseq_kd.hidden``); every value is a sum, so per-worker logs
reduce correctly under fairseq's distributed training.
"""
from dataclasses import dataclass, field

import torch
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum
from omegaconf import II

from fairseq_kd import hidden, losses, onpolicy, validate
from fairseq_kd.criteria._common import (add_capacity_term, log_averaged, plain_softmax, reduce_kd_metrics,
                                         student_log_probs, teacher_of)
from fairseq_kd.criteria._options import KDLossConfig, loss_spec
from fairseq_kd.errors import KDInputError
from fairseq_kd.teacher import TeacherRequest


@dataclass
class OnPolicyKDConfig(KDLossConfig, hidden.HiddenKDConfig):
    onpolicy_lambda: float = field(default=0.5, metadata={
        "help": "probability that a training batch uses the student's own outputs as decoder input"})
    onpolicy_schedule: ChoiceEnum(["constant", "exp"]) = field(default="constant", metadata={
        "help": "constant lambda, or exp: lambda * (1 - decay^update) (gold share decays exponentially, ImitKD)"})
    onpolicy_decay: float = field(default=0.999, metadata={"help": "per-update decay r of the exp schedule"})
    onpolicy_sampling: ChoiceEnum(["sample", "greedy"]) = field(default="sample", metadata={
        "help": "how the student produces its outputs"})
    onpolicy_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the student"})
    onpolicy_max_len_a: float = field(default=1.2, metadata={"help": "max output length = a * source length + b"})
    onpolicy_max_len_b: int = field(default=10, metadata={"help": "max output length = a * source length + b"})
    kd_alpha: float = field(default=1.0, metadata={
        "help": "gold batches: (1 - alpha) * label-smoothed CE + alpha * divergence; on-policy batches: divergence"})
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("onpolicy_kd", dataclass=OnPolicyKDConfig)
class OnPolicyKDCriterion(FairseqCriterion):
    """Teacher-student divergence on the student's own (or, with prob. 1 - lambda, gold) prefixes."""

    def __init__(self, task, cfg: OnPolicyKDConfig):
        super().__init__(task)
        self.teacher = teacher_of(task)
        if self.teacher is None or not self.teacher.path:
            raise KDInputError("onpolicy_kd needs --task kd_translation with --teacher-path (an online teacher: "
                               "a cache cannot score the student's own prefixes)")
        validate.probability("--onpolicy-lambda", cfg.onpolicy_lambda)
        if str(cfg.onpolicy_schedule) == "exp":
            validate.probability("--onpolicy-decay", cfg.onpolicy_decay, open_low=True, open_high=True)
        validate.probability("--kd-alpha", cfg.kd_alpha)
        validate.finite_positive("--onpolicy-temperature", cfg.onpolicy_temperature)
        if self.teacher.cache_dir:
            raise KDInputError("onpolicy_kd scores the student's own prefixes online: drop --teacher-cache")
        self.spec = loss_spec(None, len(task.target_dictionary), cfg.label_smoothing, cfg.kd_temperature,
                              cfg.kd_topk, cfg.kd_divergence, cfg.kd_jsd_beta, cfg.kd_topk_tail)
        self.cfg = cfg
        self.trained_batches = 0  # fallback update counter when fairseq's meter is absent
        self.hidden = hidden.build_distiller(self.teacher, cfg.kd_hidden_weight, cfg.kd_hidden_loss,
                                             cfg.kd_hidden_map, cfg.kd_hidden_decoder)  # projections train with the student
        self.request = TeacherRequest(self.spec.temperature, self.spec.topk, hidden=hidden.teacher_layers(self.hidden))

    def current_lambda(self) -> float:
        meter = metrics.get_meter("default", "num_updates")  # the trainer logs it after every update
        val = getattr(meter, "val", None) if meter is not None else None
        updates = int(val) if val is not None else self.trained_batches
        return onpolicy.schedule_lambda(self.cfg.onpolicy_lambda, str(self.cfg.onpolicy_schedule),
                                        self.cfg.onpolicy_decay, updates)

    def forward(self, model, sample, reduce=True):
        pad, logging_output, on = self.padding_idx, {}, False
        if model.training:
            lam = self.current_lambda()
            self.trained_batches += 1
            on = lam > 0 and bool(torch.rand(()) < lam)  # fairseq seeds torch per update: reproducible
            if on:
                tokens = onpolicy.sample_outputs(
                    model, sample["net_input"], self.task.target_dictionary.eos(), pad,
                    temperature=self.cfg.onpolicy_temperature, greedy=str(self.cfg.onpolicy_sampling) == "greedy",
                    max_len_a=self.cfg.onpolicy_max_len_a, max_len_b=self.cfg.onpolicy_max_len_b)
                sample = onpolicy.onpolicy_sample(sample, tokens, pad)
            logging_output.update(onpolicy=int(on), onpolicy_batches=1, onpolicy_lambda=lam,
                                  onpolicy_sentences=sample["target"].size(0) if on else 0,
                                  onpolicy_tokens=sample["ntokens"] if on else 0)
        with hidden.capture_student(self.hidden, model) as states:
            net_output = model(**sample["net_input"])
        target = sample["target"]  # B x T
        valid = target.ne(pad)  # B x T
        teacher = self.teacher(sample, self.request)  # on the sample's decoder input (gold or the student's own)
        terms = losses.ce_and_divergence(self.spec, net_output[0], target, pad, teacher.distribution,
                                         student_log_probs(model, net_output), fusable=plain_softmax(model),
                                         reduce=True)
        kd, ce, nll = terms.kd.sum(), terms.ce, terms.nll
        alpha = 1.0 if on else self.cfg.kd_alpha
        loss = kd if alpha == 1.0 else (1.0 - alpha) * ce + alpha * kd
        sample_size = target.size(0) if self.cfg.sentence_avg else sample["ntokens"]
        logging_output.update(kd_loss=kd.data, nll_loss=nll.data, teacher_nll_loss=terms.teacher_nll(valid).data,
                              ntokens=sample["ntokens"], nsentences=target.size(0), sample_size=sample_size)
        loss = hidden.add_hidden_term(self.hidden, states, teacher.hidden, sample, loss, sample_size, pad,
                                      logging_output)
        loss = add_capacity_term(model, loss, sample_size, logging_output)
        logging_output["loss"] = loss.data
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        total = reduce_kd_metrics(logging_outputs, token_losses=("kd_loss", "teacher_nll_loss"))
        hidden.log_hidden_metrics(logging_outputs)
        log_averaged(logging_outputs, ("onpolicy", "onpolicy_lambda"), "onpolicy_batches", round_=4)
        if total("onpolicy_sentences"):
            metrics.log_scalar("onpolicy_len", total("onpolicy_tokens") / total("onpolicy_sentences"),
                               total("onpolicy_sentences"), round=2)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True  # every value is a sum (or a sum and its count); fairseq all-reduces them
