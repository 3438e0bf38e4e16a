"""fairseq-kd-noise: word deletion / substitution / swap over raw or sentencepiece text.

Two modes:

* parallel files: ``--source A --target B --output-source A2 --output-target B2``;
  ``--side`` says which side(s) get noise, the other is copied verbatim. Misaligned
  inputs are refused before anything is written; outputs are written atomically.
* one stream: ``--input FILE`` (default stdin) ``--output FILE`` (default stdout);
  ``--side source|target`` only names the random stream, so stdin mode reproduces
  that side of the parallel mode exactly.

A summary of realized rates per side goes to stderr; ``--summary-json FILE`` writes it
as JSON (and parallel mode also prints it on stdout).

    fairseq-kd-noise --deletion 0.1 --substitution 0.1 --swap 0.1 --swap-window 3 \\
        --side source --source train.de --target train.en \\
        --output-source noisy/train.de --output-target noisy/train.en
    fairseq-kd-noise --deletion 0.2 --side source < train.spm.de > noisy.spm.de

A third mode writes K noisy copies of a binarized split (``--data-bin``): copy c is the noise
``kd_translation`` applies on the fly in epoch c with the same ``--seed``; the teacher then
translates the noisy source offline (``fairseq-kd-distill --data OUT``, sequence-level KD with a
teacher that reads the student's noisy input); its summary (stdout, and ``--summary-json``) is the
copies' metadata (``noisy_copies.json``); ``--write-vocab`` and the text modes' files are refused:

    fairseq-kd-noise --substitution 0.3 --data-bin exp/m30k/bin -s de -t en --copies 8 \\
        --output-dir exp/m30k/noisy_sub0.3_k8
"""
import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional, Tuple

from fairseq_kd import fileio, guard, noise as N, validate
from fairseq_kd.errors import KDInputError

logger = logging.getLogger("fairseq_kd.cli.noise")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fairseq-kd-noise",
        description="Inject word deletion, substitution and swap noise; deterministic per line.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("noise")
    g.add_argument("--deletion", type=float, default=0.0, help="per-word deletion probability")
    g.add_argument("--substitution", type=float, default=0.0, help="per-word substitution probability")
    g.add_argument("--swap", type=float, default=0.0, help="per-word probability of a swap within the window")
    g.add_argument("--swap-window", type=int, default=3, help="max distance a word may move from its position")
    g.add_argument("--seed", type=int, default=1, help="base seed; line i uses (seed, side, i)")
    g.add_argument("--unit", choices=N.UNITS, default="auto",
                   help="what a whitespace token is: a word, a sentencepiece piece (words start at ▁), "
                        "or subword-nmt BPE (@@ continuations); auto detects")
    g.add_argument("--vocab", default=None,
                   help="substitution vocabulary (word[<TAB>count] per line); default: the input side's own unigram counts")
    g.add_argument("--write-vocab", default=None,
                   help="write the unigram vocabulary used (per side: PATH.source / PATH.target in parallel mode) "
                        "so single lines can be regenerated alone with --vocab")

    io_ = p.add_argument_group("input / output")
    io_.add_argument("--side", choices=N.SIDES, default="source", help="which side gets noise")
    io_.add_argument("--source", default=None, help="parallel mode: source input file")
    io_.add_argument("--target", default=None, help="parallel mode: target input file")
    io_.add_argument("--output-source", default=None, help="parallel mode: source output file")
    io_.add_argument("--output-target", default=None, help="parallel mode: target output file")
    io_.add_argument("-i", "--input", default="-", help="stream mode: input file ('-' = stdin)")
    io_.add_argument("-o", "--output", default="-", help="stream mode: output file ('-' = stdout)")

    b = p.add_argument_group("binarized noisy copies (sequence-level KD with a teacher reading noisy input)")
    b.add_argument("--data-bin", default=None, help="fairseq-preprocess output dir: write noisy copies of --split")
    b.add_argument("--copies", type=int, default=8, help="number of noisy copies (copy c = on-the-fly epoch c)")
    b.add_argument("--output-dir", default=None, help="new data dir: the copies as --split, links to the rest")
    b.add_argument("--split", default="train", help="binarized split to copy")
    b.add_argument("-s", "--source-lang", default=None, help="source language suffix")
    b.add_argument("-t", "--target-lang", default=None, help="target language suffix")

    rep = p.add_argument_group("reporting")
    rep.add_argument("--summary-json", default=None, help="write the realized-rate summary as JSON here")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def signature(cfg: N.NoiseConfig, side: str, unit: str, seed: int, vocab: Optional[str]) -> str:
    """Reproducibility signature in sacrebleu style."""
    from fairseq_kd import __version__

    return (f"del:{cfg.deletion}|sub:{cfg.substitution}|swap:{cfg.swap}|win:{cfg.swap_window}|side:{side}"
            f"|unit:{unit}|seed:{seed}|vocab:{'file' if vocab else 'corpus'}|version:{__version__}")


def noise_lines(lines: List[str], cfg: N.NoiseConfig, seed: int, side: str, unit: str,
                sampler: Optional[N.UnigramSampler], quiet: bool = True) -> Tuple[List[str], N.NoiseStats]:
    """Noise every line (index = line number from 0); returns lines and summed counts."""
    from tqdm import tqdm

    total = N.NoiseStats()
    out = []
    for i, line in enumerate(tqdm(lines, desc=f"noise {side}", disable=quiet, file=sys.stderr)):
        text, stats = N.noise_line(line, cfg, seed, i, side, unit, sampler)
        total.add(stats)
        out.append(text)
    return out, total


def _sampler_for(lines: List[str], unit: str, vocab: Optional[str], cfg: N.NoiseConfig) -> Optional[N.UnigramSampler]:
    if cfg.substitution <= 0 and vocab is None:
        return None
    if vocab:
        return N.read_vocab(vocab, unit)
    return N.UnigramSampler.from_corpus(N.split_words(line.split(), unit) for line in lines)


def run(args) -> Dict:
    """Do the work for parsed ``args``; returns the JSON summary."""
    for flag in ("deletion", "substitution", "swap"):
        validate.probability(f"--{flag}", getattr(args, flag))
    validate.positive("--swap-window", args.swap_window)
    cfg = N.NoiseConfig(args.deletion, args.substitution, args.swap, args.swap_window)
    if args.data_bin is not None:
        return run_binarized(args, cfg)
    if args.vocab:
        fileio.check_file(args.vocab, f"{args.vocab}: vocabulary file not found; pass --vocab with an existing file "
                                      f"or drop it", "vocabulary file")
    parallel = any(x is not None for x in (args.source, args.target, args.output_source, args.output_target))
    vocab_out = None
    if args.write_vocab:
        vocab_out = [args.write_vocab + ".source", args.write_vocab + ".target"] if parallel else args.write_vocab
    guard.check_paths(
        {"--source": args.source, "--target": args.target, "--input": args.input, "--vocab": args.vocab},
        {"--output-source": args.output_source, "--output-target": args.output_target, "--output": args.output,
         "--summary-json": args.summary_json, "--write-vocab": vocab_out})

    if parallel:
        missing = [n for n, v in (("--source", args.source), ("--target", args.target),
                                  ("--output-source", args.output_source), ("--output-target", args.output_target))
                   if v is None]
        if missing:
            raise KDInputError(f"parallel mode needs {', '.join(missing)} too (or use --input/--output for one stream)")
        src, tgt = fileio.read_lines(args.source), fileio.read_lines(args.target)
        if len(src) != len(tgt):
            raise KDInputError(f"misaligned parallel input: {args.source} has {len(src)} lines but "
                               f"{args.target} has {len(tgt)}; fix the corpus so both sides align by line")
        inputs = {"source": (src, args.output_source), "target": (tgt, args.output_target)}
        sides = ["source", "target"] if args.side == "both" else [args.side]
    else:
        if args.side == "both":
            raise KDInputError("--side both needs parallel mode (--source/--target/--output-source/--output-target)")
        lines = fileio.read_lines(args.input)
        inputs = {args.side: (lines, args.output)}
        sides = [args.side]

    summary = {"config": {**cfg.__dict__, "seed": args.seed, "side": args.side}, "sides": {}}
    results = {}
    for side, (lines, out_path) in inputs.items():
        if side not in sides:
            results[side] = lines  # copied verbatim
            continue
        unit = args.unit if args.unit != "auto" else N.detect_unit(lines)
        sampler = _sampler_for(lines, unit, args.vocab, cfg)
        if args.write_vocab and sampler is not None:
            N.write_vocab(sampler, args.write_vocab + (f".{side}" if parallel else ""))
        noised, stats = noise_lines(lines, cfg, args.seed, side, unit, sampler, quiet=args.quiet)
        results[side] = noised
        summary["sides"][side] = {**stats.to_dict(), "unit": unit,
                                  "signature": signature(cfg, side, unit, args.seed, args.vocab)}

    for side, (lines, out_path) in inputs.items():  # write only after everything succeeded
        if out_path == "-":
            sys.stdout.writelines(line + "\n" for line in results[side])
            sys.stdout.flush()
        else:
            fileio.atomic_write_lines(out_path, results[side])

    for side, s in summary["sides"].items():
        r = s["rates"]
        print(f"[{side}] lines={s['lines']} words={s['words']} deletion={r['deletion']:.4f} "
              f"substitution={r['substitution']:.4f} swap={r['swap']:.4f} (displaced {r['displaced']:.4f}) "
              f"empty_input={s['empty_input_lines']} | {s['signature']}", file=sys.stderr)
    if args.summary_json:
        fileio.atomic_write_json(args.summary_json, summary, indent=2, sort_keys=False)
    if parallel:
        print(json.dumps(summary))
    return summary


def run_binarized(args, cfg: N.NoiseConfig) -> Dict:
    """``--data-bin``: K noisy copies of a binarized split (``fairseq_kd.data.noisy_copies``)."""
    from fairseq_kd.data.noisy_copies import CopiesConfig, write_noisy_copies
    from fairseq_kd.distill.data import infer_langs

    if args.output_dir is None:
        raise KDInputError("--data-bin needs --output-dir (the new data dir)")
    if args.side != "source" or args.vocab or args.unit != "auto":
        raise KDInputError("--data-bin noises the source with the training noise (its own dictionary's words, "
                           "unigram substitution from the split): drop --side/--vocab/--unit")
    if args.write_vocab:  # was accepted and ignored
        raise KDInputError("--data-bin draws substitutes from the split's own token counts, not from a vocabulary "
                           "file, and writes none: drop --write-vocab (the copies are rebuilt from --data-bin and "
                           "--seed alone)")
    text_io = [flag for flag, value, default in (
        ("--source", args.source, None), ("--target", args.target, None), ("--output-source", args.output_source, None),
        ("--output-target", args.output_target, None), ("--input", args.input, "-"), ("--output", args.output, "-"))
        if value != default]
    if text_io:  # was accepted and ignored
        raise KDInputError(f"--data-bin writes binarized copies into --output-dir and reads no text: drop "
                           f"{', '.join(text_io)}")
    validate.positive("--copies", args.copies)
    guard.check_paths({"--data-bin": args.data_bin}, {"--output-dir": args.output_dir,
                                                      "--summary-json": args.summary_json})
    if not os.path.isdir(args.data_bin):
        raise KDInputError(f"--data-bin {args.data_bin}: not a directory; pass a fairseq-preprocess output dir")
    src, tgt = infer_langs(args.data_bin, args.split, args.source_lang, args.target_lang)
    meta = write_noisy_copies(args.data_bin, src, tgt, args.output_dir,
                              CopiesConfig(cfg, copies=args.copies, seed=args.seed, split=args.split),
                              progress=not args.quiet)
    if args.summary_json:  # this mode's summary: what the copies were made from (noisy_copies.json)
        fileio.atomic_write_json(args.summary_json, meta, indent=2, sort_keys=False)
    print(json.dumps(meta))
    return meta


def cli_main(argv=None) -> int:
    # importing fairseq leaves the root logger at DEBUG (fairseq/tasks/frm_text_to_speech.py)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    args = get_parser().parse_args(argv)
    try:
        run(args)
    except KDInputError as e:
        print(f"fairseq-kd-noise: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
