"""``fairseq-kd-cache``: run the teacher over binarized splits once, store top-k distributions.

    fairseq-kd-cache DATA --teacher-path ckpt.pt[:ckpt2.pt] --out-dir CACHE --split train --topk 8

Then train with ``--task kd_translation --teacher-cache CACHE --criterion word_kd``.
Killed at any point, the same command resumes; a finished split is skipped.

Split across N workers (processes, GPUs or machines sharing CACHE's filesystem): run
``--part I/N`` for I = 0..N-1 (each computes its slice of the length-sorted batch plan into
CACHE/SPLIT/parts/I-of-N), then ``--merge``: it checks that every part is there, finished,
made from the same teacher, data and settings, and that the parts cover every sentence
exactly once, then publishes the cache, byte-identical to a single worker's.
"""
import argparse
import json
import logging
import os
import shutil
import sys
import time

import numpy as np
import torch

from fairseq_kd import parts

from fairseq_kd.errors import KDInputError

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
    g.add_argument("--overwrite", action="store_true",
                   help="delete each split's finished or unfinished cache first and rebuild it (a truncated or "
                        "stale cache, other settings)")
    g = p.add_argument_group("compute")
    g.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch")
    g.add_argument("--batch-size", type=int, default=None, help="sentences per batch")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    g.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="teacher compute dtype")
    g.add_argument("--flush-every", type=int, default=50, help="batches between flushes (resume granularity)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("workers")
    parts.add_arguments(g)
    return p


def build_task(args):
    from fairseq_kd.tasks._options import KDTranslationConfig
    from fairseq_kd.tasks.kd_translation import KDTranslationTask

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


def plan_batches(dataset, args) -> list:
    """Every sentence of the split in length-sorted batches: the same plan in every worker."""
    from fairseq.data import data_utils

    order = np.arange(len(dataset))
    sizes = np.asarray([dataset.num_tokens(i) for i in order] if not hasattr(dataset, "num_tokens_vec")
                       else dataset.num_tokens_vec(order))
    if len(sizes) and sizes.max() > args.max_tokens:
        raise KDInputError(f"--max-tokens {args.max_tokens} is below the longest sentence of the split "
                           f"({int(sizes.max())} tokens, sentence {int(sizes.argmax())}): pass --max-tokens "
                           f"{int(sizes.max())} or more")
    order = order[np.argsort(dataset.num_tokens_vec(order) if hasattr(dataset, "num_tokens_vec")
                             else dataset.src_sizes[order], kind="stable")]
    return data_utils.batch_by_size(order, dataset.num_tokens, max_tokens=args.max_tokens,
                                    max_sentences=args.batch_size)


def parts_root(args, split: str) -> str:
    return os.path.join(args.out_dir, split)


def part_fingerprint(fp: dict, args) -> dict:
    """A part's inputs: the split's fingerprint plus the batch plan (parts must share it)."""
    return {**fp, "k": args.topk, "plan": f"max_tokens={args.max_tokens},batch_size={args.batch_size}"}


def merge_split(task, teacher, split: str, args) -> dict:
    """Check the N parts of a split and publish the merged cache."""
    from fairseq_kd.cache import TeacherCache
    from fairseq_kd.cache_writer import merge_parts, remove_split

    task.load_dataset(split)
    dataset = task.dataset(split)
    if args.overwrite:
        remove_split(args.out_dir, split, parts=False)
    if TeacherCache.exists(args.out_dir, split):
        raise KDInputError(f"--merge: {args.out_dir} already holds a finished {split} cache: nothing to merge "
                           f"(pass --overwrite to replace it with the parts' merge)")
    fp = split_fingerprint(task, split, dataset, teacher, args.dtype)
    found = parts.collect(parts_root(args, split), "fairseq-kd-cache", part_fingerprint(fp, args),
                          command=f"fairseq-kd-cache ... --split {split}")
    start = time.time()
    meta = merge_parts(args.out_dir, split, dataset, args.topk, fp, [m["folder"] for m in found])
    shutil.rmtree(parts_root(args, split))  # published: the parts are no longer needed
    return {"split": split, "status": "merged", "parts": len(found), "sentences": len(dataset),
            "seconds": round(time.time() - start, 2), "meta": meta}


def cache_split(task, teacher, split: str, args) -> dict:
    """Fill (or resume) the cache of one split, or with ``--part`` one worker's slice of it."""
    from tqdm import tqdm

    from fairseq_kd.cache import TeacherCache
    from fairseq_kd.cache_writer import TeacherCacheWriter, remove_split

    if args.overwrite and not args.part:
        remove_split(args.out_dir, split)
    if TeacherCache.exists(args.out_dir, split):
        task.load_dataset(split)
        try:
            cache = TeacherCache.open(args.out_dir, split, task.dataset(split), task, args.teacher_path)  # validates
        except KDInputError as err:  # truncated, stale: the same command cannot fix it, --overwrite can
            if "--overwrite" in str(err):
                raise
            raise KDInputError(f"{err}. To rebuild it, re-run this command with --overwrite") from None
        with open(os.path.join(args.out_dir, f"{split}.meta.json")) as f:
            dtype = json.load(f)["fingerprint"].get("dtype", "fp32")
        if (cache.k, dtype) != (args.topk, args.dtype):  # never report "exists" for other settings
            raise KDInputError(f"{args.out_dir} already holds a finished {split} cache with --topk {cache.k} "
                               f"--dtype {dtype}, not --topk {args.topk} --dtype {args.dtype}: use another "
                               f"--out-dir, or pass --overwrite to rebuild it")
        partial = os.path.join(args.out_dir, f"{split}.partial")
        if os.path.isdir(partial):  # a run killed after publishing (meta.json written), while cleaning up
            shutil.rmtree(partial)
        logger.info("split %s: cache complete in %s, skipping", split, args.out_dir)
        return {"split": split, "status": "exists"}
    task.load_dataset(split)
    dataset = task.dataset(split)
    fp = split_fingerprint(task, split, dataset, teacher, args.dtype)
    folder = parts.part_dir(parts_root(args, split), args.part) if args.part else args.out_dir
    plan = plan_batches(dataset, args)  # before anything is written: --max-tokens against the longest sentence
    writer = TeacherCacheWriter(folder, split, dataset, args.topk, part_fingerprint(fp, args) if args.part else fp)
    mine = plan[args.part.slice(len(plan))] if args.part else plan
    done = writer.done[: writer.n_sent].astype(bool)
    batches = [b for b in mine if not done[b].all()]  # whole batches are marked done together
    todo = [int(i) for b in batches for i in b]
    logger.info("split %s%s: %d of %d sentences to compute (top-%d)", split, f" part {args.part}" if args.part else "",
                len(todo), len(dataset), args.topk)
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
    if args.part:  # a finished part: its manifest (written last) lists what it covers
        for arr in writer.arrays.values():
            arr.flush()
        ids = [int(i) for b in mine for i in b]
        meta = parts.write_manifest(folder, "fairseq-kd-cache", args.part.i, args.part.n,
                                    part_fingerprint(fp, args), ids, split=split)
        status = "part written"
    else:
        meta, status = writer.finish(), "written"
    return {"split": split, "status": status, "sentences": len(todo), "tokens": ntok,
            "seconds": round(time.time() - start, 2), "meta": meta}


def _to_device(sample, device):
    from fairseq import utils

    return utils.move_to_cuda(sample) if device.startswith("cuda") else sample


def check_options(args) -> None:
    """Usage errors before anything loads (--topk against the vocabulary once the task is set up)."""
    from fairseq_kd import validate

    validate.positive("--topk", args.topk)
    validate.positive("--max-tokens", args.max_tokens)
    if args.batch_size is not None:
        validate.positive("--batch-size", args.batch_size)
    validate.positive("--flush-every", args.flush_every)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise KDInputError(f"--device {args.device}: torch sees no GPU here; pass --device cpu")


def check_splits(task, splits, data: str) -> None:
    """Every split to cache is binarized in the data dir (before the teacher loads)."""
    import glob

    folder = data.split(":")[0]
    src, tgt = task.cfg.source_lang, task.cfg.target_lang
    have = sorted({os.path.basename(p).split(".")[0] for p in glob.glob(os.path.join(folder, "*.idx"))})
    for split in splits:
        if not any(os.path.exists(os.path.join(folder, f"{split}.{a}-{b}.{src}.idx")) for a, b in ((src, tgt), (tgt, src))):
            raise KDInputError(f"--split {split}: no binarized {split} split for {src}-{tgt} in {folder} (it holds: "
                               f"{', '.join(have) or 'none'}); pass one of those, or binarize {split} with "
                               f"fairseq-preprocess")


def check_teacher_paths(args) -> None:
    """The paths each teacher checkpoint names (its data dir, its own teachers) are inputs too."""
    from fairseq_kd import guard
    from fairseq_kd.checkpoint_safety import load_checkpoint

    for path in args.teacher_path.split(":"):
        if not os.path.isfile(path):
            continue  # refused (naming it) when the teacher loads
        state = load_checkpoint(path, trust_file=args.trust_checkpoint)
        guard.check_paths(guard.named_by_checkpoint(state, "--teacher-path"), {"--out-dir": args.out_dir})


def main(args) -> list:
    import fairseq_kd  # noqa: F401  (allowlist + registration)
    from fairseq_kd import guard, validate

    guard.check_paths({"data": args.data.split(":"), "--teacher-path": args.teacher_path.split(":"),
                       "--teacher-data": args.teacher_data}, {"--out-dir": args.out_dir})
    if args.part and args.merge:
        raise KDInputError("--part and --merge exclude each other: run the parts first, then --merge once")
    check_options(args)
    check_teacher_paths(args)
    # one writer per directory: the cache directory, or a part's own directory (parts run side by side)
    splits = args.split or ["train"]
    with guard.DirLock(parts.part_dir(args.out_dir, args.part) if args.part else args.out_dir, "fairseq-kd-cache"):
        task = build_task(args)
        check_splits(task, splits, args.data)
        validate.topk_within("--topk", args.topk, len(task.target_dictionary), zero_means_all=False)
        teacher = task.load_teacher()
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
        teacher.place(torch.device(args.device), dtype)
        step = merge_split if args.merge else cache_split
        return [step(task, teacher, split, args) for split in splits]


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
