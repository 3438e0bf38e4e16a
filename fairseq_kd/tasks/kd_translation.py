"""Task ``kd_translation``: fairseq's ``translation`` plus a teacher, a teacher cache and noise.

The teacher (one checkpoint or a ``:``-joined ensemble) is loaded once when the student
is built for training, its dictionaries are compared symbol by symbol with the task's
before any update, and it lives on the task: never in the student's parameters, the
optimizer or the student's checkpoint. Criteria get ``task.teacher``, a
``fairseq_kd.teacher.Teacher`` built once (ensemble on the student's device and dtype, the
offline caches, the student's layer shapes): it answers a criterion's ``TeacherRequest`` from
the sample alone and never calls back into the task.

Decoding through the task (fairseq-generate, fairseq-interactive, ``--eval-bleu``) stops every
sentence at its own limit ``a * its source length + b`` (``build_generator``/``inference_step``),
not at the padded batch's as fairseq's ``translation`` does.

The task's options are ``tasks/_options.py`` (``KDTranslationConfig``); the criteria's per-update
state kept in the checkpoint (``register_update_hook``, ``register_state``) is ``tasks/_state.py``.
"""
import logging

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationTask

from fairseq_kd.errors import KDInputError
from fairseq_kd.quant import int8_training
from fairseq_kd.tasks._options import KDTranslationConfig
from fairseq_kd.tasks._state import CheckpointStateMixin

logger = logging.getLogger(__name__)


@register_task("kd_translation", dataclass=KDTranslationConfig)
class KDTranslationTask(CheckpointStateMixin, TranslationTask):
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

    def begin_epoch(self, epoch, model):
        """Training starts or resumes: fairseq's early-stopping count goes into the checkpoint from now
        on and comes back from it (``tasks/_early_stop.py``). Only the task being trained gets here,
        never a teacher's task loaded from its checkpoint, whose count must not reach the student."""
        if "early_stop" not in self._stateful:
            from fairseq_kd.tasks._early_stop import EarlyStopState

            self.register_state("early_stop", EarlyStopState())
        if epoch != self._train_epoch:  # fairseq loads unsharded data once: the epoch moves on here
            self._train_epoch = epoch
            if self._teacher_reads_noise():  # the teacher's targets are this epoch's noisy source's
                self._drop_memo()
        super().begin_epoch(epoch, model)

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

    # --- decoding (fairseq-generate, --eval-bleu) -------------------------------------
    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        prefix_allowed_tokens_fn=None):
        """fairseq's generator, with every sentence's own length limit ``a * its source length + b``
        (``distill.decoding.SentenceMaxLen``, the distillation backend's): fairseq's own limit is the
        padded batch's, so a sentence that runs into it would depend on the sentences batched with it."""
        from fairseq_kd.distill.decoding import limit_each_sentence

        if getattr(args, "constraints", None):
            # fairseq's lexically constrained search ranks constraint tokens ahead of the forced EOS, so a
            # sentence would run past its own limit (fairseq asserts at the batch's)
            raise KDInputError("--constraints: fairseq's constrained search cannot stop each sentence at its own "
                               "length limit, which --task kd_translation gives every sentence; decode with "
                               "--task translation (one limit for the whole padded batch)")
        from fairseq_kd.study.preflight import refused_gen_flag_message

        # fairseq's DiverseBeamSearch (study.preflight.REFUSED_GEN_FLAGS): picked when groups > 0; a strength
        # other than fairseq's default 0.5 was given
        given = [flag for flag, on in (("--diverse-beam-groups", (getattr(args, "diverse_beam_groups", -1) or -1) > 0),
                                       ("--diverse-beam-strength",
                                        getattr(args, "diverse_beam_strength", 0.5) not in (None, 0.5))) if on]
        if given:
            raise KDInputError(refused_gen_flag_message("fairseq-generate --task kd_translation", given[0]))
        return limit_each_sentence(super().build_generator(
            models, args, seq_gen_cls=seq_gen_cls, extra_gen_cls_kwargs=extra_gen_cls_kwargs,
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn))

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        from fairseq_kd.distill.decoding import sentence_limits

        with sentence_limits(generator, sample, prefix_tokens):
            return super().inference_step(generator, models, sample, prefix_tokens=prefix_tokens,
                                          constraints=constraints)

    # --- data ------------------------------------------------------------------
    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        if self.cfg.teacher_cache:
            self._open_cache(split)
        if split == self.cfg.train_subset:
            self.datasets[split] = self.wrap_noise(split, self.datasets[split])
            self._train_epoch = epoch
            self._drop_memo()  # a new shard (--data a:b:c): its memo has its own key

    def _drop_memo(self):
        """Persist the seq-KD memo and let the next batch open the one of the current key."""
        if self.seq_targets is not None and self.seq_targets.memo is not None:
            self.seq_targets.flush()
            self.seq_targets.memo = None

    def _teacher_reads_noise(self) -> bool:
        """The teacher translates the noisy source the student reads (new noise every epoch)."""
        return (self.noise_enabled and str(self.cfg.noise_teacher_input) == "noisy"
                and str(self.cfg.noise_side) != "target")

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
        if self.noise_enabled and str(self.cfg.noise_teacher_input) == "noisy":
            raise KDInputError(f"--teacher-cache {self.cfg.teacher_cache} holds the teacher's distributions for the "
                               "clean source, but --noise-teacher-input noisy asks for a teacher reading the noisy "
                               "source: drop --teacher-cache (the teacher runs online, --teacher-path), or use "
                               "--noise-teacher-input clean")
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
        the training shard being read, the teacher's dtype and device (a run resumed in bf16 or on a GPU
        decodes other targets) and, when the teacher reads noisy input, noise and epoch."""
        from fairseq_kd import fingerprint

        ds = self.datasets.get(self.cfg.train_subset)
        content = fingerprint.dataset_fingerprint(ds) if ds is not None else f"path {self.cfg.data}"  # not loaded
        parts = [self.cfg.train_subset, content, f"teacher {self.teacher_dtype()} on {self.teacher_device().type}"]
        if self._teacher_reads_noise():
            parts += [repr((self.cfg.noise_deletion, self.cfg.noise_substitution, self.cfg.noise_swap,
                            self.cfg.noise_swap_window, str(self.cfg.noise_side), self.cfg.seed)),
                      f"epoch {self._train_epoch}"]
        return parts

    def distilled_sample(self, sample):
        """``sample`` with the teacher's translations as targets (memoized), as training sees it."""
        return self._distilled(sample)[0]

    def _distilled(self, sample):
        before, empty = self.seq_targets.decoded, self.seq_targets.fallbacks
        new = self.seq_targets.distilled_sample(sample)
        if "teacher_net_input" in new:  # the teacher scores the same (new) target prefix as the student
            new["teacher_net_input"] = dict(new["teacher_net_input"],
                                            prev_output_tokens=new["net_input"]["prev_output_tokens"])
        return new, {"seq_kd_gold": new["seq_kd_gold"], "seq_kd_decoded": self.seq_targets.decoded - before,
                     "seq_kd_empty": self.seq_targets.fallbacks - empty}

    # --- on-the-fly noise (training split only) -----------------------------------------
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
