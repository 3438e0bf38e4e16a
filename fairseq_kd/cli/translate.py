"""fairseq-kd-translate: raw text in, detokenized translations out, with a CTranslate2 export.

    echo "Ein Hund läuft." | fairseq-kd-translate exp/student/ct2
    fairseq-kd-translate exp/student/ct2 -i test.de -o test.hyp.en --beam 5 --threads 2

MODEL_DIR is a ``fairseq-kd-export`` directory: its sentencepiece model encodes every input
line into pieces and decodes the output pieces back to text (``--spm-model`` overrides it).
Lines are read in chunks (``--chunk-lines``), length-sorted into batches of at most
``--max-tokens`` source tokens and decoded with fairseq's search rules (beam, length penalty,
max length ``a * len + b``, each output identical to translating the line alone); the output
has one line per input line, in input order (an empty line gives an empty line). Output files
are written atomically; a progress bar runs when the input is a file.
"""
import argparse
import itertools
import json
import logging
import os
import sys
import time
from typing import Iterable, Iterator, List, Optional

from fairseq_kd.errors import KDInputError

logger = logging.getLogger("fairseq_kd.cli.translate")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairseq-kd-translate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("input / output")
    g.add_argument("model_dir", help="CTranslate2 model directory written by fairseq-kd-export")
    g.add_argument("-i", "--input", default="-", help="raw text file, one sentence per line ('-' = stdin)")
    g.add_argument("-o", "--output", default="-", help="translations, one per line ('-' = stdout)")
    g.add_argument("--spm-model", default=None, help="source sentencepiece model (default: the export's)")
    g.add_argument("--spm-model-tgt", default=None, help="target sentencepiece model (default: the export's)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--summary", action="store_true", help="print a JSON summary (sentences, seconds) on stderr")
    g = p.add_argument_group("search (fairseq-generate's flags)")
    g.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy)")
    g.add_argument("--lenpen", type=float, default=1.0, help="length penalty: score / len^lenpen (len with EOS)")
    g.add_argument("--max-len-a", type=float, default=1.2, help="max length = a * source length + b")
    g.add_argument("--max-len-b", type=int, default=10, help="max length = a * source length + b")
    g.add_argument("--min-len", type=int, default=1, help="minimum output length (above 1: greedy search only)")
    g = p.add_argument_group("speed")
    g.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="where to run")
    g.add_argument("--compute-type", default="default",
                   help="CTranslate2 compute type (default = the export's stored type; int8, float32, ...)")
    g.add_argument("--threads", type=int, default=0, help="CPU threads (0 = CTranslate2's default)")
    g.add_argument("--max-tokens", type=int, default=4000, help="max source tokens per batch")
    g.add_argument("--chunk-lines", type=int, default=5000, help="lines read, sorted and decoded at a time")
    return p


class Pieces:
    """Raw text <-> sentencepiece pieces."""

    def __init__(self, model_dir: str, src: Optional[str], tgt: Optional[str]):
        import sentencepiece as spm

        from fairseq_kd.export.convert import read_meta

        meta = read_meta(model_dir).get("spm") or {}
        src = src or (os.path.join(model_dir, meta["source"]) if meta.get("source") else None)
        tgt = tgt or (os.path.join(model_dir, meta["target"]) if meta.get("target") else None) or src
        if not src:
            raise KDInputError(f"{model_dir} holds no sentencepiece model: pass --spm-model, or re-export with "
                               f"fairseq-kd-export --spm-model SPM")
        from fairseq_kd import fileio

        for path in (src, tgt):
            fileio.check_file(path, f"sentencepiece model not found: {path} (fix --spm-model)", "sentencepiece model")
        self.src = _load_spm(src)
        self.tgt = self.src if tgt == src else _load_spm(tgt)

    def encode(self, line: str) -> List[str]:
        return self.src.encode(line, out_type=str)

    def decode(self, pieces: List[str]) -> str:
        return self.tgt.decode(pieces)


def _load_spm(path: str):
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=path)
    except (RuntimeError, OSError) as err:
        raise KDInputError(f"{path} is not a sentencepiece model ({str(err).strip()[:120]}): pass the .model "
                           f"file spm_train wrote (fix --spm-model)") from None


def load_translator(model_dir: str, device: str, compute_type: str, threads: int):
    import ctranslate2

    if not os.path.isfile(os.path.join(model_dir, "model.bin")):
        raise KDInputError(f"{model_dir} is not a CTranslate2 model directory (no model.bin): "
                           f"create it with fairseq-kd-export CKPT {model_dir}")
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise KDInputError("--device cuda: CTranslate2 sees no GPU here; pass --device cpu")
    supported = sorted(ctranslate2.get_supported_compute_types(device))
    if compute_type not in ("default", "auto") and compute_type not in supported:
        raise KDInputError(f"--compute-type {compute_type} is not supported on {device} here: choose one of "
                           f"{', '.join(supported)} (or default)")
    return ctranslate2.Translator(model_dir, device=device, compute_type=compute_type,
                                  inter_threads=1, intra_threads=max(threads, 0))


def translate_lines(lines: Iterable[str], decoder, pieces: Pieces, chunk_lines: int,
                    max_source_tokens: Optional[int] = None) -> Iterator[str]:
    """Detokenized translations of ``lines``, in order (empty in, empty out). A line longer than
    the model's source positions (``max_source_tokens`` pieces, EOS excluded) is cut to them,
    with a warning: the model cannot read past them, and one such line must not stop the rest."""
    it = iter(lines)
    start = 0
    while True:
        chunk = list(itertools.islice(it, chunk_lines))
        if not chunk:
            return
        keep = [i for i, line in enumerate(chunk) if line.strip()]
        sources = [pieces.encode(chunk[i]) for i in keep]
        if max_source_tokens is not None:
            for j, src in enumerate(sources):
                if len(src) > max_source_tokens:
                    logger.warning("line %d: %d pieces, more than the model's %d source positions: translating "
                                   "its first %d pieces only", start + keep[j] + 1, len(src), max_source_tokens + 1,
                                   max_source_tokens)
                    sources[j] = src[:max_source_tokens]
        start += len(chunk)
        hyps = decoder.decode(sources)
        out = [""] * len(chunk)
        for i, h in zip(keep, hyps):
            out[i] = pieces.decode(h[0][0])
        yield from out


def _input_lines(path: str) -> Iterator[str]:
    from fairseq_kd import fileio

    yield from fileio.iter_lines(path, "--input")  # "-" = stdin; split on \n only, UTF-8 checked


def main(argv=None) -> dict:
    from fairseq_kd import fileio, guard, validate
    from fairseq_kd.export.convert import read_meta
    from fairseq_kd.export.decode import MIN_LEN_WHY, FairseqLikeDecoder, SearchConfig, min_len_reproduced

    args = get_parser().parse_args(argv)
    if args.beam < 1 or args.max_tokens < 1 or args.chunk_lines < 1:
        raise KDInputError("--beam, --max-tokens and --chunk-lines must be positive")
    for flag, value in (("--max-len-a", args.max_len_a), ("--max-len-b", args.max_len_b),
                        ("--min-len", args.min_len), ("--threads", args.threads)):
        validate.non_negative(flag, value)
    if not min_len_reproduced(args.min_len, args.beam):
        raise KDInputError(f"--min-len {args.min_len} with --beam {args.beam}: fairseq's search is not reproduced "
                           f"({MIN_LEN_WHY}): pass --beam 1 or --min-len 1")
    guard.check_paths({"model_dir": args.model_dir, "--input": args.input, "--spm-model": args.spm_model,
                       "--spm-model-tgt": args.spm_model_tgt}, {"--output": args.output})
    if args.input != "-":
        fileio.check_file(args.input, f"--input {args.input}: no such file", "input file")
    meta = read_meta(args.model_dir)
    pieces = Pieces(args.model_dir, args.spm_model, args.spm_model_tgt)
    translator = load_translator(args.model_dir, args.device, args.compute_type, args.threads)
    from fairseq_kd.export.quantize import cpu_has_vnni, saturation_warning

    warning = saturation_warning(meta, translator.compute_type, translator.device, cpu_has_vnni())
    if warning:
        logger.warning(warning)
    cfg = SearchConfig(beam=args.beam, nbest=1, lenpen=args.lenpen, max_len_a=args.max_len_a,
                       max_len_b=args.max_len_b, min_len=args.min_len,
                       max_positions=int(meta.get("max_target_positions", 1024)))
    decoder = FairseqLikeDecoder(translator, cfg, max_batch_tokens=args.max_tokens)
    lines = _input_lines(args.input)
    progress = None
    if args.input != "-" and not args.no_progress:
        from tqdm import tqdm

        progress = tqdm(total=fileio.count_lines(args.input), desc="translate", unit="sent", file=sys.stderr)
    t0, n = time.perf_counter(), 0

    def counted(outputs):
        nonlocal n
        for line in outputs:
            n += 1
            if progress is not None:
                progress.update(1)
            yield line

    max_src = meta.get("max_source_positions", meta.get("max_target_positions"))
    outputs = counted(translate_lines(lines, decoder, pieces, args.chunk_lines,
                                      int(max_src) - 1 if max_src else None))
    if args.output == "-":
        for line in outputs:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    else:
        fileio.atomic_write_lines(args.output, outputs)
    if progress is not None:
        progress.close()
    seconds = time.perf_counter() - t0
    return {"sentences": n, "seconds": round(seconds, 3), "sent_per_s": round(n / seconds, 2) if seconds else None,
            "beam": args.beam, "compute_type": translator.compute_type, "device": translator.device,
            "redecoded_alone": decoder.redone}


def cli_main(argv=None) -> int:
    from fairseq_kd.cli import run_tool

    code, summary = run_tool("fairseq-kd-translate", main, argv, level=logging.WARNING)
    # the parsed flag, not the literal "--summary" in argv: argparse also takes an abbreviation (--summ)
    if code == 0 and get_parser().parse_args(argv).summary:
        print(json.dumps(summary, sort_keys=True), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(cli_main())
