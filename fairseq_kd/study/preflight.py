"""The study's preflight: what is checked before any cell trains (``StudyConfig.validate`` calls these).

A reference must have as many lines as its binarized split has sentences; a teacher, and a
``--student-init`` checkpoint, must load as a fairseq checkpoint of the study's direction; the
``--student-init`` checkpoint must be of the students' arch. On a resume, the checkpoints the study
names (teacher, ``--student-init``) are compared by content, not by path (``same_checkpoints``).
"""
import os
from typing import Dict, List, Sequence

from fairseq_kd.errors import KDInputError


def check_reference_lines(data: str, split: str, src: str, tgt: str, ref: str, flag: str) -> None:
    """The raw reference must have one line per sentence of the binarized split it scores (checked before
    any training: a wrong file would only fail after the first cell's hours of training)."""
    from fairseq.data import indexed_dataset

    from fairseq_kd import fileio
    from fairseq_kd.langpair import split_prefix

    prefix = split_prefix(data, split, src, tgt, src)
    if prefix is None:
        raise KDInputError(f"{data} has no binarized split {split!r} ({split}.{src}-{tgt}.{src}.idx or "
                           f"{split}.{tgt}-{src}.{src}.idx): check --gen-subset / --extra-test and the languages")
    n_ref, n_bin = fileio.count_lines(ref), len(indexed_dataset.MMapIndexedDataset(prefix))
    if n_ref != n_bin:
        raise KDInputError(f"{flag}{ref} has {n_ref} lines but the binarized split {split!r} of {data} has {n_bin} "
                           f"sentences: pass the raw reference of that split (prepare_multi30k.sh writes it as "
                           f"raw/{split}.{tgt})")


def check_teacher(path: str, src: str, tgt: str) -> None:
    """The teacher must load as a fairseq checkpoint and translate the study's direction (checked before any
    cell: a bad teacher would only fail when the first KD cell starts, after the baselines)."""
    from fairseq_kd.checkpoint_safety import load_checkpoint
    from fairseq_kd.langpair import check_teacher_pair

    state = load_checkpoint(path)  # KDInputError naming the file when it is not a fairseq checkpoint
    check_teacher_pair(state.get("cfg") or {}, src, tgt, path, data="the study")


def check_student_init(path: str, archs: Sequence[str], src: str, tgt: str) -> None:
    """``--student-init`` must be a fairseq checkpoint of the study's direction and of every student's arch
    (fairseq would otherwise fail at the first cell, or load the wrong model's weights by name)."""
    from fairseq_kd.checkpoint_safety import load_checkpoint
    from fairseq_kd.langpair import check_teacher_pair

    if not os.path.isfile(path):
        raise KDInputError(f"--student-init {path}: no such file; pass a trained student's checkpoint")
    state = load_checkpoint(path)
    if not isinstance(state.get("model"), dict):
        raise KDInputError(f"--student-init {path}: no model weights in this checkpoint")
    model_cfg = (state.get("cfg") or {}).get("model") or {}
    arch = model_cfg.get("arch") if hasattr(model_cfg, "get") else getattr(model_cfg, "arch", None)
    if arch and any(a != arch for a in archs):
        raise KDInputError(f"--student-init {path} is a {arch} model but the study trains {', '.join(archs)}: "
                           f"pass --archs {arch} (and the same architecture flags) or another checkpoint")
    check_teacher_pair(state.get("cfg") or {}, src, tgt, path, data="the study")


# flags the study sets itself and records (grid coordinates, settings in study.json): given again in
# --train-args / --method-args / --gen-args, fairseq would take the later one while the rows record the
# study's (a "greedy" row decoded with --beam 10, every seed trained with --seed 7)
OWNED_TRAIN_FLAGS = {"--seed": "--seeds", "--lr": "--lrs", "--arch": "--archs", "-a": "--archs",
                     "--max-update": "--max-update", "--patience": "--patience", "--max-tokens": "--max-tokens",
                     "--warmup-updates": "--warmup-updates", "--label-smoothing": "--label-smoothing",
                     "--validate-interval-updates": "--validate-interval-updates",
                     "--best-checkpoint-metric": "--best-metric", "--criterion": "--methods",
                     "--teacher-path": "--teacher / --teachers", "--task": None, "--save-dir": None,
                     "--finetune-from-model": "--student-init", "--source-lang": "--source-lang",
                     "--target-lang": "--target-lang", "-s": "--source-lang", "-t": "--target-lang",
                     "--seq-kd-decoding": "--decodings", "--seq-kd-beam": "--beam",
                     "--seq-kd-max-len-a": "--max-len-a", "--seq-kd-max-len-b": "--max-len-b",
                     "--onpolicy-max-len-a": "--max-len-a", "--onpolicy-max-len-b": "--max-len-b"}
OWNED_GEN_FLAGS = {"--beam": "--beam / --searches", "--max-len-a": "--max-len-a", "--max-len-b": "--max-len-b",
                   "--gen-subset": "--gen-subset / --extra-test", "--path": None, "--nbest": None}


# fairseq-generate flags our decoding refuses (the one table; CTranslate2's own refusals: export/decode.py
# UNREPRODUCED): flag -> why, and what to use instead
DIVERSE_BEAM_WHY = ("fairseq's DiverseBeamSearch indexes its per-batch group overlap by sample id (IndexError from "
                    "the second batch on, other sentences' rows before) and keeps only --beam candidates a step, so "
                    "a beam that ends is not refilled (even --diverse-beam-groups 1 gives other, longer outputs "
                    "than plain beam search)")
DIVERSE_BEAM_INSTEAD = "for several different hypotheses per sentence use --sampling (with --nbest), or --nbest alone"
REFUSED_GEN_FLAGS = {"--diverse-beam-groups": (DIVERSE_BEAM_WHY, DIVERSE_BEAM_INSTEAD),
                     "--diverse-beam-strength": (DIVERSE_BEAM_WHY, DIVERSE_BEAM_INSTEAD)}


def refused_gen_flag_message(option: str, flag: str) -> str:
    """Why ``flag`` (a key of ``REFUSED_GEN_FLAGS``) given in ``option`` is refused, and the alternative."""
    why, instead = REFUSED_GEN_FLAGS[flag]
    return f"{option} has {flag}, which is refused: {why}; {instead}"


def flag_names(option: str, flags: str) -> List[str]:
    """The words of the free-form ``flags`` of ``option`` split as a shell would, each without its ``=value``;
    an unbalanced quote is refused, naming the option."""
    import shlex

    try:
        words = shlex.split(flags or "")
    except ValueError as e:
        raise KDInputError(f"{option} {flags!r}: {e}") from None
    return [word.split("=", 1)[0] for word in words]


def check_refused_gen_flags(option: str, flags: str) -> None:
    """Refuse a flag of ``REFUSED_GEN_FLAGS`` in the free-form fairseq-generate ``flags`` of ``option``."""
    for flag in flag_names(option, flags):
        if flag in REFUSED_GEN_FLAGS:
            raise KDInputError(refused_gen_flag_message(option, flag))


def check_owned_flags(option: str, flags: str, owned: Dict) -> None:
    """Refuse a flag of ``owned`` in the free-form ``flags`` of ``option`` (``--train-args`` ...), naming the
    study's own option for it (or saying the study sets it)."""
    for flag in flag_names(option, flags):
        if flag in owned:
            own = owned[flag]
            raise KDInputError(f"{option} sets {flag}, which the study sets itself and records in its rows: "
                               + (f"use {own} instead" if own else "leave it to the study"))


CHECKPOINT_SETTINGS = ("teacher", "student_init")  # settings that name checkpoint files (a:b = an ensemble)
DIGESTS = "checkpoint_sha256"  # study.json key: {setting: sha256 of its files' bytes}


def check_digest_record(where: str, key: str, recorded, what: str, fix: str) -> None:
    """A study.json record of sha256 digests (``key``: {``what``: hex digest}) must be one; a damaged one is
    refused naming ``where`` and the way on (``fix``: what deleting the entry does)."""
    if not (isinstance(recorded, dict) and all(isinstance(v, str) and len(v) == 64 for v in recorded.values())):
        raise KDInputError(f"{where}: {key} must map {what} to sha256 hex digests (got {recorded!r}); restore the "
                           f"file, or delete that entry to {fix}")


def checkpoint_digests(settings: Dict, used: Sequence[str]) -> Dict[str, str]:
    """sha256 (``fingerprint.files_fingerprint``) of the files each ``used`` checkpoint setting names; a
    setting with no value, or naming a missing file, is left out."""
    from fairseq_kd.fingerprint import files_fingerprint

    out = {}
    for key in used:
        paths = (settings.get(key) or "").split(":")
        if all(paths) and all(os.path.isfile(p) for p in paths):
            out[key] = files_fingerprint(paths)
    return out


def _same_files(a: str, b: str) -> bool:
    """Two checkpoint settings (``a:b`` = an ensemble) name the same existing files, in order."""
    pa, pb = a.split(":"), b.split(":")
    return len(pa) == len(pb) and all(os.path.isfile(x) and os.path.isfile(y) and os.path.samefile(x, y)
                                      for x, y in zip(pa, pb))


def same_checkpoints(where: str, previous: Dict, current: Dict, used: Sequence[str]) -> None:
    """Reconcile a resumed study's checkpoint settings with this run's, by content: the same file reached by
    another path (relative / absolute, a link, a copy) is the same setting (``previous`` takes this run's path),
    a different file at the recorded path is refused. ``current[DIGESTS]`` gets this run's digests (a setting
    this run does not use keeps the recorded one). Studies written before digests were recorded compare paths
    (the same file by ``os.path.samefile`` counts as the same)."""
    recorded, now = previous.get(DIGESTS) or {}, checkpoint_digests(current, used)
    check_digest_record(where, DIGESTS, recorded, "settings", "compare checkpoints by path")
    for key in used:
        old, new = previous.get(key), current.get(key)
        if not old or not new:
            continue
        if key in recorded and key in now:
            if recorded[key] != now[key]:
                flag = "--" + key.replace("_", "-")
                raise KDInputError(
                    f"{where}: {flag} {new} is not the checkpoint this study was written with ({old}, sha256 "
                    f"{recorded[key][:12]}; this file: {now[key][:12]}): its rows came from that one. Pass that "
                    f"checkpoint, or use a new --out-dir")
            previous[key] = new
        elif old != new and _same_files(old, new):
            previous[key] = new
    current[DIGESTS] = {**{k: v for k, v in recorded.items() if k not in used}, **now}
