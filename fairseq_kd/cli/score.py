"""fairseq-kd-score: sacrebleu BLEU, chrF and tokenized BLEU as JSON, with signatures.

    fairseq-kd-score -r test.en -i hyp.en            # JSON on stdout
    fairseq-kd-score -r test.en < hyp.en --format text
"""
import argparse
import json
import logging
import sys

from fairseq_kd import fileio, guard, scoring
from fairseq_kd.errors import KDInputError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairseq-kd-score", description="Score hypotheses with sacrebleu.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io_ = p.add_argument_group("input / output")
    io_.add_argument("-r", "--refs", nargs="+", required=True, help="reference file(s), aligned with the hypotheses")
    io_.add_argument("-i", "--input", default="-", help="hypothesis file ('-' = stdin)")
    io_.add_argument("--format", choices=("json", "text"), default="json", help="output format on stdout")
    io_.add_argument("-o", "--output", default=None, help="also write the JSON here")
    m = p.add_argument_group("metrics")
    m.add_argument("--metrics", nargs="+", choices=scoring.METRICS, default=list(scoring.METRICS),
                   help="which metrics to compute")
    m.add_argument("--tokenize", default="13a", help="sacrebleu tokenizer for BLEU (13a, intl, zh, char, none, ...)")
    m.add_argument("--tok-bleu-tokenize", default="none",
                   help="tokenizer for tok_bleu: 'none' = whitespace tokens as given (multi-bleu.perl on "
                        "Moses-tokenized files)")
    m.add_argument("-lc", "--lowercase", action="store_true", help="case-insensitive scores")
    return p


def cli_main(argv=None) -> int:
    # importing fairseq leaves the root logger at DEBUG (fairseq/tasks/frm_text_to_speech.py)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    args = get_parser().parse_args(argv)
    cfg = scoring.ScoreConfig(args.tokenize, args.lowercase, args.tok_bleu_tokenize, tuple(args.metrics))
    try:
        guard.check_paths({"--input": args.input, "--refs": args.refs}, {"--output": args.output})
        if args.input == "-":
            hyps = fileio.read_lines("-")
            refs = [scoring.read_lines(p) for p in args.refs]
            scoring.check_aligned(hyps, refs, "<stdin>", args.refs)
            result = {**scoring.score_lines(hyps, refs, cfg), "hyp": "<stdin>", "refs": list(args.refs)}
        else:
            result = scoring.score_files(args.input, args.refs, cfg)
    except KDInputError as e:
        print(f"fairseq-kd-score: error: {e}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(result, indent=1))
    else:
        for name in cfg.metrics:
            print(f"{name}: {result[name]['verbose']} | {result[name]['signature']}")
    if args.output:
        try:
            fileio.atomic_write_json(args.output, result, sort_keys=False)
        except KDInputError as e:  # a full or read-only disk
            print(f"fairseq-kd-score: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
