"""Distil a binarized split: the teacher translates every source line; the outputs
become a plain-text and a binarized parallel corpus (line i = source line i).

Work is done in shards (``shards.ShardStore``) so an interrupted run resumes; the
final files are written only after the alignment of every shard has been checked.

Pieces: ``config`` (the job and what its shards depend on), ``data`` (the split, batches,
text), ``fairseq_backend`` / ``ct2`` (a fairseq teacher) / ``ct2_teacher`` (any CTranslate2
model with its own tokenizer), one backend each with the same ``decode(ids) -> {id: [hyp, ...]}``
interface, ``publish`` (checks, ``filters``, final files), ``merge`` (parts of N workers), this
module (the shard loop, hypothesis choice and fallbacks).
"""
import json
import logging
import os
import shutil
import time
from typing import Dict, List, Optional

import torch

from fairseq_kd.distill import decoding as dec
from fairseq_kd.distill import fallback
from fairseq_kd.distill import select as sel
from fairseq_kd.distill.config import PART_TOOL, DistillConfig, meta_of, teacher_fingerprint  # noqa: F401 (re-exported)
from fairseq_kd.distill.data import Detokenizer, SplitData, infer_langs, to_pieces  # noqa: F401 (re-exported)
from fairseq_kd.distill.publish import publish, unpublish
from fairseq_kd.distill.shards import ShardStore, atomic_write_text, shard_ranges
from fairseq_kd.errors import KDInputError

logger = logging.getLogger(__name__)


# --- backends ----------------------------------------------------------------------
def build_backend(teacher, data: SplitData, cfg: DistillConfig):
    """The decoder of ``cfg``: a CTranslate2 teacher (its own tokenization), or the loaded fairseq
    ``teacher`` through fairseq or its CTranslate2 conversion. No backend needs batches of one source
    length: fairseq's search gives every sentence its own limit (``decoding.SentenceMaxLen``),
    CTranslate2's outputs are cut or redone to it (``export.decode``)."""
    if cfg.teacher_ct2:
        from fairseq_kd.distill.ct2_teacher import CT2TeacherBackend

        return CT2TeacherBackend(data, cfg)
    if cfg.backend == "fairseq":
        from fairseq_kd.distill.fairseq_backend import FairseqBackend

        return FairseqBackend(teacher, data, cfg)
    if cfg.backend == "ctranslate2":
        from fairseq_kd.distill.ct2 import CT2Backend

        return CT2Backend(teacher, data, cfg)
    raise KDInputError(f"unknown --backend {cfg.backend!r} (fairseq or ctranslate2)")


# --- the job -----------------------------------------------------------------------
def decode_shard(backend, data: SplitData, ids: range, cfg: DistillConfig, detok_tgt: Detokenizer,
                 progress=None) -> Dict[int, Dict]:
    """Records ``{id: {"tgt": ids, "fallback": ..., "rank": ..., "score": ...}}`` for one shard."""
    eos = data.tgt_dict.eos()
    records = {}
    for batch in data.batches(ids, cfg.max_tokens, cfg.batch_size):
        hyps, failed = fallback.decode_with_fallback(backend, batch)  # a sentence that raises costs only itself
        for i in batch:
            records[i] = choose(hyps.get(i) or [], data.gold(i), cfg.select, data.tgt_dict, detok_tgt, eos)
            if i in failed:
                records[i]["cause"] = failed[i]
        if progress is not None:
            progress.update(len(batch))
    return records


def choose(hyps: List[Dict], gold: Optional[torch.Tensor], select: str, tgt_dict, detok, eos: int) -> Dict:
    """Pick a hypothesis (seq-inter when ``select`` != top); fall back to gold when empty/failed."""
    rank = 0
    if len(hyps) > 1 and select != "top" and gold is not None:
        texts = [detok(to_pieces(tgt_dict, h["tokens"])) for h in hyps]
        rank = sel.select_index(texts, detok(to_pieces(tgt_dict, gold)), select)
    reason, cause = None, None
    if not hyps:
        reason = "failed"
    elif fallback.nan_score(hyps[rank:rank + 1]):
        reason, cause = "failed", "NaN score"
    elif dec.is_empty(hyps[rank]["tokens"], eos):
        reason = "empty"
    if reason is not None:
        rec = {"tgt": [eos] if gold is None else gold.tolist(), "fallback": reason, "rank": -1, "score": None}
        return {**rec, "cause": cause} if cause else rec
    h = hyps[rank]
    return {"tgt": h["tokens"].tolist(), "fallback": None, "rank": rank, "score": round(h["score"], 6)}


def distill(cfg: DistillConfig) -> Dict:
    """Run (or resume) the distillation and publish the outputs; returns the summary.

    With ``cfg.part`` ("I/N", 0-based) only worker I's block of shards is decoded, into
    ``OUT/parts/I-of-N`` (a part summary is returned, nothing is published); with
    ``cfg.merge`` the finished parts are checked and published (``merge.merge_parts``).
    """
    from fairseq_kd import parts
    from fairseq_kd.teacher import check_same_dictionary, load_teacher

    if cfg.merge:
        from fairseq_kd.distill.merge import merge_parts

        return merge_parts(cfg)
    if cfg.backend == "ctranslate2" and not cfg.teacher_ct2:  # what it cannot decode as fairseq does: before any work
        from fairseq_kd.distill.ct2 import check_options

        check_options(cfg)
    part = parts.parse_part(cfg.part) if cfg.part else None
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    src, tgt = infer_langs(cfg.data, cfg.split, cfg.source_lang, cfg.target_lang)
    data = SplitData(cfg.data, cfg.split, src, tgt)
    if cfg.decoding.sampling_topk > len(data.tgt_dict):
        raise KDInputError(f"--sampling-topk {cfg.decoding.sampling_topk} exceeds the {len(data.tgt_dict)} symbols of "
                           f"{data.tgt_dict_file}")
    if cfg.decoding.decoding == "teacher_forcing" and data.tgt_ds is None:
        raise KDInputError(f"--decoding teacher_forcing needs the gold target {cfg.split}.{src}-{tgt}.{tgt} in {cfg.data}")
    if cfg.select != "top" and data.tgt_ds is None:
        raise KDInputError(f"--select {cfg.select} needs the gold target of split '{cfg.split}' in {cfg.data}")
    teacher = None
    if not cfg.teacher_ct2:
        # the teacher's own dictionaries (its checkpoint's data dir, or --teacher-data), compared symbol by
        # symbol with --data's: never --data's own, which would make the check compare a file with itself
        teacher = load_teacher(cfg.teacher_path, teacher_data=cfg.teacher_data, trust=cfg.trust_checkpoint)
        from fairseq_kd.langpair import check_teacher_pair  # a teacher trained in the other direction
        check_teacher_pair(teacher.cfg, src, tgt, cfg.teacher_path, cfg.data)
        check_same_dictionary(teacher.src_dict, "the teacher's source dictionary", data.src_dict, data.src_dict_file,
                              "source")
        check_same_dictionary(teacher.tgt_dict, "the teacher's target dictionary", data.tgt_dict, data.tgt_dict_file,
                              "target")
    else:  # its own tokenizer and vocabulary; loaded (and refused) before anything is written
        backend = build_backend(None, data, cfg)

    work = parts.part_dir(cfg.output_dir, part) if part else os.path.join(cfg.output_dir, "shards")
    if cfg.overwrite:  # the old published files go first: an interrupted run never leaves them beside new shards
        if part is None:
            unpublish(cfg.output_dir, cfg.split, src, tgt)
        if os.path.isdir(work):
            shutil.rmtree(work)
    meta = meta_of(cfg, data, teacher_fingerprint(cfg, teacher))
    store = ShardStore(work, {**meta, "part": str(part)} if part else meta)
    if teacher is not None:
        backend = build_backend(teacher, data, cfg)
    detok_src, detok_tgt = Detokenizer(cfg.spm_model), Detokenizer(cfg.spm_model_tgt or cfg.spm_model)

    ranges = shard_ranges(len(data), cfg.shard_size)
    mine = range(len(ranges))[part.slice(len(ranges))] if part else range(len(ranges))  # this worker's shards
    todo = [k for k in mine if not store.done(k)]
    timing_file = os.path.join(work, "timing.json")
    timing = json.load(open(timing_file)) if os.path.exists(timing_file) else {}
    logger.info("distilling %s (%d sentences, %d shards, %d to do) with %s/%s", cfg.split, len(data), len(ranges),
                len(todo), cfg.backend, cfg.decoding.signature())
    progress = None
    if cfg.progress:
        from tqdm import tqdm

        progress = tqdm(total=sum(len(ranges[k]) for k in todo), desc=f"distill {cfg.split}", unit="sent")
    failures: Dict[str, int] = {}  # cause -> sentences of this run that fell back to gold after an error
    for k in todo:
        torch.manual_seed(cfg.seed + k)  # sampling: a shard's draws do not depend on the others
        if hasattr(backend, "set_seed"):
            backend.set_seed(cfg.seed + k)
        t0 = time.perf_counter()
        records = decode_shard(backend, data, ranges[k], cfg, detok_tgt, progress)
        timing[str(k)] = time.perf_counter() - t0  # saved before the shard: every finished shard has its time
        atomic_write_text(timing_file, json.dumps(timing, sort_keys=True))
        store.write(k, ranges[k], records)
        for cause, n in fallback.failed_by_cause(records.values()).items():
            failures[cause] = failures.get(cause, 0) + n
        fallback.check_failures(failures, len(data), cfg.max_failed_fraction, f"distilling {cfg.split}")
    if progress is not None:
        progress.close()
    if part is not None:
        ids = [i for k in mine for i in ranges[k]]
        parts.write_manifest(work, PART_TOOL, part.i, part.n, meta, ids, shards=[mine.start, mine.stop],
                             timing={str(k): timing[str(k)] for k in mine})
        return {"part": str(part), "shards": [mine.start, mine.stop], "sentences": len(ids), "work_dir": work}
    return publish(cfg, data, store, ranges, timing, detok_src, detok_tgt)
