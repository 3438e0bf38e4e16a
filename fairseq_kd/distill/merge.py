"""Merge the parts of a distillation run as ``--part I/N`` workers, then publish.

Every part ran the same shard boundaries (``shard_ranges`` of the whole split) and the
same batching inside a shard, over its own contiguous block of shards, in
``OUT/parts/I-of-N``. The merge checks before anything is written:

* completeness: parts ``0..N-1`` all present and finished (``PART.json``), no part of another
  split beside them (``fairseq_kd.parts.collect``);
* fingerprints: each part's settings equal this job's (teacher checkpoint bytes, data and
  dictionaries, decoding, backend, shard size, ...), recomputed here from ``--teacher`` (or
  ``--teacher-ct2``) and ``--data``;
* ids and counts: each part's manifest covers exactly the sentence ids of its block of
  shards, and every shard file holds exactly its ids, in order.

Then the shard files are copied into ``OUT/shards`` and published by the same code as a
single run (``publish.publish``), so the final files are byte-identical to one worker's.
"""
import logging
import os
import shutil
from typing import Dict

from fairseq_kd import fileio
from fairseq_kd.distill.config import NUMERICS, PART_TOOL, meta_of, teacher_fingerprint
from fairseq_kd.errors import KDInputError

logger = logging.getLogger(__name__)


def merge_parts(cfg) -> Dict:
    """Check the finished parts in ``cfg.output_dir/parts`` and publish them."""
    from fairseq_kd import parts
    from fairseq_kd.distill.data import Detokenizer, SplitData, infer_langs
    from fairseq_kd.distill.publish import publish, unpublish
    from fairseq_kd.distill.shards import ShardStore, shard_ranges

    src, tgt = infer_langs(cfg.data, cfg.split, cfg.source_lang, cfg.target_lang)
    data = SplitData(cfg.data, cfg.split, src, tgt)
    meta = meta_of(cfg, data, teacher_fingerprint(cfg))  # checkpoint bytes, or the CTranslate2 teacher's content
    ranges = shard_ranges(len(data), cfg.shard_size)
    command = "fairseq-kd-distill (same flags)"
    # the workers' dtype and device (NUMERICS) must be one, whatever this merging process runs on
    found = parts.collect(cfg.output_dir, PART_TOOL, meta, command=command, across=(NUMERICS,))  # N from disk
    meta[NUMERICS] = (found[0].get("fingerprint") or {}).get(NUMERICS)
    if meta[NUMERICS] is None:
        raise KDInputError(f"--merge: the parts in {cfg.output_dir}/parts were written before fairseq-kd-distill "
                           f"recorded the teacher's dtype and device: re-run {command} with --part I/N --overwrite "
                           f"for each part, then merge")
    n = len(found)
    blocks = [range(len(ranges))[parts.part_slice(len(ranges), i, n)] for i in range(n)]
    parts.collect(cfg.output_dir, PART_TOOL, meta, command=command,
                  expected_ids=[[j for k in block for j in ranges[k]] for block in blocks])

    work = os.path.join(cfg.output_dir, "shards")
    if cfg.overwrite:
        unpublish(cfg.output_dir, cfg.split, src, tgt)
        shutil.rmtree(work, ignore_errors=True)
    store = ShardStore(work, meta)
    timing: Dict[str, float] = {}
    for i, (man, block) in enumerate(zip(found, blocks)):
        part = parts.Part(i, n)
        pstore = ShardStore(man["folder"], {**meta, "part": str(part)})
        for k in block:
            if not pstore.done(k):
                raise KDInputError(f"part {part}: shard {k} ({pstore.path(k)}) is missing although the part is marked "
                                   f"finished: delete {man['folder']} and re-run {command} with --part {part}")
            pstore.read(k, ranges[k])  # ids and count checked: exactly ranges[k], in order
        for k in block:
            if not store.done(k):
                fileio.atomic_copy(pstore.path(k), store.path(k))
        timing.update({str(k): float(man["timing"][str(k)]) for k in block})
    logger.info("merged %d parts (%d shards, %d sentences) into %s", n, len(ranges), len(data), work)
    detok_src, detok_tgt = Detokenizer(cfg.spm_model), Detokenizer(cfg.spm_model_tgt or cfg.spm_model)
    summary = publish(cfg, data, store, ranges, timing, detok_src, detok_tgt)
    summary["merged_parts"] = n
    return summary
