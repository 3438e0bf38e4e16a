"""fairseq-kd-study: run a grid of KD students (train, decode, score) into results.csv.

    fairseq-kd-study --data exp/m30k/bin --source-lang de --target-lang en \\
        --test-ref exp/m30k/raw/test.en --teacher exp/teacher/checkpoint_best.pt \\
        --out-dir exp/study --methods none word seq --noise 0 0.1 0.2 \\
        --archs transformer_relu_3m --decodings beam greedy --seeds 1 2 3 --max-update 3000

A killed run is resumed by running the same command: finished cells (by their grid
coordinates) are skipped. Then ``fairseq-kd-report exp/study/results.csv``.
"""
import argparse
import json
import logging
import sys

from fairseq_kd.errors import KDInputError


def _method_args(items):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise KDInputError(f"--method-args {item!r}: write METHOD='--flag value ...'")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def get_parser() -> argparse.ArgumentParser:
    from fairseq_kd import study as S

    p = argparse.ArgumentParser(prog="fairseq-kd-study", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("corpus and teacher")
    g.add_argument("--data", required=True, help="binarized corpus dir (fairseq-preprocess --joined-dictionary)")
    g.add_argument("--source-lang", "-s", required=True, help="source language suffix")
    g.add_argument("--target-lang", "-t", required=True, help="target language suffix")
    g.add_argument("--test-ref", required=True, help="raw (detokenized) reference of --gen-subset, line-aligned")
    g.add_argument("--gen-subset", default="test", help="binarized split decoded and scored")
    g.add_argument("--extra-test", nargs="+", default=[], metavar="SPLIT=REF",
                   help="more test sets decoded like --gen-subset: binarized split and its raw reference; rows in "
                        "OUT_DIR/results.SPLIT.csv")
    g.add_argument("--teacher", default=None, help="teacher checkpoint (needed by word / seq / hybrid)")
    g.add_argument("--teachers", nargs="+", default=[], metavar="[NAME=]CKPT",
                   help="several teacher checkpoints as a grid axis (each KD cell once per teacher; e.g. a large "
                        "teacher and one of the student's size); NAME is its coordinate in the rows (default: the "
                        "path's last two parts; needed when two paths end alike, as RUN/checkpoints/"
                        "checkpoint_best.pt do). A resume knows each teacher by content")
    g.add_argument("--spm-model", default=None, help="sentencepiece model (fairseq-kd-distill's detokenized text)")
    g.add_argument("--out-dir", required=True, help="results.csv, curves.csv, cells/, distilled/ go here")

    g = p.add_argument_group("grid")
    g.add_argument("--methods", nargs="+", default=["none"], metavar="METHOD",
                   help="KD methods: none (CE), word (word_kd), seq (CE on fairseq-kd-distill output), "
                        "seq_online (seq_kd criterion), hybrid (hybrid_kd on the distilled data), hybrid_online, "
                        "onpolicy (onpolicy_kd), word_tnoisy / seq_tnoisy (under --noise the teacher reads the student's "
                        "noisy source: online, or translating --noise-copies fixed noisy copies); a variant BASE.LABEL (e.g. word.rkl) is a method of its own "
                        "that gets BASE's --method-args, then its own")
    g.add_argument("--noise", nargs="+", type=float, default=[0.0], help="noise levels (rate of each --noise-ops)")
    g.add_argument("--archs", nargs="+", default=["transformer"], help="student architectures (e.g. ladder names)")
    g.add_argument("--decodings", nargs="+", default=["beam"], choices=list(S.DECODINGS),
                   help="how the teacher builds distilled targets (seq / seq_online / hybrid only)")
    g.add_argument("--lrs", nargs="+", type=float, default=[5e-4], help="peak learning rates")
    g.add_argument("--seeds", nargs="+", type=int, default=[1], help="training seeds")

    g = p.add_argument_group("noise (on the fly, student source; the teacher reads clean input but in *_tnoisy)")
    g.add_argument("--noise-ops", nargs="+", default=list(S.NOISE_OPS), choices=list(S.NOISE_OPS),
                   help="operations that get the noise level as their rate")
    g.add_argument("--noise-side", default="source", choices=["source", "target", "both"], help="noised side")
    g.add_argument("--noise-swap-window", type=int, default=3, help="swap window")
    g.add_argument("--noise-copies", type=int, default=8,
                   help="seq_tnoisy: noisy copies of the training source the teacher translates (copy c is the "
                        "on-the-fly noise of epoch c, seed 1)")

    g = p.add_argument_group("training")
    g.add_argument("--max-update", type=int, default=2000, help="updates per student")
    g.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch (training and decoding)")
    g.add_argument("--warmup-updates", type=int, default=400, help="inverse_sqrt warmup")
    g.add_argument("--validate-interval-updates", type=int, default=500,
                   help="validation (loss + greedy BLEU for the updates curve) every N updates")
    g.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing of the gold term")
    g.add_argument("--patience", type=int, default=0,
                   help="train each student until the validation metric has not improved for this many validations "
                        "(every --validate-interval-updates; --max-update is then the cap) and decode its best "
                        "checkpoint; 0: fixed budget, last checkpoint")
    g.add_argument("--best-metric", default="bleu", choices=["bleu", "loss"],
                   help="validation metric of --patience and the best checkpoint (bleu: greedy valid BLEU)")
    g.add_argument("--cache-topk", type=int, default=0,
                   help="methods of --cache-methods read the teacher's top-k from a cache built once "
                        "(fairseq-kd-cache) instead of running the teacher every step; 0: online teacher")
    g.add_argument("--cache-methods", nargs="+", default=["word"], metavar="METHOD",
                   help="methods that read the cache with --cache-topk (clean-data cells only)")
    g.add_argument("--student-init", default="", metavar="CKPT",
                   help="every student starts from this checkpoint's weights (fairseq's --finetune-from-model: "
                        "new optimizer, schedule and data order; e.g. on-policy KD from a converged CE student); "
                        "the architecture flags must describe the same model")
    g.add_argument("--train-args", default="", help="extra fairseq-train flags, e.g. '--dropout 0.3'")
    g.add_argument("--method-args", nargs="*", default=[], metavar="METHOD=FLAGS",
                   help="extra fairseq-train flags for one method, e.g. word='--kd-alpha 0.7'")

    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto", choices=list(S.DEVICES),
                   help="where training, decoding and distillation run (auto: cuda when torch sees a GPU)")
    g.add_argument("--gpu", action="store_true", help="same as --device cuda (older spelling)")
    prec = g.add_mutually_exclusive_group()
    for name, what in (("fp16", "half precision"), ("bf16", "bfloat16"), ("amp", "automatic mixed precision")):
        prec.add_argument(f"--{name}", dest="precision", action="store_const", const=name,
                          help=f"train and decode in {what} (GPU only)")
    g.add_argument("--nprocs", type=int, default=1,
                   help="data-parallel training processes (on CPU: one process per rank, gloo; each process "
                        "takes --max-tokens per batch)")

    g = p.add_argument_group("decoding and distillation")
    g.add_argument("--beam", type=int, default=5, help="beam for test decoding and beam distillation")
    g.add_argument("--searches", nargs="+", default=["beam"], choices=list(S.SEARCHES),
                   help="test decodings of every student (beam: beam --beam; greedy: beam 1), one row each")
    g.add_argument("--max-len-a", type=float, default=1.2,
                   help="output length limit a * source length + b for test decoding, validation BLEU and "
                        "distillation (as scripts/decode.sh)")
    g.add_argument("--max-len-b", type=int, default=10, help="see --max-len-a")
    g.add_argument("--bpe", default="sentencepiece", help="--remove-bpe value ('none' for word-level data)")
    g.add_argument("--gen-args", default="", help="extra fairseq-generate flags")
    g.add_argument("--distill-args", default="", help="extra fairseq-kd-distill flags")

    g = p.add_argument_group("run")
    g.add_argument("--keep-going", action="store_true", help="continue with other cells when one fails")
    g.add_argument("--dry-run", action="store_true", help="print the cells (JSON) and exit")
    g.add_argument("--in-process", action="store_true",
                   help="call fairseq-train / fairseq-generate / fairseq-kd-distill in this process instead of "
                        "subprocesses (saves their start-up; same logs and results)")
    g.add_argument("--jobs", type=int, default=1,
                   help="cells trained side by side (CPU, subprocesses), each tool with OMP_NUM_THREADS / JOBS "
                        "threads (default: the CPUs / JOBS); the shared inputs (distilled corpus, caches) are "
                        "built first with every thread. Small students finish sooner this way "
                        "(bench/parallel_cells.sh); results.csv ends in grid order as with 1")
    g.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return p


def check_options(args) -> None:
    """Ranges of the training and decoding options, before any cell starts."""
    from fairseq_kd import validate

    for flag, value in (("--max-update", args.max_update), ("--max-tokens", args.max_tokens),
                        ("--validate-interval-updates", args.validate_interval_updates), ("--beam", args.beam),
                        ("--warmup-updates", args.warmup_updates)):  # fairseq's inverse_sqrt divides by it
        validate.positive(flag, value)
    for flag, value in (("--max-len-a", args.max_len_a),
                        ("--max-len-b", args.max_len_b)):
        validate.non_negative(flag, value)
    validate.in_range("--label-smoothing", args.label_smoothing, 0.0, 1.0, hi_open=True)
    validate.non_negative("--patience", args.patience)
    validate.non_negative("--cache-topk", args.cache_topk)
    for lr in args.lrs:
        validate.positive("--lrs", lr)
    validate.positive("--noise-swap-window", args.noise_swap_window)
    validate.positive("--noise-copies", args.noise_copies)
    validate.positive("--jobs", args.jobs)
    if args.jobs > 1 and args.in_process:
        raise KDInputError(f"--jobs {args.jobs} runs each cell's tools as subprocesses: drop --in-process")


def _extra_tests(specs):
    out = []
    for spec in specs:
        split, sep, ref = spec.partition("=")
        if not (sep and split and ref):
            raise KDInputError(f"--extra-test {spec!r}: write SPLIT=REF, e.g. test1=raw/test1.en")
        out.append((split, ref))
    return out


def config_from_args(args):
    from fairseq_kd.study import StudyConfig
    from fairseq_kd.study.teachers import teacher_path

    return StudyConfig(
        data=args.data, out_dir=args.out_dir, test_ref=args.test_ref, source_lang=args.source_lang,
        target_lang=args.target_lang,
        teacher=args.teacher or (teacher_path(args.teachers[0]) if args.teachers else None),
        teachers=args.teachers, spm_model=args.spm_model, gen_subset=args.gen_subset,
        methods=args.methods, noise=args.noise, archs=args.archs, decodings=args.decodings, lrs=args.lrs,
        seeds=args.seeds, noise_ops=args.noise_ops, noise_side=args.noise_side,
        noise_swap_window=args.noise_swap_window, noise_copies=args.noise_copies, max_update=args.max_update,
        max_tokens=args.max_tokens,
        warmup_updates=args.warmup_updates, validate_interval_updates=args.validate_interval_updates,
        label_smoothing=args.label_smoothing, student_init=args.student_init, patience=args.patience, best_metric=args.best_metric,
        cache_topk=args.cache_topk, cache_methods=args.cache_methods, extra_tests=_extra_tests(args.extra_test),
        train_args=args.train_args,
        method_args=_method_args(args.method_args), searches=args.searches, beam=args.beam, max_len_a=args.max_len_a,
        max_len_b=args.max_len_b, bpe=args.bpe, gen_args=args.gen_args,
        distill_args=args.distill_args, device="cuda" if args.gpu else args.device,
        precision=args.precision or "fp32", nprocs=args.nprocs, jobs=args.jobs, keep_going=args.keep_going)


def cli_main(argv=None) -> int:
    from fairseq_kd import study as S

    args = get_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr, force=True)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        check_options(args)
        cfg = config_from_args(args)
        if args.dry_run:
            cfg.validate()
            print(json.dumps([dict(zip(S.KEY_FIELDS, c.key())) for c in S.build_grid(cfg)], indent=1))
            return 0
        from fairseq_kd import guard
        from fairseq_kd.study.teachers import teacher_path

        guard.check_paths({"--data": args.data, "--test-ref": args.test_ref, "--teacher": args.teacher,
                           "--teachers": [p for t in args.teachers for p in teacher_path(t).split(":")],
                           "--spm-model": args.spm_model,
                           "--extra-test": [ref for _, ref in cfg.extra_tests]},
                          {"--out-dir": args.out_dir})
        runner = S.run_inprocess if args.in_process else S.run_logged
        with guard.DirLock(args.out_dir, "fairseq-kd-study"):  # a second study here would share cells and logs
            summary = S.Study(cfg, runner=runner).run(progress=not args.quiet)
    except KDInputError as e:
        print(f"fairseq-kd-study: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"fairseq-kd-study: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(cli_main())
