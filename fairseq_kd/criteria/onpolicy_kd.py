"""Criterion ``onpolicy_kd``: distillation on the student's own outputs (ImitKD, Lin et al. 2020;
GKD, Agarwal et al. 2024).

Per training batch, with probability lambda (``--onpolicy-lambda``, optionally on the
``exp`` schedule of ``fairseq_kd.onpolicy``), the student first translates the batch
(greedy or sampled at ``--onpolicy-temperature``; no gradient through the sampling) and its
outputs replace the gold target as the decoder input; otherwise the gold target is used.
The teacher (or ensemble; on the clean source when the student's is noised) scores the same
prefixes, and the loss is the chosen divergence (``fairseq_kd.divergences``) at every
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
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import ChoiceEnum
from omegaconf import II

from fairseq_kd import divergences, hidden, onpolicy, validate
from fairseq_kd.criteria._common import add_capacity_term, log_averaged, reduce_kd_metrics
from fairseq_kd.criteria._options import DivergenceConfig, check_divergence_options


@dataclass
class OnPolicyKDConfig(DivergenceConfig, hidden.HiddenKDConfig):
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
    label_smoothing: float = field(default=0.0, metadata={"help": "epsilon of the gold CE term (alpha < 1)"})
    kd_temperature: float = field(default=1.0, metadata={"help": "softmax temperature T of teacher and student"})
    kd_topk: int = field(default=0, metadata={"help": "compare on the teacher's top-k tokens plus a tail; 0 = all"})
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("onpolicy_kd", dataclass=OnPolicyKDConfig)
class OnPolicyKDCriterion(FairseqCriterion):
    """Teacher-student divergence on the student's own (or, with prob. 1 - lambda, gold) prefixes."""

    def __init__(self, task, cfg: OnPolicyKDConfig):
        super().__init__(task)
        if not getattr(task.cfg, "teacher_path", None):
            raise ValueError("onpolicy_kd needs --task kd_translation with --teacher-path (an online teacher: "
                             "a cache cannot score the student's own prefixes)")
        if not 0.0 <= cfg.onpolicy_lambda <= 1.0:
            raise ValueError(f"--onpolicy-lambda must be in [0, 1], got {cfg.onpolicy_lambda}")
        if not 0.0 < cfg.onpolicy_decay < 1.0 and str(cfg.onpolicy_schedule) == "exp":
            raise ValueError(f"--onpolicy-decay must be in (0, 1), got {cfg.onpolicy_decay}")
        if not 0.0 <= cfg.kd_alpha <= 1.0:
            raise ValueError(f"--kd-alpha must be in [0, 1], got {cfg.kd_alpha}")
        if cfg.kd_temperature <= 0 or cfg.onpolicy_temperature <= 0:
            raise ValueError("--kd-temperature and --onpolicy-temperature must be > 0")
        if getattr(task.cfg, "teacher_cache", None):
            raise ValueError("onpolicy_kd scores the student's own prefixes online: drop --teacher-cache")
        validate.kd_criterion_options(task, cfg.label_smoothing, cfg.kd_topk)
        self.kind, self.tail = str(cfg.kd_divergence), str(cfg.kd_topk_tail)
        check_divergence_options(task, self.kind, cfg.kd_jsd_beta, cfg.kd_topk, self.tail)
        self.teacher = task.teacher_source  # fairseq_kd.teacher.TeacherSource
        self.cfg = cfg
        self.T = float(cfg.kd_temperature)
        self.trained_batches = 0  # fallback update counter when fairseq's meter is absent
        self.hidden = hidden.build_distiller(task, cfg.kd_hidden_weight, cfg.kd_hidden_loss, cfg.kd_hidden_map,
                                             cfg.kd_hidden_decoder)  # projections train with the student

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
        kd, teacher_nll = self.kd_term(net_output[0], sample, valid)
        kd = kd.sum()
        lprobs = model.get_normalized_probs(net_output, log_probs=True)  # B x T x V (fp32)
        ce, nll = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.reshape(-1),
                                          self.cfg.label_smoothing, pad, reduce=True)
        alpha = 1.0 if on else self.cfg.kd_alpha
        loss = kd if alpha == 1.0 else (1.0 - alpha) * ce + alpha * kd
        sample_size = target.size(0) if self.cfg.sentence_avg else sample["ntokens"]
        logging_output.update(kd_loss=kd.data, nll_loss=nll.data, teacher_nll_loss=teacher_nll.data,
                              ntokens=sample["ntokens"], nsentences=target.size(0), sample_size=sample_size)
        loss = hidden.add_hidden_term(self.hidden, states, self.task, sample, loss, sample_size, pad, logging_output)
        loss = add_capacity_term(model, loss, sample_size, logging_output)
        logging_output["loss"] = loss.data
        return loss, sample_size, logging_output

    def kd_term(self, logits, sample, valid):
        """T^2 * D(teacher_T, student_T) per position on the sample's decoder input (B x T), and
        the teacher's summed NLL of the decoder target (the student's own output on on-policy batches)."""
        dist = self.teacher.distribution(sample, self.T, self.cfg.kd_topk)  # online teacher or ensemble
        d = divergences.student_divergence(dist, logits, self.kind, self.cfg.kd_jsd_beta, self.tail)  # B x T
        return (self.T * self.T) * torch.where(valid, d, torch.zeros_like(d)), dist.nll(valid)

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
