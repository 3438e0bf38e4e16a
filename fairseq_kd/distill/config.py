"""What a ``fairseq-kd-distill`` job is: its configuration and the settings its outputs depend on.

``run`` (one worker) and ``merge`` (the parts of N workers) both build the same ``meta_of``
fingerprint from a ``DistillConfig``; neither imports the other's module for it.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from fairseq_kd.distill import decoding as dec
from fairseq_kd.errors import KDInputError

FORMAT_VERSION = 1
PART_TOOL = "fairseq-kd-distill"  # the tool name in a part's manifest (``fairseq_kd.parts``)
NUMERICS = "numerics"  # the meta key of the teacher's resolved dtype and device (equal across parts, not the merger's)


@dataclass
class DistillConfig:
    """Everything ``fairseq-kd-distill`` needs (the CLI fills it from its flags)."""
    data: str  # binarized data dir (fairseq-preprocess output: the teacher's dictionaries, or the student's with teacher_ct2)
    teacher_path: Optional[str]  # checkpoint, or several joined by ':' (ensemble); None with teacher_ct2
    output_dir: str
    split: str = "train"
    source_lang: Optional[str] = None
    target_lang: Optional[str] = None
    teacher_data: Optional[str] = None  # where the teacher's dict.*.txt live, if not ``data``
    decoding: dec.DecodingConfig = field(default_factory=dec.DecodingConfig)
    select: str = "top"
    backend: str = "fairseq"  # fairseq | ctranslate2 (a fairseq teacher); a CTranslate2 teacher is its own backend
    ct2_compute_type: str = "auto"
    max_tokens: int = 6000
    batch_size: int = 256
    shard_size: int = 2000
    seed: int = 1
    spm_model: Optional[str] = None  # sentencepiece model for detokenized text and BLEU (the student's)
    spm_model_tgt: Optional[str] = None  # target-side model when the sides have separate ones
    threads: int = 0  # torch / CTranslate2 CPU threads; 0 = library default
    cpu: bool = False
    fp16: bool = False
    bf16: bool = False
    copy_splits: List[str] = field(default_factory=list)
    trust_checkpoint: bool = False
    overwrite: bool = False
    progress: bool = True
    max_failed_fraction: float = 0.01  # sentences the decoder fails on fall back to gold; more than this fails the run
    part: Optional[str] = None  # "I/N" (0-based I): only worker I's block of shards, into OUT/parts/I-of-N
    merge: bool = False  # check the finished parts in OUT/parts and publish them (``merge.py``)
    # any CTranslate2 translation model as the teacher, with its own tokenization (``ct2_teacher``)
    teacher_ct2: Optional[str] = None  # the converted model directory
    teacher_spm: List[str] = field(default_factory=list)  # [model] or [source model, target model]
    teacher_source_prefix: Optional[str] = None  # e.g. NLLB's source language token "eng_Latn"
    teacher_target_prefix: Optional[str] = None  # e.g. "deu_Latn" (NLLB), "__de__" (M2M100)
    source_text: Optional[str] = None  # raw source text of the split (default: --data's source, detokenized)
    filters: str = ""  # published-corpus filters (``filters.parse_filters``)


def teacher_fingerprint(cfg: DistillConfig, loaded=None) -> str:
    """Content fingerprint of the teacher: checkpoint bytes (``loaded.fingerprint()`` when the
    ensemble is already loaded), or a CTranslate2 teacher's directory content and tokenization."""
    if cfg.teacher_ct2:
        from fairseq_kd.distill.ct2_teacher import fingerprint

        return fingerprint(cfg)
    if loaded is not None:
        return loaded.fingerprint()
    from fairseq_kd.teacher import split_paths, teacher_fingerprint as fp

    paths = split_paths(cfg.teacher_path)
    for p in paths:
        if not os.path.isfile(p):
            raise KDInputError(f"teacher checkpoint not found: {p} (fix --teacher; the merge checks its fingerprint)")
    return fp(paths)


def teacher_numerics(cfg: DistillConfig) -> Tuple[str, str]:
    """``(device, dtype)`` the teacher decodes in, resolved: ``cuda`` unless ``--cpu`` or no GPU; the
    fairseq backend's ``fp16`` / ``bf16`` on GPU only (``fp32`` on CPU), CTranslate2's compute type with
    ``auto`` resolved (int8 on CPU, float16 on GPU). One rule for the backends and the shard metadata."""
    import torch

    device = "cuda" if torch.cuda.is_available() and not cfg.cpu else "cpu"
    if cfg.teacher_ct2 or cfg.backend == "ctranslate2":
        from fairseq_kd.distill.ct2 import resolve_compute_type

        return device, resolve_compute_type(cfg.ct2_compute_type, device)
    if device == "cuda" and (cfg.fp16 or cfg.bf16):
        return device, "fp16" if cfg.fp16 else "bf16"
    return device, "fp32"


def backend_name(cfg: DistillConfig) -> str:
    if cfg.teacher_ct2:
        return f"ct2-teacher:{cfg.ct2_compute_type}"
    return cfg.backend + (f":{cfg.ct2_compute_type}" if cfg.backend == "ctranslate2" else "")


def meta_of(cfg: DistillConfig, data, teacher_fp: str) -> Dict:
    """What the shards depend on (resuming or merging with other values is refused). Filters act
    when publishing, on finished shards: changing them re-publishes without decoding again."""
    from fairseq_kd import fingerprint as fp

    device, dtype = teacher_numerics(cfg)
    meta = {
        "format": FORMAT_VERSION, "teacher": teacher_fp, "data": data.fingerprint(), "split": cfg.split,
        "langs": f"{data.src}-{data.tgt}", "decoding": cfg.decoding.signature(), "select": cfg.select,
        "backend": backend_name(cfg), "shard_size": cfg.shard_size, "max_tokens": cfg.max_tokens,
        "batch_size": cfg.batch_size, "seed": cfg.seed, "batching": "mixed",
        NUMERICS: f"{dtype} on {device}",  # int8 on CPU and float16 on GPU decode other targets
    }
    if cfg.select != "top" and (cfg.spm_model_tgt or cfg.spm_model):  # the n-best choice scores detokenized text
        meta["select_spm"] = fp.file_sha256(cfg.spm_model_tgt or cfg.spm_model)[:16]
    if cfg.teacher_ct2:  # the student's tokenization of the teacher's text is part of the targets
        spms = [cfg.spm_model, cfg.spm_model_tgt or cfg.spm_model]
        meta["student_spm"] = fp.files_fingerprint([p for p in spms if p])[:16]
        if cfg.source_text:
            meta["source_text"] = fp.file_sha256(cfg.source_text)[:16]
    return meta
