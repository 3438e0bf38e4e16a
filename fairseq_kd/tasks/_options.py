"""Options of the ``kd_translation`` task, declared once: ``KDTranslationConfig`` is fairseq's
``TranslationConfig`` plus the teacher, on-the-fly noise, sequence-level KD targets and int8-aware
fine-tuning (``fairseq_kd/tasks/kd_translation.py`` registers the task with it).
"""
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum
from fairseq.tasks.translation import TranslationConfig
from omegaconf import II

from fairseq_kd.distill.decoding import DECODING_CHOICES

TEACHER_DTYPE_CHOICES = ChoiceEnum(["fp32", "fp16", "bf16"])
SEQ_KD_TARGETS_CHOICES = ChoiceEnum(["online", "data"])
NOISE_SIDE_CHOICES = ChoiceEnum(["source", "target", "both"])
NOISE_TEACHER_INPUT_CHOICES = ChoiceEnum(["clean", "noisy"])
SEQ_KD_DECODING_CHOICES = ChoiceEnum(list(DECODING_CHOICES))


@dataclass
class KDTranslationConfig(TranslationConfig):
    # --- teacher ---------------------------------------------------------------
    teacher_path: Optional[str] = field(
        default=None, metadata={"help": "teacher checkpoint, or several joined by ':' (an ensemble: probabilities averaged)"}
    )
    teacher_data: Optional[str] = field(
        default=None, metadata={"help": "directory with the teacher's dict.<lang>.txt, when it moved since training"}
    )
    teacher_cache: Optional[str] = field(
        default=None, metadata={"help": "directory written by fairseq-kd-cache: read top-k teacher distributions from it"}
    )
    teacher_trust_checkpoint: bool = field(
        default=False, metadata={"help": "fully unpickle the teacher checkpoint(s) (trusted legacy files only)"}
    )
    teacher_dtype: Optional[TEACHER_DTYPE_CHOICES] = field(
        default=None, metadata={"help": "teacher weights and compute dtype, set once at load (default: the "
                                        "student's training dtype: bf16 with --bf16, fp16 with --fp16/--amp, "
                                        "else fp32)"}
    )
    # --- on-the-fly noise (training split only) ----------------------------------
    noise_deletion: float = field(default=0.0, metadata={"help": "probability of deleting each word"})
    noise_substitution: float = field(default=0.0, metadata={"help": "probability of substituting each word"})
    noise_swap: float = field(default=0.0, metadata={"help": "probability of swapping each word within the window"})
    noise_swap_window: int = field(default=3, metadata={"help": "a swapped word moves at most this many positions"})
    noise_side: NOISE_SIDE_CHOICES = field(default="source", metadata={"help": "which side of the pair gets noise"})
    noise_teacher_input: NOISE_TEACHER_INPUT_CHOICES = field(
        default="clean", metadata={"help": "whether the teacher reads the clean or the noisy source"}
    )
    # --- sequence-level KD (criterion seq_kd / hybrid_kd) ---------------------------
    seq_kd_decoding: SEQ_KD_DECODING_CHOICES = field(
        default="beam", metadata={"help": "how the teacher produces targets for seq_kd/hybrid_kd"}
    )
    seq_kd_beam: int = field(default=5, metadata={"help": "beam size for --seq-kd-decoding beam (5: fairseq-kd-distill's default, so online and offline targets are the same)"})
    seq_kd_lenpen: float = field(default=1.0, metadata={"help": "length penalty for teacher beam search"})
    seq_kd_sampling_topk: int = field(
        default=-1, metadata={"help": "--seq-kd-decoding sampling: sample from the k most likely tokens (-1: all)"})
    seq_kd_sampling_topp: float = field(
        default=-1.0, metadata={"help": "--seq-kd-decoding sampling: nucleus probability mass (-1: off)"})
    seq_kd_max_len_a: float = field(default=1.2, metadata={"help": "max target length = a * source length + b"})
    seq_kd_max_len_b: int = field(default=10, metadata={"help": "max target length = a * source length + b"})
    seq_kd_targets: SEQ_KD_TARGETS_CHOICES = field(
        default="online", metadata={"help": "seq_kd/hybrid_kd train on the teacher's translations made online "
                                            "(memoized), or on the dataset's targets as they are (data already "
                                            "distilled by fairseq-kd-distill; needed with --teacher-cache)"})
    seq_kd_gold_mix: float = field(
        default=0.0, metadata={"help": "probability of training a sentence on its gold target instead"})
    seq_kd_no_memo: bool = field(
        default=False, metadata={"help": "do not keep the teacher's targets on disk (re-decode after a restart)"})
    seq_kd_memo_flush: int = field(
        default=1000, metadata={"help": "write the memo to disk every N newly decoded sentences"})
    # --- int8-aware fine-tuning (fairseq_kd/quant.py) ----------------------------------
    int8_qat_updates: int = field(
        default=0, metadata={"help": "simulate CTranslate2's int8 inference (weights and each linear layer's "
                                     "input quantized per row, straight-through gradients) in the forward pass "
                                     "of the last N updates (needs --max-update; 0: off)"})
    # --- globals -----------------------------------------------------------------
    max_update: int = II("optimization.max_update")
    cpu: bool = II("common.cpu")
    fp16: bool = II("common.fp16")
    bf16: bool = II("common.bf16")
    amp: bool = II("common.amp")
    save_dir: str = II("checkpoint.save_dir")
    restore_file: str = II("checkpoint.restore_file")
    checkpoint_suffix: str = II("checkpoint.checkpoint_suffix")
    train_subset: str = II("dataset.train_subset")
    valid_subset: str = II("dataset.valid_subset")
    seed: int = II("common.seed")
