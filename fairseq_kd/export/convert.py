"""fairseq checkpoint -> CTranslate2 model directory (``fairseq-kd-export``).

The directory holds ``model.bin``, ``config.json``, ``source_vocabulary.json`` /
``target_vocabulary.json`` (the fairseq dictionaries, ``<pad>`` renamed ``<blank>`` as
CTranslate2 expects), the sentencepiece model(s) and ``fairseq_kd_export.json`` (what was
exported: checkpoint sha256, activation, widths, quantization). It is written under a
temporary name and renamed into place, so a directory that exists is complete.

Checkpoints load through ``fairseq_kd.checkpoint_safety`` (fairseq's loader with the
allowlist; ``trust`` opts one legacy file into full unpickling).
"""
import hashlib
import logging
import os
import shutil
from typing import Dict, Optional, Sequence

import torch

from fairseq_kd import fileio, guard
from fairseq_kd.errors import KDInputError, disk_error, is_disk_error
from fairseq_kd.export.spec import LAYER_NORM_EPS, build_spec

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("none", "int8", "int8_float32", "float16", "bfloat16")
META_FILE = "fairseq_kd_export.json"
SPM_NAMES = ("spm.model", "sentencepiece.model")


def ct2_vocabulary(dictionary) -> list:
    """A fairseq ``Dictionary``'s symbols in id order, ``<pad>`` spelled ``<blank>`` (CTranslate2's pad)."""
    return ["<blank>" if s == "<pad>" else s for s in dictionary.symbols]


def find_spm_model(data_dir: str) -> Optional[str]:
    """The sentencepiece model a ``data_prep`` output keeps beside ``bin/`` (or in it)."""
    for folder in (data_dir, os.path.dirname(os.path.abspath(data_dir))):
        for name in SPM_NAMES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def export_model(model, src_dict, tgt_dict, out_dir: str, quantization: str = "none",
                 spm_model: Optional[str] = None, spm_model_tgt: Optional[str] = None,
                 meta: Optional[Dict] = None, force: bool = False, int8_weight_bits: int = 8) -> Dict:
    """Write the CTranslate2 directory of a built fairseq model; returns the export metadata.
    ``int8_weight_bits`` 7: int8 weights in [-63, 63] (``export/quantize.py``: CPUs without VNNI)."""
    if quantization not in QUANTIZATIONS:
        raise KDInputError(f"--quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if int8_weight_bits not in (7, 8) or (int8_weight_bits != 8 and quantization != "int8"):
        raise KDInputError(f"--int8-weight-bits {int8_weight_bits}: 8 (default) or 7, and 7 only with "
                           f"--quantization int8 (got {quantization})")
    check_replaceable(out_dir, force)
    model.eval()
    spec, info = build_spec(model)
    spec.register_source_vocabulary(ct2_vocabulary(src_dict))
    spec.register_target_vocabulary(ct2_vocabulary(tgt_dict))
    spec.config.decoder_start_token = spec.config.eos_token  # fairseq starts decoding from EOS
    spec.config.add_source_eos = True  # and ends every source with EOS
    spec.config.layer_norm_epsilon = LAYER_NORM_EPS
    spm_files = {"source": None, "target": None}
    if spm_model_tgt and spm_model_tgt != spm_model:
        wanted = ((spm_model, "source", "source.spm.model"), (spm_model_tgt, "target", "target.spm.model"))
    else:
        wanted = ((spm_model, "source+target", "spm.model"),)
    for path, sides, name in wanted:
        if path:
            if not os.path.isfile(path):
                raise KDInputError(f"sentencepiece model not found: {path} (fix --spm-model)")
            spec.register_file(path, name)
            for side in sides.split("+"):
                spm_files[side] = name
    spec.validate()
    if int8_weight_bits == 7:
        from fairseq_kd.export.quantize import quantize_spec

        spec.optimize(quantization=None)  # aliasing of shared variables only; then the 7-bit weights
        quantize_spec(spec, 7)
    else:
        spec.optimize(quantization=None if quantization == "none" else quantization)
    meta = dict(meta or {})
    meta.update(info)
    if quantization == "int8":
        meta["int8_weight_bits"] = int8_weight_bits
    meta.update({"quantization": quantization, "format": 1, "spm": spm_files,
                 "max_target_positions": int(model.decoder.max_positions()),
                 "max_source_positions": int(model.encoder.max_positions())})
    tmp = f"{os.path.abspath(out_dir)}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    fileio.make_dirs(os.path.dirname(tmp), f"the folder of OUT_DIR {out_dir}")
    os.makedirs(tmp)
    try:
        spec.save(tmp)
        meta["files"] = {name: os.path.getsize(os.path.join(tmp, name)) for name in sorted(os.listdir(tmp))}
        fileio.atomic_write_json(os.path.join(tmp, META_FILE), meta)
        publish(tmp, out_dir)
    except OSError as err:
        if is_disk_error(err):  # a full or read-only disk: one line; an old export stays as it was
            raise disk_error(err, out_dir) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def check_replaceable(out_dir: str, force: bool) -> None:
    """Refuse an ``OUT_DIR`` that ``--force`` may not replace: only a previous export (its
    ``fairseq_kd_export.json`` present, nothing but export files beside it) is ever deleted."""
    here = os.getcwd()
    if guard.resolve(out_dir) == guard.resolve(here) or guard._inside(here, out_dir):
        raise KDInputError(f"OUT_DIR {out_dir} is (or contains) the current directory {here}: "
                           f"choose a new directory for the export")
    if not os.path.lexists(out_dir):
        return
    if not force:
        raise KDInputError(f"{out_dir} already exists: choose another OUT_DIR or pass --force to replace it")
    if not os.path.isdir(out_dir) or os.path.islink(out_dir):
        raise KDInputError(f"{out_dir} exists and is not a directory: --force replaces only a previous export "
                           f"directory; choose another OUT_DIR")
    if not os.path.isfile(os.path.join(out_dir, META_FILE)):
        raise KDInputError(f"{out_dir} is not a fairseq-kd-export directory (no {META_FILE}): --force replaces "
                           f"only a previous export, never other files; choose another OUT_DIR")
    foreign = sorted(n for n in os.listdir(out_dir) if not _export_file(n))
    if foreign:
        raise KDInputError(f"{out_dir} holds files an export does not write ({', '.join(foreign[:5])}): --force "
                           f"would delete them; move them away or choose another OUT_DIR")


def _export_file(name: str) -> bool:
    return (name in (META_FILE, "model.bin", "config.json") or name.endswith("vocabulary.json")
            or name.endswith("vocabulary.txt") or name in ("spm.model", "source.spm.model", "target.spm.model"))


def export_complete(model_dir: str) -> bool:
    """A finished export: its metadata lists every file with its size, and each file has that size
    (a directory cut by a full disk or a copy is not complete)."""
    try:
        files = read_meta(model_dir).get("files")
    except (OSError, ValueError):
        return False
    if not files or "model.bin" not in files:
        return False
    for name, size in files.items():
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            return False
    return True


def publish(tmp: str, out_dir: str) -> None:
    """Move the finished directory ``tmp`` to ``out_dir``; an old ``out_dir`` is moved aside first and
    deleted only once the new one is in place."""
    old = None
    if os.path.lexists(out_dir):
        old = f"{os.path.abspath(out_dir)}.old.{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)



SUPPORTED_MODELS = ("transformer", "transformer_glu")


def check_architecture(checkpoint: str, trust: bool = False) -> str:
    """The checkpoint's arch, refused unless its model is one the converter maps (before building it)."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    from fairseq_kd import checkpoint_safety

    state = checkpoint_safety.load_checkpoint(checkpoint, trust_file=trust)
    margs = (state.get("cfg") or {}).get("model") or state.get("args")
    arch = getattr(margs, "arch", None) if not isinstance(margs, dict) else margs.get("arch")
    if arch is None and margs is not None:
        arch = getattr(margs, "_name", None) if not isinstance(margs, dict) else margs.get("_name")
    model = ARCH_MODEL_NAME_REGISTRY.get(arch)
    if model not in SUPPORTED_MODELS:
        raise KDInputError(f"{checkpoint}: architecture {arch!r} (model {model!r}) cannot be exported to "
                           f"CTranslate2; supported models: {', '.join(SUPPORTED_MODELS)}")
    return arch


def load_single(checkpoint: str, data: Optional[str] = None, trust: bool = False):
    """``(model, src_dict, tgt_dict, cfg)`` of one checkpoint, loaded through the allowlist."""
    from fairseq_kd.teacher import load_teacher, split_paths

    paths = split_paths(checkpoint)
    if len(paths) != 1:
        raise KDInputError(f"{checkpoint!r} names {len(paths)} checkpoints: an ensemble averages several models' "
                           f"probabilities, which one CTranslate2 model cannot hold. Export each checkpoint "
                           f"separately (or decode the ensemble with fairseq-generate)")
    check_architecture(paths[0], trust)
    try:
        ens = load_teacher(paths[0], teacher_data=data, trust=trust)
    except KDInputError:
        if data is not None:
            raise
        raise KDInputError(f"could not read the dictionaries of {paths[0]} from the data dir stored in it: "
                           f"pass --data DIR holding its dict.<lang>.txt files") from None
    return ens.models[0], ens.src_dict, ens.tgt_dict, ens.cfg


def conversion_key(model_digest: str, src_dict, tgt_dict, *parts: Optional[str]) -> str:
    """sha256 of what a conversion is made of: the model's bytes (``model_digest``), the symbols of the
    dictionaries it is loaded with (one checkpoint read with other dictionaries converts to another
    vocabulary) and any further ``parts`` (a sentencepiece model's digest, the quantization). The caches
    of converted models (``distill/ct2.py``, ``export/evaluate.py``) are named by it."""
    from fairseq_kd.fingerprint import dictionary_fingerprint

    fields = [model_digest, dictionary_fingerprint(src_dict), dictionary_fingerprint(tgt_dict)]
    fields += ["-" if p is None else str(p) for p in parts]
    return hashlib.sha256("\n".join(fields).encode("utf-8")).hexdigest()


def load_for_export(checkpoint: str, data: Optional[str] = None, spm_model: Optional[str] = None,
                    trust: bool = False):
    """``(model, src_dict, tgt_dict, cfg, spm_model, meta)``: one checkpoint loaded through the allowlist,
    the sentencepiece model its export holds (``spm_model``, else the one beside its data dir, else None)
    and the export's metadata."""
    from fairseq_kd.fingerprint import file_sha256

    if ":" not in checkpoint:
        fileio.check_file(checkpoint, f"checkpoint not found: {checkpoint}", "checkpoint")
    model, src_dict, tgt_dict, cfg = load_single(checkpoint, data, trust)
    data_dir = data or cfg.task.data
    if spm_model is None:
        spm_model = find_spm_model(data_dir)
        if spm_model is None:
            logger.warning("no sentencepiece model next to %s: the export holds none (pass --spm-model to add it; "
                           "fairseq-kd-translate then needs --spm-model)", data_dir)
    meta = {"checkpoint": os.path.abspath(checkpoint), "checkpoint_sha256": file_sha256(checkpoint),
            "arch": str(getattr(cfg.model, "arch", "?")), "source_lang": cfg.task.source_lang,
            "target_lang": cfg.task.target_lang,
            "params": int(sum(p.numel() for p in model.parameters()))}
    return model, src_dict, tgt_dict, cfg, spm_model, meta


def export_checkpoint(checkpoint: str, out_dir: str, quantization: str = "none", data: Optional[str] = None,
                      spm_model: Optional[str] = None, spm_model_tgt: Optional[str] = None,
                      trust: bool = False, force: bool = False, int8_weight_bits: int = 8) -> Dict:
    """``fairseq-kd-export``: checkpoint (+ dictionaries, sentencepiece) -> CTranslate2 directory."""
    model, src_dict, tgt_dict, cfg, spm_model, meta = load_for_export(checkpoint, data, spm_model, trust)
    # the checkpoint's own data dir (never passed as --data) and teacher files are inputs too
    guard.check_paths(guard.named_by_checkpoint(cfg), {"OUT_DIR": out_dir})
    return export_model(model, src_dict, tgt_dict, out_dir, quantization, spm_model, spm_model_tgt, meta, force,
                        int8_weight_bits)


def read_meta(model_dir: str) -> Dict:
    path = os.path.join(model_dir, META_FILE)
    if not os.path.isfile(path):
        return {}
    from fairseq_kd import integrity

    return integrity.load_json(path, "re-export the model with fairseq-kd-export", counts=("params",))


def source_tokens(dictionary, ids: torch.Tensor, eos: Optional[int] = None) -> Sequence[str]:
    """fairseq source ids -> the tokens CTranslate2 reads (EOS dropped: the model adds it)."""
    eos = dictionary.eos() if eos is None else eos
    return [dictionary[t] for t in ids.tolist() if t != eos]
