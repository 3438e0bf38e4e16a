"""The command lines of a cell: fairseq-train, fairseq-generate and fairseq-kd-distill.

Every method gets the same shared flags (``shared_train_flags``); ``method_flags`` adds
only what the method itself needs (its criterion, the teacher, the online decoding) and
the user's ``method_args``. Hardware flags (``--device``, ``--fp16/--bf16/--amp``,
``--nprocs``) come from ``hardware_flags`` / ``rank_flags``.
"""
import importlib.util
import json
import os
import shlex
import shutil
import socket
import sys
from pathlib import Path
from typing import List

from fairseq_kd.errors import KDInputError
from fairseq_kd.study.config import (Cell, method_base, method_spec, NO_DECODING, StudyConfig, fmt_num,
                                     reads_noisy_copies)
from fairseq_kd.study.teachers import teacher_path

USER_DIR = str(Path(__file__).resolve().parents[1])  # the fairseq_kd package (--user-dir)


def find_tool(name: str) -> str:
    """Path of a console tool: on PATH, else beside this Python; clear error if missing."""
    beside = Path(sys.executable).parent / name
    path = shutil.which(name) or (str(beside) if beside.exists() else None)
    module = {"fairseq-kd-distill": "fairseq_kd.cli.distill", "fairseq-kd-cache": "fairseq_kd.cli.cache"}.get(name)
    if module and importlib.util.find_spec(module) is None:
        path = None
    if path is None:
        raise KDInputError(f"the study needs the tool {name}, which is not installed here: install fairseq-kd into "
                           f"this environment (pip install --no-deps -e /path/to/fairseq-kd) and check that "
                           f"{name} runs")
    return path


def check_criteria(cfg: StudyConfig) -> None:
    """Every method's criterion must be registered (fairseq_kd/criteria/<name>.py present)."""
    import fairseq_kd  # noqa: F401  (registers the plugins)
    from fairseq.criterions import CRITERION_REGISTRY

    for m in cfg.methods:
        crit = method_spec(m)["criterion"]
        if crit not in CRITERION_REGISTRY:
            raise KDInputError(f"method {m!r} trains with criterion {crit!r}, which is not registered: "
                               f"fairseq_kd/criteria/{crit}.py is missing from this install")


def noise_flags(cfg: StudyConfig, level: float) -> List[str]:
    if level <= 0:
        return []
    out = []
    for op in cfg.noise_ops:
        out += [f"--noise-{op}", fmt_num(level)]
    return out + ["--noise-side", cfg.noise_side, "--noise-swap-window", str(cfg.noise_swap_window)]


def hardware_flags(cfg: StudyConfig, training: bool = True) -> List[str]:
    """``--cpu`` on CPU; ``--fp16`` / ``--bf16`` (and ``--amp`` when training) on GPU."""
    flags = ["--cpu"] if cfg.resolved_device() == "cpu" else []
    if cfg.precision in ("fp16", "bf16") or (cfg.precision == "amp" and training):
        flags.append(f"--{cfg.precision}")
    return flags


def rank_flags(cfg: StudyConfig, rank: int, port: int) -> List[str]:
    """fairseq's options for one of ``nprocs`` training processes.

    On GPU fairseq spawns its workers itself (``--distributed-world-size N``, nccl); on CPU
    there is one process per rank with an explicit tcp rendezvous and gloo (fairseq's
    launcher assumes CUDA devices; ``legacy_ddp`` because c10d DDP refuses CPU modules)."""
    if cfg.nprocs == 1:
        return []
    if cfg.resolved_device() == "cuda":
        return ["--distributed-world-size", str(cfg.nprocs)]
    return ["--distributed-world-size", str(cfg.nprocs), "--distributed-rank", str(rank),
            "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
            "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shared_train_flags(cfg: StudyConfig, cell: Cell, save_dir: str) -> List[str]:
    """What every method of the grid trains with: one list, so no method can differ silently."""
    flags = ["--task", "kd_translation", "--source-lang", cfg.source_lang, "--target-lang", cfg.target_lang,
             "--arch", cell.arch, "--label-smoothing", fmt_num(cfg.label_smoothing),
             "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", fmt_num(cell.lr),
             "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(cfg.warmup_updates),
             "--max-update", str(cfg.max_update), "--max-tokens", str(cfg.max_tokens), "--seed", str(cell.seed),
             "--save-dir", save_dir, "--no-epoch-checkpoints", "--keep-interval-updates", "1",
             "--log-format", "json", "--log-interval", "50", "--no-progress-bar",
             # validate and save by updates only (and at the end), never per epoch
             "--validate-interval-updates", str(cfg.validate_interval_updates),
             "--save-interval-updates", str(cfg.validate_interval_updates),
             "--validate-interval", "1000000", "--save-interval", "1000000",
             "--eval-bleu", "--eval-bleu-args",
             json.dumps({"beam": 1, "max_len_a": cfg.max_len_a, "max_len_b": cfg.max_len_b}),
             "--eval-bleu-detok", "space", "--num-workers", "0",
             # fairseq 0.12 drops the last batch when its size is not a multiple of this
             # (default 8; facebookresearch/fairseq#5036): keep every sentence
             "--required-batch-size-multiple", "1"]
    if cfg.bpe != "none":
        flags += ["--eval-bleu-remove-bpe", cfg.bpe]
    init = ["--finetune-from-model", os.path.abspath(cfg.student_init)] if cfg.student_init else []
    noise = 0.0 if reads_noisy_copies(cell.method) else cell.noise  # the noisy copies are noised already
    return (flags + init + convergence_flags(cfg) + noise_flags(cfg, noise) + hardware_flags(cfg)
            + shlex.split(cfg.train_args))


def convergence_flags(cfg: StudyConfig) -> List[str]:
    """Early stopping on the validation metric (``cfg.patience`` validations without improvement) and
    checkpoint_best.pt kept by that metric; nothing for a fixed budget."""
    if not cfg.patience:
        return []
    flags = ["--patience", str(cfg.patience), "--best-checkpoint-metric", cfg.best_metric]
    return flags + (["--maximize-best-checkpoint-metric"] if cfg.best_metric == "bleu" else [])


def cell_teacher(cfg: StudyConfig, cell: Cell) -> str:
    """The checkpoint file(s) the cell's teacher is: its ``--teachers`` entry's path, or the study's teacher."""
    return teacher_path(cell.teacher) if cell.teacher != NO_DECODING else cfg.teacher


def method_flags(cfg: StudyConfig, cell: Cell, cache: str = "") -> List[str]:
    """What the method itself adds: criterion, teacher (online, or its top-k ``cache`` dir), online decoding,
    user's method_args.

    A variant ``BASE.LABEL`` gets BASE's method_args, then its own (later flags win)."""
    spec = method_spec(cell.method)
    base = method_base(cell.method)
    user = shlex.split(cfg.method_args.get(base, "")) if base != cell.method else []
    user += shlex.split(cfg.method_args.get(cell.method, ""))
    flags = ["--criterion", spec["criterion"], *spec.get("flags", [])]
    if spec["teacher"]:
        if not cache:
            flags += ["--teacher-path", cell_teacher(cfg, cell)]
        else:
            flags += ["--teacher-cache", cache]
            if _wants_hidden(user):  # hidden-state KD still runs the teacher's encoder: the cache has no states
                flags += ["--teacher-path", cell_teacher(cfg, cell)]
    if spec["decoding"] and spec["data"] == "corpus":  # online: the study's beam and length limit, as offline
        flags += ["--seq-kd-decoding", cell.decoding, "--seq-kd-beam", str(cfg.beam) if cell.decoding == "beam"
                  else "1", "--seq-kd-max-len-a", fmt_num(cfg.max_len_a), "--seq-kd-max-len-b", str(cfg.max_len_b)]
    if spec["criterion"] == "onpolicy_kd":  # the student's own outputs: the study's length limit too
        flags += ["--onpolicy-max-len-a", fmt_num(cfg.max_len_a), "--onpolicy-max-len-b", str(cfg.max_len_b)]
    return flags + user


def _wants_hidden(flags: List[str]) -> bool:
    """Whether criterion flags turn hidden-state KD on (``--kd-hidden-weight W``, W != 0; the last one wins)."""
    weight = "0"
    for i, flag in enumerate(flags):
        if flag == "--kd-hidden-weight" and i + 1 < len(flags):
            weight = flags[i + 1]
        elif flag.startswith("--kd-hidden-weight="):
            weight = flag.split("=", 1)[1]
    try:
        return float(weight) != 0
    except ValueError:
        return True  # not a number: let fairseq's parser refuse it, with the teacher at hand


def train_command(cfg: StudyConfig, cell: Cell, data: str, save_dir: str, rank: int = 0,
                  port: int = 0, cache: str = "") -> List[str]:
    return [find_tool("fairseq-train"), data, "--user-dir", USER_DIR, *shared_train_flags(cfg, cell, save_dir),
            *method_flags(cfg, cell, cache), *rank_flags(cfg, rank, port)]


def cache_command(cfg: StudyConfig, data: str, teacher: str, out: str) -> List[str]:
    """fairseq-kd-cache of the train and valid splits of ``data`` (the teacher's top-``cfg.cache_topk``)."""
    cmd = [find_tool("fairseq-kd-cache"), data, "--source-lang", cfg.source_lang, "--target-lang", cfg.target_lang,
           "--teacher-path", teacher, "--out-dir", out, "--split", "train", "--split", "valid",
           "--topk", str(cfg.cache_topk), "--max-tokens", str(cfg.max_tokens), "--no-progress",
           "--dtype", teacher_dtype(cfg)]
    return cmd + (["--device", "cpu"] if cfg.resolved_device() == "cpu" else [])


def teacher_dtype(cfg: StudyConfig) -> str:
    """The dtype an online teacher computes in under the study's precision (``KDTranslationTask.teacher_dtype``):
    the cache's, so cached and online methods read one teacher."""
    return {"bf16": "bf16", "fp16": "fp16", "amp": "fp16"}.get(cfg.precision, "fp32")


# The decoding's semantics beyond the generate command's own flags (the study/stamps.py stamp beside each
# hypothesis file records it; a file of another version is decoded again on resume). Bump it when a change to
# generate_command, to parse_generate or to the kd_translation decoding they run changes hypotheses.
# 1: --task translation, the padded batch's length limit (before 8394f95; such files carry no stamp);
# 2: --task kd_translation, each sentence stops at its own max_len_a x source length + max_len_b.
DECODE_VERSION = 2


def generate_command(cfg: StudyConfig, data: str, checkpoint: str, beam: int = 0, subset: str = "") -> List[str]:
    """fairseq-generate of ``subset`` through ``kd_translation``: every sentence stops at its own limit
    ``max_len_a`` x its source length + ``max_len_b`` (fairseq's ``translation`` caps the padded batch, so a
    hypothesis that runs into the limit would depend on ``--max-tokens``), as validation BLEU and
    distillation do."""
    cmd = [find_tool("fairseq-generate"), data, "--user-dir", USER_DIR, "--task", "kd_translation",
           "--path", checkpoint, "--source-lang", cfg.source_lang, "--target-lang", cfg.target_lang, "--gen-subset",
           subset or cfg.gen_subset,
           "--beam", str(beam or cfg.beam), "--max-tokens", str(cfg.max_tokens), "--num-workers", "0",
           "--max-len-a", fmt_num(cfg.max_len_a), "--max-len-b", str(cfg.max_len_b),
           "--required-batch-size-multiple", "1"]  # else up to 7 test sentences vanish (fairseq#5036)
    if cfg.bpe != "none":
        cmd += ["--remove-bpe", cfg.bpe]
    return cmd + hardware_flags(cfg, training=False) + shlex.split(cfg.gen_args)


def noise_copies_command(cfg: StudyConfig, level: float, out: str) -> List[str]:
    """fairseq-kd-noise --data-bin: ``cfg.noise_copies`` noisy copies of the training source at ``level``
    (every op of ``cfg.noise_ops`` at that rate, seed 1: copy c = a seed-1 student's epoch c)."""
    cmd = [find_tool("fairseq-kd-noise"), "--data-bin", cfg.data, "--source-lang", cfg.source_lang,
           "--target-lang", cfg.target_lang, "--copies", str(cfg.noise_copies), "--seed", "1",
           "--swap-window", str(cfg.noise_swap_window), "--output-dir", out, "--quiet"]
    for op in cfg.noise_ops:
        cmd += [f"--{op}", fmt_num(level)]
    return cmd


def distill_command(cfg: StudyConfig, decoding: str, out: str, teacher: str = "", data: str = "") -> List[str]:
    cmd = [find_tool("fairseq-kd-distill"), "--data", data or cfg.data, "--split", "train", "--teacher",
           teacher or cfg.teacher, "--source-lang", cfg.source_lang, "--target-lang", cfg.target_lang,
           "--decoding", decoding, "--beam", str(cfg.beam) if decoding == "beam" else "1", "--output-dir", out,
           "--no-progress", "--max-len-a", fmt_num(cfg.max_len_a), "--max-len-b", str(cfg.max_len_b),
           "--copy-splits", ",".join(sorted({"valid", cfg.gen_subset}))]
    if cfg.spm_model:
        cmd += ["--spm-model", cfg.spm_model]
    if cfg.resolved_device() == "cpu":
        cmd += ["--cpu"]
    elif cfg.precision in ("fp16", "amp"):
        cmd += ["--fp16"]
    elif cfg.precision == "bf16":
        cmd += ["--bf16"]
    extra = shlex.split(cfg.distill_args)
    if decoding == "teacher_forcing" and _last_value(extra, "--backend") == "ctranslate2":
        # teacher forcing is one forward pass of the teacher, which CTranslate2 does not expose:
        # this decoding alone goes through the fairseq backend (argparse keeps the last --backend)
        extra += ["--backend", "fairseq"]
    return cmd + extra


def _last_value(args: List[str], flag: str) -> str:
    value = ""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value

