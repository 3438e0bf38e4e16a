"""``fairseq-kd-cache``: run the teacher over binarized splits once, store top-k distributions.

    fairseq-kd-cache DATA --teacher-path ckpt.pt[:ckpt2.pt] --out-dir CACHE --split train --topk 8

Then train with ``--task kd_translation --teacher-cache CACHE --criterion word_kd``.
Killed at any point, the same command resumes; a finished split is skipped.
"""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import torch

logger = logging.getLogger("fairseq_kd.cli.cache")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairseq-kd-cache", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("data", help="fairseq binarized data directory (the student's)")
    g.add_argument("--source-lang", "-s", default=None, help="source language (inferred when omitted)")
    g.add_argument("--target-lang", "-t", default=None, help="target language (inferred when omitted)")
    g.add_argument("--split", action="append", default=None, help="split to cache (repeatable; default: train)")
    g = p.add_argument_group("teacher")
    g.add_argument("--teacher-path", required=True, help="checkpoint, or several joined by ':' (ensemble)")
    g.add_argument("--teacher-data", default=None, help="directory with the teacher's dictionaries, if moved")
    g.add_argument("--trust-checkpoint", action="store_true", help="fully unpickle the teacher checkpoint(s) (trusted legacy files)")
    g = p.add_argument_group("cache")
    g.add_argument("--out-dir", required=True, help="cache directory (pass it to --teacher-cache)")
    g.add_argument("--topk", type=int, default=8, help="teacher tokens kept per target position")
    g = p.add_argument_group("compute")
    g.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch")
    g.add_argument("--batch-size", type=int, default=None, help="sentences per batch")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    g.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="teacher compute dtype")
    g.add_argument("--flush-every", type=int, default=50, help="batches between flushes (resume granularity)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def build_task(args):
    from fairseq_kd.tasks.kd_translation import KDTranslationConfig, KDTranslationTask

    cfg = KDTranslationConfig(data=args.data, source_lang=args.source_lang, target_lang=args.target_lang,
                              teacher_path=args.teacher_path, teacher_data=args.teacher_data,
                              teacher_trust_checkpoint=args.trust_checkpoint)
    # globals that fairseq-train would interpolate from its other config groups
    cfg.train_subset, cfg.valid_subset, cfg.seed = "train", "valid", 1
    cfg.dataset_impl, cfg.required_seq_len_multiple = None, 1
    return KDTranslationTask.setup_task(cfg)


def split_fingerprint(task, split: str, dataset, teacher, dtype: str) -> dict:
    """What a split's cache depends on: teacher bytes (and files), dictionaries, tokens, compute dtype."""
    from fairseq_kd.cache import fingerprint

    return {**fingerprint(task, split, dataset, teacher.fingerprint(), teacher.paths), "dtype": dtype}


def cache_split(task, teacher, split: str, args) -> dict:
    """Fill (or resume) the cache of one split; returns its summary."""
    from fairseq.data import data_utils
    from tqdm import tqdm

    from fairseq_kd.cache import TeacherCache, TeacherCacheWriter
    from fairseq_kd.errors import KDInputError

    if TeacherCache.exists(args.out_dir, split):
        task.load_dataset(split)
        cache = TeacherCache.open(args.out_dir, split, task.dataset(split), task, args.teacher_path)  # validates
        with open(os.path.join(args.out_dir, f"{split}.meta.json")) as f:
            dtype = json.load(f)["fingerprint"].get("dtype", "fp32")
        if (cache.k, dtype) != (args.topk, args.dtype):  # never report "exists" for other settings
            raise KDInputError(f"{args.out_dir} already holds a finished {split} cache with --topk {cache.k} "
                               f"--dtype {dtype}, not --topk {args.topk} --dtype {args.dtype}: use another "
                               f"--out-dir, or delete {args.out_dir}/{split}.* to rebuild it")
        logger.info("split %s: cache complete in %s, skipping", split, args.out_dir)
        return {"split": split, "status": "exists"}
    task.load_dataset(split)
    dataset = task.dataset(split)
    writer = TeacherCacheWriter(args.out_dir, split, dataset, args.topk,
                                split_fingerprint(task, split, dataset, teacher, args.dtype))
    todo = writer.todo()
    logger.info("split %s: %d of %d sentences to compute (top-%d)", split, len(todo), len(dataset), args.topk)
    todo = todo[np.argsort(dataset.num_tokens_vec(todo) if hasattr(dataset, "num_tokens_vec") else dataset.src_sizes[todo], kind="stable")]
    batches = data_utils.batch_by_size(todo, dataset.num_tokens, max_tokens=args.max_tokens,
                                       max_sentences=args.batch_size)
    pad = task.target_dictionary.pad()
    start, ntok, pending = time.time(), 0, []
    bar = tqdm(batches, desc=f"cache {split}", unit="batch", disable=args.no_progress, file=sys.stderr)
    for step, batch in enumerate(bar, 1):
        sample = dataset.collater([dataset[int(i)] for i in batch])
        sample = _to_device(sample, args.device)
        lp = teacher.log_probs(sample["net_input"])  # B x T x V, fp32
        values, ids = lp.topk(args.topk, dim=-1)  # B x T x K
        target = sample["target"]
        gold = lp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # B x T
        lengths = target.ne(pad).sum(-1).tolist()
        writer.write(sample["id"].tolist(), lengths, ids.int(), values.exp().half(), gold)
        pending += sample["id"].tolist()
        if step % args.flush_every == 0 or step == len(batches):
            writer.mark_done(pending)
            pending = []
        ntok += sum(lengths)
        bar.set_postfix(tok_s=f"{ntok / max(time.time() - start, 1e-9):.0f}")
    meta = writer.finish()
    return {"split": split, "status": "written", "sentences": len(todo), "tokens": ntok,
            "seconds": round(time.time() - start, 2), "meta": meta}


def _to_device(sample, device):
    from fairseq import utils

    return utils.move_to_cuda(sample) if device.startswith("cuda") else sample


def main(args) -> list:
    import fairseq_kd  # noqa: F401  (allowlist + registration)
    from fairseq_kd import guard

    guard.check_paths({"data": args.data.split(":"), "--teacher-path": args.teacher_path.split(":"),
                       "--teacher-data": args.teacher_data}, {"--out-dir": args.out_dir}, "fairseq-kd-cache")
    with guard.DirLock(args.out_dir, "fairseq-kd-cache"):  # one writer per cache directory
        task = build_task(args)
        teacher = task.load_teacher()
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
        teacher.place_like(torch.empty(0, device=args.device, dtype=dtype))
        return [cache_split(task, teacher, split, args) for split in (args.split or ["train"])]


def cli_main(argv=None):
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO, stream=sys.stderr)
    args = get_parser().parse_args(argv)
    from fairseq_kd.errors import KDInputError

    try:
        summary = main(args)
    except KDInputError as err:
        print(f"fairseq-kd-cache: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    cli_main()
