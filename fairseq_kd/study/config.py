"""The grid of a study: cells, and the settings every cell shares (the methods: ``methods``).

Grid (arXiv 2312.08585 / 2404.14827 / Kim & Rush 2016): KD method x noise level x
student arch x decoding strategy that builds the distilled data x learning rate x seed x
teacher. Each cell is decoded with every test search (``beam`` = beam ``cfg.beam``,
``greedy``), one results row per (cell, search).

*One setting, one value.* Everything not on the grid (label smoothing, dropout, budget,
batch, schedule, checkpoint rule, decoding limits) is the same for every method; a method
adds only its own criterion and teacher flags (``METHOD_SPECS``) and the user's explicit
``method_args``.
"""
import itertools
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_kd.errors import KDInputError
from fairseq_kd.langpair import split_prefix
from fairseq_kd.study.methods import (METHOD_SPECS, method_base, method_spec, reads_noisy_copies,  # noqa: F401
                                      teacher_reads_noise, uses_teacher)
from fairseq_kd.study.preflight import (OWNED_GEN_FLAGS, OWNED_TRAIN_FLAGS, check_owned_flags, check_reference_lines,
                                        check_refused_gen_flags,
                                        check_student_init, check_teacher)
from fairseq_kd.study.teachers import check_names, dir_name, teacher_name, teacher_path

METHODS = ("none", "word", "seq", "hybrid")
DECODINGS = ("beam", "greedy", "sampling", "teacher_forcing")
NOISE_OPS = ("deletion", "substitution", "swap")
SEARCHES = ("beam", "greedy")  # how each student is decoded on the test set
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "bf16", "amp")
NO_DECODING = "-"  # the decoding coordinate of methods that use no distilled data

KEY_FIELDS = ("method", "noise", "arch", "decoding", "lr", "seed", "teacher")
RESULT_FIELDS = [*KEY_FIELDS, "search", "parameters", "bleu", "chrf", "tok_bleu", "signature", "train_time",
                 "updates", "best_update", "stop", "cell", "hyp"]
STOP_RULES = ("budget", "patience")  # why training ended: the fixed --max-update, or validation stopped improving
BEST_METRICS = ("bleu", "loss")  # the validation metric that picks the decoded checkpoint under --patience
CURVE_FIELDS = [*KEY_FIELDS, "updates", "valid_bleu", "valid_loss"]

def fmt_num(x: float) -> str:
    """Canonical text of a grid number (0.1 -> '0.1', 5e-4 -> '0.0005', 0.0 -> '0') for keys and names."""
    return f"{float(x):g}"


@dataclass(frozen=True)
class Cell:
    """One grid point (one student training); ``key`` identifies it in results.csv."""

    method: str
    noise: float
    arch: str
    decoding: str
    lr: float
    seed: int
    teacher: str = NO_DECODING  # PATH or NAME=PATH of a --teachers entry ('-': the study's only teacher, or none)

    def key(self) -> Tuple[str, ...]:
        return (self.method, fmt_num(self.noise), self.arch, self.decoding, fmt_num(self.lr), str(self.seed),
                teacher_name(self.teacher) if self.teacher != NO_DECODING else NO_DECODING)

    def slug(self) -> str:
        dec = "nodec" if self.decoding == NO_DECODING else self.decoding
        text = f"{self.method}_noise{fmt_num(self.noise)}_{self.arch}_{dec}_lr{fmt_num(self.lr)}_seed{self.seed}"
        if self.teacher != NO_DECODING:
            text += "_t-" + dir_name(self.teacher)
        return re.sub(r"[^A-Za-z0-9_.=+-]", "", text)


def row_key(row: Dict) -> Tuple[str, ...]:
    """The cell key of a results.csv / curves.csv row (same canonical text as ``Cell.key``)."""
    return (row["method"], fmt_num(float(row["noise"])), row["arch"], row["decoding"], fmt_num(float(row["lr"])),
            str(int(float(row["seed"]))), row.get("teacher") or NO_DECODING)


@dataclass
class StudyConfig:
    """Where the corpus and teacher are, the grid, and how to train / decode / score."""

    data: str  # binarized corpus (fairseq-preprocess --joined-dictionary)
    out_dir: str
    test_ref: str  # raw reference of the test split (detokenized, aligned)
    source_lang: str
    target_lang: str
    teacher: Optional[str] = None  # teacher checkpoint (word / seq / hybrid)
    teachers: Sequence[str] = ()  # several teachers (PATH or NAME=PATH): a grid axis (each KD cell once per teacher)
    spm_model: Optional[str] = None  # passed to fairseq-kd-distill for detokenized summaries
    gen_subset: str = "test"
    # grid
    methods: Sequence[str] = ("none",)
    noise: Sequence[float] = (0.0,)
    archs: Sequence[str] = ("transformer",)
    decodings: Sequence[str] = ("beam",)
    lrs: Sequence[float] = (5e-4,)
    seeds: Sequence[int] = (1,)
    # noise
    noise_ops: Sequence[str] = NOISE_OPS
    noise_side: str = "source"
    noise_swap_window: int = 3
    noise_copies: int = 8  # noisy copies of the source the teacher translates for seq_tnoisy (copy c = epoch c)
    # training (shared by every method)
    max_update: int = 2000
    max_tokens: int = 4096
    warmup_updates: int = 400
    validate_interval_updates: int = 500
    label_smoothing: float = 0.1
    student_init: str = ""  # every student starts from these weights (fairseq's --finetune-from-model); "" = random
    # convergence: patience > 0 trains until the validation metric has not improved for that many
    # validations (--max-update is then the cap) and decodes checkpoint_best.pt; 0 = fixed budget, last checkpoint
    patience: int = 0
    best_metric: str = "bleu"  # bleu (greedy valid BLEU, --eval-bleu) | loss
    # offline teacher: methods listed here read a top-k cache of the teacher (fairseq-kd-cache, built once
    # per data dir) instead of running the teacher every step; 0 = online teacher for every method
    cache_topk: int = 0
    cache_methods: Sequence[str] = ("word",)
    # more test sets, each decoded like gen_subset: (binarized split, raw reference); rows in results.<split>.csv
    extra_tests: Sequence[Tuple[str, str]] = ()
    train_args: str = ""  # extra fairseq-train flags (shlex), after the defaults
    method_args: Dict[str, str] = field(default_factory=dict)  # method -> extra flags (the only per-method knob)
    # decoding / scoring
    searches: Sequence[str] = ("beam",)  # test decodings of every student: beam (size ``beam``) and/or greedy
    beam: int = 5
    # output length limit a * source length + b for test decoding, validation BLEU and
    # distillation alike (the defaults of scripts/decode.sh and fairseq-kd-distill): an
    # undertrained student that loops would otherwise emit 200 tokens and its BLEU would
    # measure the loop, not the translations
    max_len_a: float = 1.2
    max_len_b: int = 10
    bpe: str = "sentencepiece"  # --remove-bpe for fairseq-generate and --eval-bleu ("none" for word-level)
    gen_args: str = ""
    distill_args: str = ""  # extra fairseq-kd-distill flags
    # hardware: how, not what (a study may resume on another device)
    device: str = "cpu"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | fp16 | bf16 | amp (mixed precision needs cuda)
    nprocs: int = 1  # data-parallel training processes (each with max_tokens: an update sees nprocs x)
    jobs: int = 1  # cells trained side by side on CPU (``parallel``), each tool with threads / jobs threads
    keep_going: bool = False

    def all_teachers(self) -> List[str]:
        return list(self.teachers) or ([self.teacher] if self.teacher else [])

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def test_searches(self) -> List[Tuple[str, int]]:
        """(name recorded in results.csv, beam size) per test search: ('beam5', 5), ('greedy', 1)."""
        return [(f"beam{self.beam}", self.beam) if s == "beam" else ("greedy", 1) for s in self.searches]

    def validate(self) -> None:
        check_owned_flags("--train-args", self.train_args, OWNED_TRAIN_FLAGS)
        for m, flags in self.method_args.items():
            check_owned_flags(f"--method-args {m}=", flags, OWNED_TRAIN_FLAGS)
        check_owned_flags("--gen-args", self.gen_args, OWNED_GEN_FLAGS)
        check_refused_gen_flags("--gen-args", self.gen_args)
        for m in self.methods:
            if method_base(m) not in METHOD_SPECS or not re.fullmatch(r"[A-Za-z_]+(\.[A-Za-z0-9_-]+)?", m):
                raise KDInputError(f"unknown method {m!r}: choose from {', '.join(METHOD_SPECS)}, or name a variant "
                                   f"BASE.LABEL (e.g. word.rkl) and give its flags with --method-args")
        for d in self.decodings:
            if d not in DECODINGS:
                raise KDInputError(f"unknown decoding {d!r}: choose from {', '.join(DECODINGS)}")
        for op in self.noise_ops:
            if op not in NOISE_OPS:
                raise KDInputError(f"unknown noise op {op!r}: choose from {', '.join(NOISE_OPS)}")
        for s in self.searches:
            if s not in SEARCHES:
                raise KDInputError(f"unknown test search {s!r}: choose from {', '.join(SEARCHES)}")
        if self.device not in DEVICES:
            raise KDInputError(f"unknown device {self.device!r}: choose from {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise KDInputError(f"unknown precision {self.precision!r}: choose from {', '.join(PRECISIONS)}")
        if self.precision != "fp32" and self.resolved_device() != "cuda":
            raise KDInputError(f"--{self.precision} needs a GPU (--device cuda); on CPU train in fp32")
        if self.nprocs < 1:
            raise KDInputError(f"--nprocs {self.nprocs}: pass a positive number of training processes")
        if self.jobs < 1:
            raise KDInputError(f"--jobs {self.jobs}: pass a positive number of cells to run at once")
        if self.jobs > 1 and (self.nprocs > 1 or self.resolved_device() != "cpu"):
            raise KDInputError(f"--jobs {self.jobs} runs one-process CPU cells side by side: drop --jobs for "
                               f"--nprocs {self.nprocs} / --device {self.resolved_device()} (one cell at a time)")
        for n in self.noise:
            if not 0 <= float(n) <= 1:
                raise KDInputError(f"noise level {n} is not a probability in [0, 1]")
        noisy_teacher = [m for m in self.methods if teacher_reads_noise(m)]
        if noisy_teacher and self.noise_side != "source":
            raise KDInputError(f"methods {', '.join(noisy_teacher)} give the teacher the student's noisy source: "
                               f"use --noise-side source (got {self.noise_side})")
        if self.noise_copies < 1:
            raise KDInputError(f"--noise-copies {self.noise_copies}: pass a positive number of copies")
        if not os.path.isdir(self.data):
            raise KDInputError(f"--data {self.data}: not a directory; pass the fairseq-preprocess output dir")
        for lang in (self.source_lang, self.target_lang):
            if not os.path.isfile(os.path.join(self.data, f"dict.{lang}.txt")):
                raise KDInputError(f"--data {self.data} has no dict.{lang}.txt: check --source-lang/--target-lang")
        if self.patience < 0:
            raise KDInputError(f"--patience {self.patience}: pass 0 (fixed budget) or a positive number of validations")
        if self.best_metric not in BEST_METRICS:
            raise KDInputError(f"unknown --best-metric {self.best_metric!r}: choose from {', '.join(BEST_METRICS)}")
        if self.cache_topk < 0:
            raise KDInputError(f"--cache-topk {self.cache_topk}: pass 0 (online teacher) or a positive k")
        for m in self.cache_methods:
            if method_base(m) not in ("word", "hybrid"):
                raise KDInputError(f"--cache-methods {m}: only word and hybrid (and their variants) read a teacher "
                                   f"cache; the others need the teacher online")
        for split, ref in self.extra_tests:
            if split == self.gen_subset or not re.fullmatch(r"[A-Za-z0-9_]+", split):
                raise KDInputError(f"--extra-test {split}={ref}: name a binarized split other than --gen-subset")
            if split_prefix(self.data, split, self.source_lang, self.target_lang, self.source_lang) is None:
                raise KDInputError(f"--extra-test {split}={ref}: {self.data} has no binarized split {split!r}; "
                                   f"prepare it (data_prep/prepare_multi30k.sh --test-sets ...)")
            if not os.path.isfile(ref):
                raise KDInputError(f"--extra-test {split}={ref}: no such reference file")
        if self.student_init:
            check_student_init(self.student_init, self.archs, self.source_lang, self.target_lang)
        if not os.path.isfile(self.test_ref):
            raise KDInputError(f"--test-ref {self.test_ref}: no such file; pass the raw reference of the test split")
        needs_teacher = any(uses_teacher(m) for m in self.methods)
        teachers = self.all_teachers()
        if needs_teacher and not (teachers and all(os.path.isfile(p) for t in teachers
                                                   for p in teacher_path(t).split(":"))):
            raise KDInputError(f"methods {', '.join(self.methods)} need a teacher: pass --teacher CKPT "
                               f"(got {teachers or None!r})")
        check_reference_lines(self.data, self.gen_subset, self.source_lang, self.target_lang, self.test_ref,
                              "--test-ref")
        for split, ref in self.extra_tests:
            check_reference_lines(self.data, split, self.source_lang, self.target_lang, ref, f"--extra-test {split}=")
        if needs_teacher:
            for path in {p for t in teachers for p in teacher_path(t).split(":")}:
                check_teacher(path, self.source_lang, self.target_lang)

    def settings_fingerprint(self) -> Dict:
        """Non-grid settings that change results: a resume must use the same ones."""
        grid = {"methods", "noise", "archs", "decodings", "lrs", "seeds", "searches", "teachers", "keep_going",
                "out_dir", "device", "extra_tests", "jobs"}
        out = {k: v for k, v in asdict(self).items() if k not in grid}
        if not self.patience:  # fixed budget: same fingerprint as before the convergence options existed
            out.pop("patience"), out.pop("best_metric")
        if not self.cache_topk:
            out.pop("cache_topk"), out.pop("cache_methods")
        if not self.student_init:  # random initialization: same fingerprint as before the option existed
            out.pop("student_init")
        if self.noise_copies == 8:  # the default: same fingerprint as before the option existed
            out.pop("noise_copies")
        return out

    def uses_cache(self, cell: "Cell") -> bool:
        """Whether ``cell`` reads the teacher's top-k cache: a cache method whose teacher reads the clean
        source and gold (or distilled) targets the cache was built from: clean data, or on-the-fly
        source-side noise, where word / hybrid's teacher reads the clean source (the ``*_tnoisy`` methods,
        whose teacher reads the noisy source, are never cache methods; target-side noise changes the
        targets the cache scored)."""
        if not (self.cache_topk and cell.method in self.cache_methods):
            return False
        return not cell.noise or self.noise_side == "source"


def check_axes(cfg: StudyConfig) -> None:
    """Each value of a grid axis must be distinct as it is recorded (results.csv, cell dirs): a value listed
    twice, or two values that print alike (``fmt_num``: 6 significant digits), would give two cells one key
    and one dir (trained over each other side by side, one row for both). Refused before anything runs."""
    axes = [("--methods", cfg.methods, str), ("--noise", cfg.noise, fmt_num), ("--archs", cfg.archs, str),
            ("--decodings", cfg.decodings, str), ("--lrs", cfg.lrs, fmt_num),
            ("--seeds", cfg.seeds, lambda s: str(int(s))), ("--searches", cfg.searches, str),
            ("--extra-test", [split for split, _ in cfg.extra_tests], str)]
    for flag, values, recorded_as in axes:
        seen: Dict[str, object] = {}
        for value in values:
            key = recorded_as(value)
            if key in seen:
                alike = "is listed twice" if seen[key] == value else f"and {seen[key]} are both {key} in the rows"
                raise KDInputError(f"{flag}: {value} {alike}: list each value once (they would be recorded as "
                                   f"one: one cell dir, one row)")
            seen[key] = value
    check_names(cfg.teachers)


def build_grid(cfg: StudyConfig) -> List[Cell]:
    """All cells; methods without distilled data / online decoding get decoding '-'.

    With several ``teachers`` (a grid axis), each KD cell is repeated per teacher and
    records it; the baseline (no teacher) is trained once. A method whose teacher reads the noisy
    source (``*_tnoisy``) has no cell at noise 0, where it is its clean-teacher method."""
    check_axes(cfg)
    teachers = list(cfg.teachers)
    cells = []
    for method, noise, arch, lr, seed in itertools.product(cfg.methods, cfg.noise, cfg.archs, cfg.lrs, cfg.seeds):
        if not noise and teacher_reads_noise(method):
            continue
        decodings = cfg.decodings if method_spec(method)["decoding"] else [NO_DECODING]
        per_teacher = teachers if (teachers and uses_teacher(method)) else [NO_DECODING]
        for teacher, dec in itertools.product(per_teacher, decodings):
            cells.append(Cell(method, float(noise), arch, dec, float(lr), int(seed), teacher))
    return cells
