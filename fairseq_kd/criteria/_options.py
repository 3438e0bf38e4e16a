"""Criterion options shared by word_kd, hybrid_kd and onpolicy_kd: the divergence and its top-k tail.

(The hidden-state options live with their maths in ``fairseq_kd.hidden.HiddenKDConfig``.)
"""
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from fairseq_kd import divergences


@dataclass
class DivergenceConfig(FairseqDataclass):
    kd_divergence: ChoiceEnum(list(divergences.DIVERGENCES)) = field(default="forward_kl", metadata={
        "help": "token-level divergence: forward_kl KL(teacher||student), reverse_kl KL(student||teacher), or "
                "jsd, the generalized JSD of GKD (see fairseq_kd/divergences.py)"})
    kd_jsd_beta: float = field(default=0.5, metadata={
        "help": "jsd's beta in (0, 1), mixture m = beta p_teacher + (1 - beta) p_student; JSD/beta -> forward KL "
                "as beta -> 0, JSD/(1 - beta) -> reverse KL as beta -> 1"})
    kd_topk_tail: ChoiceEnum(list(divergences.TAILS)) = field(default="renormalize", metadata={
        "help": "with --kd-topk (or a cache): compare on the top-k tokens plus one tail bucket, the teacher's tail "
                "being 0 (renormalize: its top-k renormalised, what a cache holds) or its true mass (keep: online)"})


def check_divergence_options(task, kind: str, beta: float, topk: int, tail: str) -> None:
    """Usage errors before training: impossible combinations, also against a teacher cache."""
    cache = getattr(task.cfg, "teacher_cache", None)
    divergences.check_options(kind, beta, max(topk, 1) if cache else topk, tail)
    if cache and tail == "keep":
        raise ValueError(f"--kd-topk-tail keep needs the teacher's full distribution, but --teacher-cache {cache} "
                         f"holds only its renormalised top-k: use --kd-topk-tail renormalize")
