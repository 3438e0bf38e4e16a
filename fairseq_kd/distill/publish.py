"""Publishing a finished distillation: alignment checks, then text, binarized data and the
summary, each written atomically (``fairseq-kd-distill``'s last step)."""
import json
import os
import shutil
from dataclasses import asdict
from typing import Dict

import torch

from fairseq_kd import fileio, guard
from fairseq_kd.distill import filters
from fairseq_kd.distill.data import SplitData, to_pieces
from fairseq_kd.distill.fallback import check_failures, failed_by_cause
from fairseq_kd.distill.shards import ShardStore, atomic_write_lines, atomic_write_text
from fairseq_kd.errors import KDInputError
from fairseq_kd.langpair import split_prefix


def check_copy_splits(split: str, copy_splits) -> None:
    """Refuse a --copy-splits list that would corrupt bin/: the gold splits are copied after the
    distilled one is written, so naming the distilled --split would replace its distilled bin/ files
    with gold ones (fairseq-train would train on gold targets while the text files say distilled);
    a split listed twice is a typo worth naming. Called by the CLI before any work, and here again."""
    seen = set()
    for other in copy_splits:
        if other == split:
            raise KDInputError(f"--copy-splits names {other}, the --split being distilled: its gold binarized files "
                               f"would replace the distilled ones in bin/; drop {other} from --copy-splits")
        if other in seen:
            raise KDInputError(f"--copy-splits lists {other} twice: name each split once")
        seen.add(other)


def publish(cfg, data: SplitData, store: ShardStore, ranges, timing, detok_src, detok_tgt) -> Dict:
    """Check alignment, then write text, binarized data and the summary (each atomically)."""
    import sacrebleu
    from fairseq.data import indexed_dataset

    check_copy_splits(cfg.split, cfg.copy_splits)  # before anything is removed or written
    for folder in (cfg.output_dir, os.path.join(cfg.output_dir, "bin")):  # a killed publish's temporaries
        guard.remove_stale_temporaries(folder)
    summary_file = os.path.join(cfg.output_dir, "summary.json")
    if os.path.exists(summary_file):  # summary.json marks a finished output: not while files are replaced
        os.remove(summary_file)
    records = [r for k, ids in enumerate(ranges) for r in store.read(k, ids)]
    if [r["id"] for r in records] != list(range(len(data))):
        raise RuntimeError(f"alignment check failed: {len(records)} records for {len(data)} source lines")
    failed = failed_by_cause(records)
    check_failures(failed, len(data), getattr(cfg, "max_failed_fraction", 0.01), f"publishing {cfg.split}")
    src, tgt, split = data.src, data.tgt, cfg.split
    out = cfg.output_dir
    src_pieces = [to_pieces(data.src_dict, data.src_ds[i]) for i in range(len(data))]
    tgt_pieces = [to_pieces(data.tgt_dict, r["tgt"]) for r in records]
    hyp_text = [detok_tgt(p) for p in tgt_pieces]
    src_text = [detok_src(p) for p in src_pieces]
    spec = filters.parse_filters(getattr(cfg, "filters", ""))
    reasons = filters.drop_reasons(records, src_text, hyp_text, [len(p.split()) for p in src_pieces],
                                   [len(r["tgt"]) - 1 for r in records], spec)
    kept = [i for i, reason in enumerate(reasons) if reason is None]  # every line without --filter
    ids_file = os.path.join(out, f"{split}.ids")
    if spec.active:  # line j of the published files is sentence kept[j] of the split
        atomic_write_lines(ids_file, (str(i) for i in kept))
    elif os.path.exists(ids_file):
        os.remove(ids_file)
    n_src = atomic_write_lines(os.path.join(out, f"{split}.{src}"), (src_pieces[i] for i in kept))
    n_tgt = atomic_write_lines(os.path.join(out, f"{split}.{tgt}"), (tgt_pieces[i] for i in kept))
    if detok_tgt.sp is not None:
        atomic_write_lines(os.path.join(out, f"{split}.detok.{src}"), (src_text[i] for i in kept))
        atomic_write_lines(os.path.join(out, f"{split}.detok.{tgt}"), (hyp_text[i] for i in kept))
    if not (n_src == n_tgt == len(kept)):
        raise RuntimeError(f"alignment check failed: wrote {n_src} source / {n_tgt} target lines for {len(kept)}")

    # binarized copy with the teacher's dictionaries, ready for fairseq-train
    bin_dir = os.path.join(out, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    for lang, d in ((src, data.src_dict), (tgt, data.tgt_dict)):
        with fileio.atomic_open(os.path.join(bin_dir, f"dict.{lang}.txt")) as f:
            d.save(f)
    for lang, d, items in ((src, data.src_dict, (data.src_ds[i] for i in kept)),
                           (tgt, data.tgt_dict, (torch.tensor(records[i]["tgt"]) for i in kept))):
        prefix = os.path.join(bin_dir, f"{split}.{src}-{tgt}.{lang}")
        builder = indexed_dataset.make_builder(prefix + ".bin.tmp", impl="mmap", vocab_size=len(d))
        for t in items:
            builder.add_item(t.long())
        builder.finalize(prefix + ".idx.tmp")
        os.replace(prefix + ".bin.tmp", prefix + ".bin")
        os.replace(prefix + ".idx.tmp", prefix + ".idx")
    check = indexed_dataset.MMapIndexedDataset(os.path.join(bin_dir, f"{split}.{src}-{tgt}.{tgt}"))
    if len(check) != len(kept):
        raise RuntimeError(f"alignment check failed: binarized target has {len(check)} lines for {len(kept)}")
    for other in cfg.copy_splits:
        for lang in (src, tgt):
            p = split_prefix(cfg.data, other, src, tgt, lang)
            if p is None:
                raise KDInputError(f"--copy-splits {other}: no binarized {other} split ({src}-{tgt}) in {cfg.data}")
            for ext in (".bin", ".idx"):
                fileio.atomic_copy(p + ext, os.path.join(bin_dir, f"{other}.{src}-{tgt}.{lang}{ext}"))

    # summary
    untimed = [k for k in range(len(ranges)) if str(k) not in timing]  # shards of an older run killed midway
    seconds = None if untimed else sum(timing[str(k)] for k in range(len(ranges)))
    n_tokens = sum(len(r["tgt"]) - 1 for r in records)
    summary = {
        "split": split, "sentences": len(data), "tokens": n_tokens,
        "decode_seconds": round(seconds, 3) if seconds is not None else None,
        "sent_per_s": round(len(data) / seconds, 2) if seconds else None,
        "tokens_per_s": round(n_tokens / seconds, 1) if seconds else None,
        "empty_hypotheses": sum(r["fallback"] == "empty" for r in records),
        "failed_hypotheses": sum(r["fallback"] == "failed" for r in records),
        "failed_by_cause": failed,
        "fallback_to_gold": sum(r["fallback"] is not None and data.tgt_ds is not None for r in records),
        "nbest_rank_histogram": _histogram(r["rank"] for r in records),
        "unk_tokens": sum(t == data.tgt_dict.unk() for r in records for t in r["tgt"]),
        "backend": "ct2-teacher" if getattr(cfg, "teacher_ct2", None) else cfg.backend, "decoding": asdict(cfg.decoding), "select": cfg.select,
        "text_level": "detokenized" if detok_tgt.sp is not None else "pieces",
        "outputs": {"text": [f"{split}.{src}", f"{split}.{tgt}"], "bin": "bin"},
    }
    if untimed:
        summary["untimed_shards"] = untimed  # no speed rather than a speed over part of the work
    if data.tgt_ds is not None:  # the teacher's BLEU: on the sentences it translated (a gold fallback is no hypothesis)
        own = [j for j, r in enumerate(records) if r["fallback"] is None]
        refs = [detok_tgt(to_pieces(data.tgt_dict, data.gold(i))) for i in range(len(data))]
        hyps_own, refs_own = [hyp_text[j] for j in own], [refs[j] for j in own]
        bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
        summary["bleu"] = round(bleu.corpus_score(hyps_own, [refs_own]).score, 2)
        summary["chrf"] = round(chrf.corpus_score(hyps_own, [refs_own]).score, 2)
        summary["bleu_sentences"] = len(own)
        summary["bleu_signature"] = str(bleu.get_signature())
    if spec.active:  # bleu/chrf above: the teacher on the whole split; the published corpus keeps "kept" pairs
        summary["filtered"] = {**filters.counts(reasons), "spec": getattr(cfg, "filters", "")}
    summary["signature"] = signature(cfg, store.meta)
    atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def unpublish(out: str, split: str, src: str, tgt: str) -> None:
    """Remove a previous run's published files (summary.json first: it marks a finished output)."""
    for name in ("summary.json", f"{split}.{src}", f"{split}.{tgt}", f"{split}.detok.{src}", f"{split}.detok.{tgt}",
                 f"{split}.ids"):
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)
    if os.path.isdir(os.path.join(out, "bin")):
        shutil.rmtree(os.path.join(out, "bin"))


def _histogram(ranks) -> Dict[str, int]:
    h: Dict[str, int] = {}
    for r in ranks:
        h[str(r)] = h.get(str(r), 0) + 1
    return dict(sorted(h.items()))


def signature(cfg, meta: Dict) -> str:
    """sacrebleu-style reproducibility signature of the run."""
    import fairseq

    import fairseq_kd

    keys = ("decoding", "select", "backend", "shard_size", "seed")
    parts = [f"{k}:{meta[k]}" for k in keys] + [f"teacher:{meta['teacher'][:12]}",
                                               f"fairseq_kd:{fairseq_kd.__version__}", f"fairseq:{fairseq.__version__}"]
    return "|".join(parts)
