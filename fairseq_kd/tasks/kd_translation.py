"""Task ``kd_translation``: fairseq's ``translation`` plus a teacher, a teacher cache and noise.

The teacher (one checkpoint or a ``:``-joined ensemble) is loaded once when the student
is built for training, its dictionaries are compared symbol by symbol with the task's
before any update, and it lives on the task: never in the student's parameters, the
optimizer or the student's checkpoint. Criteria get ``task.teacher``, a
``fairseq_kd.teacher.Teacher`` built once (ensemble on the student's device and dtype, the
offline caches, the student's layer shapes): it answers a criterion's ``TeacherRequest`` from
the sample alone and never calls back into the task.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II

from fairseq_kd.distill.decoding import DECODING_CHOICES
from fairseq_kd.errors import KDInputError
from fairseq_kd.quant import int8_training

logger = logging.getLogger(__name__)

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
    seq_kd_beam: int = field(default=4, metadata={"help": "beam size for --seq-kd-decoding beam"})
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


@register_task("kd_translation", dataclass=KDTranslationConfig)
class KDTranslationTask(TranslationTask):
    """Translation with a frozen teacher (online or cached) for knowledge distillation."""

    cfg: KDTranslationConfig

    def __init__(self, cfg: KDTranslationConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        from fairseq_kd.noise import NoiseConfig

        NoiseConfig(cfg.noise_deletion, cfg.noise_substitution, cfg.noise_swap, cfg.noise_swap_window)  # checks rates
        self._teacher = None  # fairseq_kd.teacher.TeacherEnsemble, loaded once
        self._teacher_view = None  # fairseq_kd.teacher.Teacher: what criteria get
        self._student_dims = None  # {side: (layers, width)} of the student being trained (fairseq_kd.hidden)
        self.teacher_caches = {}  # split -> fairseq_kd.cache.TeacherCache
        self.seq_targets = None  # distill.online.OnlineTargets when a criterion trains on teacher targets
        self._train_epoch = 1
        self._update_hooks = []  # called once per optimizer step on every worker
        self._stateful = {}  # name -> object with state_dict/load_state_dict, kept in the checkpoint
        self._restored = None  # task_state read back from the checkpoint training resumed from

    # --- teacher ---------------------------------------------------------------
    def load_teacher(self):
        """Load the teacher (once), check its dictionaries against the task's, and put it on
        its device and dtype (once: never moved per step)."""
        if self._teacher is None:
            if not self.cfg.teacher_path:
                raise KDInputError("this criterion needs a teacher: pass --teacher-path CKPT (or --teacher-cache DIR)")
            from fairseq_kd.teacher import load_teacher

            teacher = load_teacher(self.cfg.teacher_path, task=self, teacher_data=self.cfg.teacher_data,
                                   trust=self.cfg.teacher_trust_checkpoint)
            from fairseq_kd.langpair import check_teacher_pair  # a teacher trained in the other direction
            check_teacher_pair(teacher.cfg, self.cfg.source_lang, self.cfg.target_lang, self.cfg.teacher_path, self.cfg.data)
            self._teacher = teacher.place(self.teacher_device(), self.teacher_dtype())
        return self._teacher

    def teacher_device(self):
        """Where the student trains: the current CUDA device unless --cpu or no GPU."""
        import torch

        if torch.cuda.is_available() and not _flag(self.cfg.cpu):
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def teacher_dtype(self):
        """--teacher-dtype, else the student's training dtype (fp16 also under --amp)."""
        from fairseq_kd.teacher import TEACHER_DTYPES

        name = self.cfg.teacher_dtype
        if name is None:
            name = "bf16" if _flag(self.cfg.bf16) else "fp16" if _flag(self.cfg.fp16) or _flag(self.cfg.amp) else "fp32"
        return TEACHER_DTYPES[str(name)]

    @property
    def teacher(self):
        """``fairseq_kd.teacher.Teacher``: the one object criteria get the teacher from (built once)."""
        if self._teacher_view is None:
            from fairseq_kd.teacher import Teacher

            ensemble = self.load_teacher() if self.cfg.teacher_path else None
            self._teacher_view = Teacher(ensemble, self.teacher_caches, self.target_dictionary.pad(), self.cfg,
                                         student_dims=self._student_dims)
        return self._teacher_view

    def set_teacher(self, ensemble) -> None:
        """Use an already loaded ``TeacherEnsemble`` (in memory) as this task's teacher (criteria
        already built see it: they hold the task's one ``Teacher``)."""
        self._teacher = ensemble
        if self._teacher_view is not None:
            self._teacher_view.ensemble = ensemble

    def teacher_net_input(self, sample):
        """The teacher's input: the clean source if the student's was noised, else the same."""
        from fairseq_kd.teacher import teacher_input

        return teacher_input(sample)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        # A model restored for inference (fairseq-generate, a teacher) needs no teacher;
        # a model built for training checks its teacher before the first update.
        if not from_checkpoint and self.cfg.teacher_path:
            self.load_teacher()
        if not from_checkpoint:  # layer counts and widths: hidden-state distillation sizes its projections
            from fairseq_kd.hidden import model_dims_or_none

            self._student_dims = model_dims_or_none(model)
            if self._teacher_view is not None:
                self._teacher_view.student_dims = self._student_dims
        return model

    # --- data ------------------------------------------------------------------
    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        if self.cfg.teacher_cache:
            self._open_cache(split)
        if split == self.cfg.train_subset:
            self.datasets[split] = self.wrap_noise(split, self.datasets[split])
            self._train_epoch = epoch
            if self.seq_targets is not None and self.seq_targets.memo is not None:
                self.seq_targets.flush()  # a new shard (--data a:b:c): its memo has its own key
                self.seq_targets.memo = None

    def _open_cache(self, split):
        from fairseq_kd.cache import TeacherCache

        if not TeacherCache.exists(self.cfg.teacher_cache, split):
            if split == self.cfg.train_subset:
                raise KDInputError(f"--teacher-cache {self.cfg.teacher_cache} has no cache for split '{split}': "
                                   f"run fairseq-kd-cache --split {split} first")
            logger.warning("no teacher cache for split %s: its KD term is computed online or skipped", split)
            return
        if self.cfg.noise_side != "source" and self.noise_enabled:
            raise KDInputError("--teacher-cache stores distributions for the clean targets; it cannot be combined "
                               "with target-side noise (--noise-side target/both): use an online teacher")
        self.teacher_caches[split] = TeacherCache.open(
            self.cfg.teacher_cache, split, dataset=self.datasets[split], task=self,
            teacher_paths=self.cfg.teacher_path)

    # --- steps -----------------------------------------------------------------
    # Samples are tagged with their split (``kd_split``: training batches come from
    # --train-subset, validation batches from a single --valid-subset; with several the
    # cache is not used for validation) and, for training batches that count (not fairseq's
    # dummy batches, ``ignore_grad``), ``kd_feeds_stats`` (they feed running statistics such
    # as the global selection queue); seq-KD criteria get the teacher's targets in the sample.
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        sample = dict(sample, kd_split=self.cfg.train_subset, kd_feeds_stats=not ignore_grad)
        extra = {}
        if self.seq_targets is not None:
            sample, extra = self._distilled(sample)
        with int8_training(model, self.cfg, update_num):  # --int8-qat-updates: the last N updates int8-aware
            loss, sample_size, logging_output = super().train_step(sample, model, criterion, optimizer,
                                                                    update_num, ignore_grad)
        logging_output.update(extra)
        return loss, sample_size, logging_output

    def valid_step(self, sample, model, criterion):
        subsets = str(self.cfg.valid_subset).split(",")
        if self.seq_targets is not None:  # validation runs before fairseq saves a checkpoint: persist the memo
            self.seq_targets.flush()
        sample = dict(sample, kd_split=subsets[0] if len(subsets) == 1 else None)
        return super().valid_step(sample, model, criterion)

    # --- sequence-level KD targets (criteria seq_kd, hybrid_kd) ------------------------
    def use_teacher_targets(self) -> bool:
        """A criterion trains on the teacher's translations: from now on, training samples carry
        them (``--seq-kd-targets online``); False when the data's own targets are used."""
        if str(self.cfg.seq_kd_targets) == "data":
            return False
        if self.seq_targets is None:
            from fairseq_kd.distill.online import OnlineTargets

            save_dir = self.cfg.save_dir if isinstance(self.cfg.save_dir, str) and "${" not in self.cfg.save_dir else None
            self.seq_targets = OnlineTargets(self, save_dir, use_memo=not self.cfg.seq_kd_no_memo,
                                              gold_mix=self.cfg.seq_kd_gold_mix, seed=self.cfg.seed,
                                              flush_every=self.cfg.seq_kd_memo_flush)
        return True

    def memo_key_parts(self):
        """What the seq-KD memo's targets depend on besides teacher and decoding: the content of
        the training shard being read and, when the teacher reads noisy input, noise and epoch."""
        from fairseq_kd import fingerprint

        ds = self.datasets.get(self.cfg.train_subset)
        content = fingerprint.dataset_fingerprint(ds) if ds is not None else f"path {self.cfg.data}"  # not loaded
        parts = [self.cfg.train_subset, content]
        if self.noise_enabled and str(self.cfg.noise_teacher_input) == "noisy" and str(self.cfg.noise_side) != "target":
            parts += [repr((self.cfg.noise_deletion, self.cfg.noise_substitution, self.cfg.noise_swap,
                            self.cfg.noise_swap_window, str(self.cfg.noise_side), self.cfg.seed)),
                      f"epoch {self._train_epoch}"]
        return parts

    def distilled_sample(self, sample):
        """``sample`` with the teacher's translations as targets (memoized), as training sees it."""
        return self._distilled(sample)[0]

    def _distilled(self, sample):
        before = self.seq_targets.decoded
        new = self.seq_targets.distilled_sample(sample)
        if "teacher_net_input" in new:  # the teacher scores the same (new) target prefix as the student
            new["teacher_net_input"] = dict(new["teacher_net_input"],
                                            prev_output_tokens=new["net_input"]["prev_output_tokens"])
        return new, {"seq_kd_gold": new["seq_kd_gold"], "seq_kd_decoded": self.seq_targets.decoded - before}

    def optimizer_step(self, optimizer, model, update_num):
        for hook in self._update_hooks:  # e.g. the global selection queue all-gathers this update's values
            hook()
        super().optimizer_step(optimizer, model, update_num)

    # --- criterion state in the checkpoint ------------------------------------------
    def register_update_hook(self, fn) -> None:
        """``fn()`` runs once per update on every worker (before the optimizer step)."""
        self._update_hooks.append(fn)

    def register_state(self, name: str, obj) -> None:
        """Keep ``obj.state_dict()`` in the checkpoint's task state; restored on resume."""
        self._stateful[name] = obj
        state = self._restored_state().get(name)
        if state is not None:
            obj.load_state_dict(state)
            logger.info("restored %s from the checkpoint", name)

    def state_dict(self):
        state = dict(super().state_dict())
        state.update({name: obj.state_dict() for name, obj in self._stateful.items()})
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        for name in [k for k in state_dict if k in self._stateful]:
            self._stateful[name].load_state_dict(state_dict.pop(name))
        super().load_state_dict(state_dict)

    def _restored_state(self):
        """The task state of the checkpoint fairseq-train resumes from (its own path rule).

        fairseq's trainer restores model, optimizer and criterion parameters but not the
        task state, so the task reads it back itself (memory-mapped, tensors only).
        """
        if self._restored is None:
            self._restored = {}
            restore = str(getattr(self.cfg, "restore_file", None) or "")
            save_dir = getattr(self.cfg, "save_dir", None)
            suffix = str(getattr(self.cfg, "checkpoint_suffix", "") or "")
            if restore == "checkpoint_last.pt" and save_dir:
                path = os.path.join(str(save_dir), f"checkpoint_last{suffix}.pt")
            else:
                path = restore.replace(".pt", suffix + ".pt") if restore else ""
            if path and os.path.isfile(path):
                import torch

                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                self._restored = dict(state.get("task_state") or {})
        return self._restored


    @property
    def noise_enabled(self) -> bool:
        return any(p > 0 for p in (self.cfg.noise_deletion, self.cfg.noise_substitution, self.cfg.noise_swap))

    def wrap_noise(self, split, dataset):
        """Wrap the training dataset with on-the-fly word noise when any rate is > 0."""
        if not self.noise_enabled:
            return dataset
        from fairseq_kd.data.noisy_dataset import wrap_with_noise
        from fairseq_kd.noise import NoiseConfig

        noise = NoiseConfig(self.cfg.noise_deletion, self.cfg.noise_substitution, self.cfg.noise_swap,
                            self.cfg.noise_swap_window)
        logger.info("on-the-fly noise on %s (%s side, teacher reads %s input): %s", split, self.cfg.noise_side,
                    self.cfg.noise_teacher_input, noise)
        return wrap_with_noise(dataset, noise, str(self.cfg.noise_side), str(self.cfg.noise_teacher_input),
                               self.cfg.seed)


def _flag(value) -> bool:
    """A boolean config value (False for an unresolved ``${...}`` interpolation)."""
    return value is True
