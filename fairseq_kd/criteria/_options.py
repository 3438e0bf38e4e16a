"""Criterion options declared once: label smoothing (every criterion) and the shared KD loss options
(word_kd, hybrid_kd, onpolicy_kd): temperature, top-k, the divergence and its top-k tail.

(The hidden-state options live with their maths in ``fairseq_kd.hidden.HiddenKDConfig``.)
They become one ``fairseq_kd.losses.KDLossSpec``, checked by ``fairseq_kd.validate.kd_loss_options``.
"""
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from fairseq_kd import validate
from fairseq_kd.losses import KDLossSpec, divergences


@dataclass
class CEConfig(FairseqDataclass):
    label_smoothing: float = field(default=0.0, metadata={"help": "epsilon for label smoothing of the CE term"})


@dataclass
class KDLossConfig(CEConfig):
    kd_temperature: float = field(default=1.0, metadata={"help": "softmax temperature T of teacher and student"})
    kd_topk: int = field(default=0, metadata={
        "help": "restrict the teacher to its top-k tokens (plus a tail bucket, see --kd-topk-tail); 0 = all"})
    kd_divergence: ChoiceEnum(list(divergences.DIVERGENCES)) = field(default="forward_kl", metadata={
        "help": "token-level divergence: forward_kl KL(teacher||student), reverse_kl KL(student||teacher), or "
                "jsd, the generalized JSD of GKD (see fairseq_kd/losses/divergences.py)"})
    kd_jsd_beta: float = field(default=0.5, metadata={
        "help": "jsd's beta in (0, 1), mixture m = beta p_teacher + (1 - beta) p_student; JSD/beta -> forward KL "
                "as beta -> 0, JSD/(1 - beta) -> reverse KL as beta -> 1"})
    kd_topk_tail: ChoiceEnum(list(divergences.TAILS)) = field(default="renormalize", metadata={
        "help": "with --kd-topk (or a cache): compare on the top-k tokens plus one tail bucket, the teacher's tail "
                "being 0 (renormalize: its top-k renormalised, what a cache holds) or its true mass (keep: online)"})


def loss_spec(teacher, vocab_size: int, label_smoothing: float = 0.0, kd_temperature: float = 1.0,
              kd_topk: int = 0, kd_divergence: str = "forward_kl", kd_jsd_beta: float = 0.5,
              kd_topk_tail: str = "renormalize") -> KDLossSpec:
    """The criterion's ``KDLossSpec``, validated (usage errors before training; also against the
    ``teacher``'s cache, which holds only a renormalised top-k)."""
    spec = KDLossSpec(float(kd_temperature), int(kd_topk), float(label_smoothing), str(kd_divergence),
                      float(kd_jsd_beta), str(kd_topk_tail))
    validate.kd_loss_options(spec, vocab_size, teacher.cache_dir if teacher is not None else None)
    return spec
