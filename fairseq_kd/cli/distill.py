"""fairseq-kd-distill: a teacher (or ensemble) translates a split into a distilled corpus.

    fairseq-kd-distill --data data-bin --split train --teacher teacher.pt --output-dir distilled \
        --decoding beam --beam 5 [--nbest 5 --select sentence_bleu] [--backend ctranslate2]

    fairseq-kd-distill --data student-bin --split train --teacher-ct2 opus-mt-ct2 --spm-model spm.model -o distilled

Writes ``OUT/{split}.{src,tgt}`` (line i = source line i; sentencepiece pieces, plus
``{split}.detok.*`` with ``--spm-model``), ``OUT/bin/`` (binarized with --data's
dictionaries, for fairseq-train) and ``OUT/summary.json`` (also printed on stdout). With
``--filter`` the dropped pairs are left out and ``OUT/{split}.ids`` lists the kept line numbers.
Interrupted runs resume from ``OUT/shards`` and produce byte-identical files.

Parallel workers (any machines sharing OUT; files byte-identical to one worker's):

    fairseq-kd-distill ... -o OUT --part 0/2 &  fairseq-kd-distill ... -o OUT --part 1/2 &  wait
    fairseq-kd-distill ... -o OUT --merge
"""
import argparse
import json
import logging
import sys

from fairseq_kd.errors import KDInputError, KDRunError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairseq-kd-distill", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("input")
    g.add_argument("--data", required=True, help="binarized data dir (fairseq-preprocess with the teacher's dicts; "
                                                  "with --teacher-ct2 the student's)")
    g.add_argument("--split", default="train", help="split to distil")
    g.add_argument("--source-lang", "-s", default=None, help="source language (inferred from the files if omitted)")
    g.add_argument("--target-lang", "-t", default=None, help="target language (inferred from the files if omitted)")
    g = p.add_argument_group("teacher")
    g.add_argument("--teacher", "--path", dest="teacher", default=None,
                   help="teacher checkpoint, or several joined by ':' (ensemble, probabilities averaged)")
    g.add_argument("--teacher-ct2", default=None, metavar="DIR",
                   help="instead of --teacher: any CTranslate2 translation model (OPUS-MT/Marian, NLLB, M2M100, ...) "
                        "with its own tokenizer; its text is re-encoded with --spm-model into --data's dictionaries")
    g.add_argument("--teacher-spm", nargs="+", default=[], metavar="MODEL",
                   help="--teacher-ct2's sentencepiece model (both sides) or SRC TGT models; default: "
                        "source.spm/target.spm or sentencepiece.bpe.model in DIR")
    g.add_argument("--teacher-source-prefix", default=None, help="--teacher-ct2: token before the source (NLLB: eng_Latn)")
    g.add_argument("--teacher-target-prefix", default=None,
                   help="--teacher-ct2: forced first target token, dropped from the output (NLLB: deu_Latn, M2M100: __de__)")
    g.add_argument("--source-text", default=None,
                   help="--teacher-ct2: raw source text of the split (default: --data's source decoded by --spm-model)")
    g.add_argument("--teacher-data", default=None, help="dir of the teacher's dict.*.txt if not --data")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="fully unpickle the teacher checkpoint(s) (trusted legacy files only)")
    g = p.add_argument_group("decoding")
    g.add_argument("--decoding", choices=["beam", "greedy", "sampling", "teacher_forcing"], default="beam",
                   help="beam search, greedy, sampling, or teacher forcing (argmax given the gold prefix)")
    g.add_argument("--beam", type=int, default=5, help="beam size (with --decoding sampling: samples drawn, the best-scoring kept; CTranslate2: 1 only)")
    g.add_argument("--nbest", type=int, default=1, help="hypotheses kept per sentence for --select")
    g.add_argument("--select", choices=["top", "sentence_bleu", "chrf"], default="top",
                   help="seq-inter (Kim & Rush 2016): keep the n-best hypothesis closest to the reference")
    g.add_argument("--lenpen", type=float, default=1.0, help="length penalty")
    g.add_argument("--max-len-a", type=float, default=1.2, help="max length = a * source length + b")
    g.add_argument("--max-len-b", type=int, default=10, help="max length = a * source length + b")
    g.add_argument("--sampling-topk", type=int, default=-1, help="sample from the k most likely tokens")
    g.add_argument("--sampling-topp", type=float, default=-1.0, help="nucleus sampling mass")
    g.add_argument("--temperature", type=float, default=1.0, help="divides the teacher's logits (sampling; with the fairseq backend also beam and greedy)")
    g.add_argument("--seed", type=int, default=1, help="random seed (sampling; shard k uses seed + k)")
    g = p.add_argument_group("backend and speed")
    g.add_argument("--backend", choices=["fairseq", "ctranslate2"], default="fairseq",
                   help="fairseq SequenceGenerator, or CTranslate2 (converted once, cached next to the checkpoint)")
    g.add_argument("--ct2-compute-type", default="auto",
                   help="CTranslate2 compute type; auto = int8 on CPU, float16 on GPU")
    g.add_argument("--max-tokens", type=int, default=6000, help="max source tokens per batch")
    g.add_argument("--batch-size", type=int, default=256, help="max sentences per batch")
    g.add_argument("--threads", type=int, default=0, help="CPU threads (0 = library default)")
    g.add_argument("--cpu", action="store_true", help="decode on CPU even if a GPU is present")
    g.add_argument("--fp16", action="store_true", help="fairseq backend: half precision on GPU")
    g.add_argument("--bf16", action="store_true", help="fairseq backend: bfloat16 on GPU (excludes --fp16)")
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", "-o", required=True, help="where text, bin/, shards/ and summary.json go")
    g.add_argument("--spm-model", default=None, help="sentencepiece model: write detokenized text, score on it")
    g.add_argument("--spm-model-tgt", default=None, help="target-side sentencepiece model if separate")
    g.add_argument("--copy-splits", default="", help="comma-separated splits (e.g. valid,test) copied into bin/")
    g.add_argument("--shard-size", type=int, default=2000, help="sentences per resumable shard")
    g.add_argument("--overwrite", action="store_true", help="discard finished shards and start over")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--filter", default="", metavar="SPEC",
                   help="drop distilled pairs, comma-separated: empty (empty teacher output), copy (output = source), "
                        "ratio=R (token length ratio > R), score=P (lowest P%% of teacher scores); counts in summary.json")
    g.add_argument("--max-failed-fraction", type=float, default=0.01,
                   help="sentences the teacher fails on (e.g. NaN) get their gold target, counted by cause in the "
                        "summary; the run fails (nothing published) when more than this fraction of the split fails")
    g = p.add_argument_group("parallel workers (blocks of shards; OUT/parts/I-of-N)")
    from fairseq_kd.parts import add_arguments

    add_arguments(g)
    return p


def check_options(args) -> None:
    """Ranges, before anything loads (--sampling-topk is checked against the vocabulary in ``run``)."""
    from fairseq_kd import validate

    for flag, value in (("--beam", args.beam), ("--nbest", args.nbest), ("--max-tokens", args.max_tokens),
                        ("--batch-size", args.batch_size), ("--shard-size", args.shard_size),
                        ("--temperature", args.temperature)):
        validate.positive(flag, value)
    for flag, value in (("--max-len-a", args.max_len_a), ("--max-len-b", args.max_len_b), ("--threads", args.threads)):
        validate.non_negative(flag, value)
    if args.sampling_topk != -1 and args.sampling_topk < 1:
        raise KDInputError(f"--sampling-topk {args.sampling_topk}: pass k >= 1, or -1 for no top-k restriction")
    if args.sampling_topp != -1.0:
        validate.probability("--sampling-topp", args.sampling_topp, open_low=True)
    validate.probability("--max-failed-fraction", args.max_failed_fraction)


def config_from_args(args):
    from fairseq_kd.distill.decoding import DecodingConfig
    from fairseq_kd.distill.run import DistillConfig

    check_options(args)
    dcfg = DecodingConfig(decoding=args.decoding, beam=args.beam, nbest=args.nbest, lenpen=args.lenpen,
                          max_len_a=args.max_len_a, max_len_b=args.max_len_b, sampling_topk=args.sampling_topk,
                          sampling_topp=args.sampling_topp, temperature=args.temperature)
    if args.fp16 and args.bf16:
        raise KDInputError("--fp16 and --bf16 exclude each other: pass one of them")
    if args.part is not None and args.merge:
        raise KDInputError("--part and --merge exclude each other: run the N parts, then merge them")
    if (args.teacher is None) == (args.teacher_ct2 is None):
        raise KDInputError("pass one teacher: --teacher CHECKPOINT (fairseq) or --teacher-ct2 DIR (CTranslate2)")
    if args.teacher_ct2 is None and (args.teacher_spm or args.teacher_source_prefix or args.teacher_target_prefix
                                     or args.source_text):
        raise KDInputError("--teacher-spm, --teacher-*-prefix and --source-text are for --teacher-ct2")
    from fairseq_kd.distill.filters import parse_filters

    parse_filters(args.filter)  # a bad spec is refused before anything loads
    if args.select != "top" and dcfg.nbest < 2:
        raise KDInputError(f"--select {args.select} chooses among n-best hypotheses: pass --nbest N (N >= 2, <= --beam)")
    from fairseq_kd.distill.publish import check_copy_splits

    copy_splits = [s for s in args.copy_splits.split(",") if s]
    check_copy_splits(args.split, copy_splits)  # refused before anything loads, not after the decode
    return DistillConfig(
        data=args.data, teacher_path=args.teacher, output_dir=args.output_dir, split=args.split,
        source_lang=args.source_lang, target_lang=args.target_lang, teacher_data=args.teacher_data,
        decoding=dcfg, select=args.select, backend=args.backend, ct2_compute_type=args.ct2_compute_type,
        max_tokens=args.max_tokens, batch_size=args.batch_size, shard_size=args.shard_size, seed=args.seed,
        spm_model=args.spm_model, spm_model_tgt=args.spm_model_tgt, threads=args.threads, cpu=args.cpu,
        fp16=args.fp16, bf16=args.bf16, copy_splits=copy_splits,
        trust_checkpoint=args.trust_checkpoint, overwrite=args.overwrite, progress=not args.no_progress,
        max_failed_fraction=args.max_failed_fraction, part=str(args.part) if args.part is not None else None,
        merge=args.merge, teacher_ct2=args.teacher_ct2, teacher_spm=list(args.teacher_spm),
        teacher_source_prefix=args.teacher_source_prefix, teacher_target_prefix=args.teacher_target_prefix,
        source_text=args.source_text, filters=args.filter)


def main(argv=None) -> dict:
    import fairseq_kd  # noqa: F401  (checkpoint allowlist, registrations)
    from fairseq_kd.distill.run import distill

    from fairseq_kd import guard

    args = get_parser().parse_args(argv)
    cfg = config_from_args(args)
    if cfg.teacher_ct2:
        from fairseq_kd.distill.ct2_teacher import check_options

        check_options(cfg)
    elif cfg.backend == "ctranslate2":
        from fairseq_kd.distill.ct2 import check_options

        check_options(cfg)
    guard.check_paths({"--data": args.data, "--teacher": args.teacher.split(":") if args.teacher else None,
                       "--teacher-data": args.teacher_data, "--teacher-ct2": args.teacher_ct2,
                       "--teacher-spm": list(args.teacher_spm), "--source-text": args.source_text,
                       "--spm-model": args.spm_model, "--spm-model-tgt": args.spm_model_tgt},
                      {"--output-dir": args.output_dir})
    lock_dir = args.output_dir  # one run per output directory; parallel parts each lock their own
    if args.part is not None:
        from fairseq_kd.parts import part_dir

        lock_dir = part_dir(args.output_dir, args.part)
    with guard.DirLock(lock_dir, "fairseq-kd-distill"):
        return distill(cfg)


def cli_main(argv=None) -> None:
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.INFO, stream=sys.stderr)
    try:
        summary = main(argv)
    except KDInputError as err:
        print(f"fairseq-kd-distill: error: {err}", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:  # bad flag combinations caught by the configs
        print(f"fairseq-kd-distill: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KDRunError as err:  # e.g. more sentences failed than --max-failed-fraction allows
        print(f"fairseq-kd-distill: error: {err}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary, indent=1, sort_keys=True))


if __name__ == "__main__":
    cli_main()
