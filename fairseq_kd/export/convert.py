"""fairseq checkpoint -> CTranslate2 model directory (``fairseq-kd-export``).

The directory holds ``model.bin``, ``config.json``, ``source_vocabulary.json`` /
``target_vocabulary.json`` (the fairseq dictionaries, ``<pad>`` renamed ``<blank>`` as
CTranslate2 expects), the sentencepiece model(s) and ``fairseq_kd_export.json`` (what was
exported: checkpoint sha256, activation, widths, quantization). It is written under a
temporary name and renamed into place, so a directory that exists is complete.

Checkpoints load through ``fairseq_kd.checkpoint_safety`` (fairseq's loader with the
allowlist; ``trust`` opts one legacy file into full unpickling).
"""
import json
import logging
import os
import shutil
from typing import Dict, Optional, Sequence

import torch

from fairseq_kd.errors import KDInputError
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
                 meta: Optional[Dict] = None, force: bool = False) -> Dict:
    """Write the CTranslate2 directory of a built fairseq model; returns the export metadata."""
    if quantization not in QUANTIZATIONS:
        raise KDInputError(f"--quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if os.path.exists(out_dir) and not force:
        raise KDInputError(f"{out_dir} already exists: choose another OUT_DIR or pass --force to replace it")
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
    spec.optimize(quantization=None if quantization == "none" else quantization)
    meta = dict(meta or {})
    meta.update(info)
    meta.update({"quantization": quantization, "format": 1, "spm": spm_files,
                 "max_target_positions": int(model.decoder.max_positions())})
    tmp = f"{out_dir.rstrip('/')}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        spec.save(tmp)
        with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.write("\n")
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


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


def export_checkpoint(checkpoint: str, out_dir: str, quantization: str = "none", data: Optional[str] = None,
                      spm_model: Optional[str] = None, spm_model_tgt: Optional[str] = None,
                      trust: bool = False, force: bool = False) -> Dict:
    """``fairseq-kd-export``: checkpoint (+ dictionaries, sentencepiece) -> CTranslate2 directory."""
    from fairseq_kd.teacher import file_sha256

    if not os.path.isfile(checkpoint) and ":" not in checkpoint:
        raise KDInputError(f"checkpoint not found: {checkpoint}")
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
    return export_model(model, src_dict, tgt_dict, out_dir, quantization, spm_model, spm_model_tgt, meta, force)


def read_meta(model_dir: str) -> Dict:
    path = os.path.join(model_dir, META_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def source_tokens(dictionary, ids: torch.Tensor, eos: Optional[int] = None) -> Sequence[str]:
    """fairseq source ids -> the tokens CTranslate2 reads (EOS dropped: the model adds it)."""
    eos = dictionary.eos() if eos is None else eos
    return [dictionary[t] for t in ids.tolist() if t != eos]
