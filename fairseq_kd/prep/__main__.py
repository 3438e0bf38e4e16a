"""``python -m fairseq_kd.prep <command>``: the steps the data_prep/*.sh pipelines call.

Every command reads/writes plain UTF-8 text, writes atomically, prints a JSON summary on
stdout and exits 2 with a one-line ``error:`` message naming the file on bad input (also when an
output would overwrite an input: ``fairseq_kd.guard``).
"""
import argparse
import json
import sys

from fairseq_kd.errors import KDInputError


def _cmd_check_aligned(a):
    from fairseq_kd.prep.textio import check_aligned
    if len(a.files) % 2:
        raise KDInputError("check-aligned: give files in SRC TGT pairs")
    return {"aligned": True, "lines": check_aligned(list(zip(a.files[::2], a.files[1::2])))}


def _cmd_clean(a):
    from fairseq_kd.prep.clean import CleanConfig, clean_files
    from fairseq_kd.prep.textio import check_aligned
    cfg = CleanConfig(min_len=a.min_len, max_len=a.max_len, ratio=a.ratio)
    pairs, evals = a.pair or [], a.eval_pair or []
    # check every pair before writing anything, so a bad input leaves no partial outputs
    check_aligned([(p[0], p[1]) for p in pairs + evals])
    return ([clean_files(*p, cfg, filter_pairs=not a.no_filter) for p in pairs]
            + [clean_files(*p, cfg, filter_pairs=False) for p in evals])


def _cmd_spm_train(a):
    from fairseq_kd.prep.spm import SpmConfig, train_spm
    cfg = SpmConfig(vocab_size=a.vocab_size, model_type=a.model_type, character_coverage=a.character_coverage,
                    input_sentence_size=a.input_sentence_size, num_threads=a.threads, seed=a.seed)
    model = train_spm(a.input, a.model_prefix, cfg)
    from fairseq_kd.prep.spm import load
    return {"model": str(model), "vocab_size": load(str(model)).get_piece_size(), **vars(cfg)}


def _cmd_spm_encode(a):
    from fairseq_kd.prep.spm import encode_file, load
    sp = load(a.model)
    return {dst: encode_file(sp, src, dst) for src, dst in a.pair}


def _cmd_spm_decode(a):
    from fairseq_kd.prep.spm import decode_lines, load
    from fairseq_kd.fileio import atomic_write_lines, read_lines
    lines = read_lines(a.input)  # "-" = stdin, split on \n only
    out = decode_lines(load(a.model), lines)
    if a.output == "-":
        sys.stdout.write("".join(x + "\n" for x in out))
        return None
    return {a.output: atomic_write_lines(a.output, out)}


def _cmd_iwslt_train(a):
    """train.tags -> cleaned pairs -> valid (every 23rd) / train."""
    from fairseq_kd.prep.clean import CleanConfig, clean_pairs
    from fairseq_kd.prep.iwslt import read_train_tags, valid_split_mask
    from fairseq_kd.prep.textio import write_parallel_atomic
    src, tgt = read_train_tags(a.src), read_train_tags(a.tgt)
    if len(src) != len(tgt):
        raise KDInputError(f"misaligned parallel files: {a.src} has {len(src)} sentences but {a.tgt} has "
                           f"{len(tgt)} after removing the XML meta lines; use the two sides of the same release")
    s, t, _ = clean_pairs(src, tgt, CleanConfig(min_len=a.min_len, max_len=a.max_len, ratio=a.ratio))
    mask = valid_split_mask(len(s), a.valid_every)
    tr = ([x for x, m in zip(s, mask) if not m], [x for x, m in zip(t, mask) if not m])
    va = ([x for x, m in zip(s, mask) if m], [x for x, m in zip(t, mask) if m])
    o = a.out_dir
    write_parallel_atomic([f"{o}/valid.{a.src_lang}", f"{o}/valid.{a.tgt_lang}"], list(va))
    write_parallel_atomic([f"{o}/train.{a.src_lang}", f"{o}/train.{a.tgt_lang}"], list(tr))
    return {"sentences": len(src), "cleaned": len(s), "train": len(tr[0]), "valid": len(va[0])}


def _cmd_split_every(a):
    """Carve valid = every N-th pair (N from --every, or chosen to give about --n-valid pairs)."""
    from fairseq_kd.prep.iwslt import valid_split_mask
    from fairseq_kd.prep.textio import check_aligned, read_lines, write_parallel_atomic
    (n,) = check_aligned([(a.src, a.tgt)])
    every = a.every or max(2, n // max(1, a.n_valid))
    s, t, mask = read_lines(a.src), read_lines(a.tgt), valid_split_mask(n, every)
    o, sl, tl = a.out_dir, a.src_lang, a.tgt_lang
    write_parallel_atomic([f"{o}/valid.{sl}", f"{o}/valid.{tl}"],
                          [[x for x, m in zip(s, mask) if m], [x for x, m in zip(t, mask) if m]])
    write_parallel_atomic([f"{o}/train.{sl}", f"{o}/train.{tl}"],
                          [[x for x, m in zip(s, mask) if not m], [x for x, m in zip(t, mask) if not m]])
    return {"every": every, "valid": sum(mask), "train": n - sum(mask)}


def _write_test(a, srcs, tgts, kind):
    from fairseq_kd.prep.textio import normalize, write_parallel_atomic
    s = [normalize(x) for x in srcs]
    t = [normalize(x) for x in tgts]
    write_parallel_atomic([a.out_src, a.out_tgt], [s, t])
    return {kind: len(s), "out": [a.out_src, a.out_tgt]}


def _cmd_dicts(a):
    from fairseq_kd.prep.dicts import check_checkpoint_dicts
    return [check_checkpoint_dicts(c, a.data_bin, a.src, a.tgt, a.allow_renamed) for c in a.checkpoint]


def _cmd_xml(a):
    from fairseq_kd.prep.iwslt import read_xml_pair
    if len(a.files) % 2:
        raise KDInputError("xml: give source/target XML files in pairs")
    srcs, tgts, parts = [], [], []
    for sx, tx in zip(a.files[::2], a.files[1::2]):
        s, t = read_xml_pair(sx, tx)
        srcs += s
        tgts += t
        parts.append(len(s))
    return {**_write_test(a, srcs, tgts, "segments"), "parts": parts}


def _cmd_sgm(a):
    from fairseq_kd.prep.sgm import read_sgm_pair
    s, t = read_sgm_pair(a.src, a.ref)
    return _write_test(a, s, t, "segments")


def _cmd_download(a):
    from fairseq_kd.prep.download import fetch, untar
    out = fetch(a.url, a.out, gunzip=a.gunzip)
    if a.untar:
        untar(out, a.untar)
    return {"url": a.url, "out": str(out)}


def _cmd_hyps(a):
    from fairseq_kd.prep.hyps import parse_hypotheses, remove_sentencepiece, restore_order
    from fairseq_kd.prep.spm import decode_lines, load
    from fairseq_kd.fileio import atomic_write_lines, count_lines, read_lines
    if a.n is not None:
        n = a.n
    elif a.source:
        n = count_lines(a.source)
    else:  # the binarized source side the decoder read
        from fairseq_kd.prep.hyps import binarized_size
        n = binarized_size(a.bin_prefix)
    hyps = restore_order(parse_hypotheses(read_lines(a.gen), a.gen), n, a.gen)
    if a.spm_model:
        out = decode_lines(load(a.spm_model), hyps)
    elif a.no_spm:
        out = hyps
    else:
        out = [remove_sentencepiece(h) for h in hyps]
    atomic_write_lines(a.out, out)
    if a.out_pieces:
        atomic_write_lines(a.out_pieces, hyps)
    return {"hypotheses": len(out), "out": a.out}


def _cmd_guard(a):
    """Refuse outputs that are, contain or lie inside an input (for the bash pipelines)."""
    from fairseq_kd.guard import check_paths
    check_paths({"--input": a.input or []}, {"--output": a.output or []}, a.tool)
    return None


def _cols(rows, idx):
    return [r[i] for r in rows or [] for i in idx]


def _train_valid(folder, sl, tl):
    return [f"{folder}/{s}.{lang}" for s in ("train", "valid") for lang in (sl, tl)]


def _paths(a):
    """(inputs, outputs) of a subcommand for the output-path guard; None when it writes nothing."""
    if a.cmd == "clean":
        rows = (a.pair or []) + (a.eval_pair or [])
        return {"--pair/--eval-pair": _cols(rows, (0, 1))}, {"--pair/--eval-pair": _cols(rows, (2, 3))}
    if a.cmd == "spm-train":
        return {"--input": a.input}, {"--model-prefix": [f"{a.model_prefix}.model", f"{a.model_prefix}.vocab"]}
    if a.cmd == "spm-encode":
        return {"--pair": _cols(a.pair, (0,)), "--model": a.model}, {"--pair": _cols(a.pair, (1,))}
    if a.cmd == "spm-decode":
        return {"--input": a.input, "--model": a.model}, {"--output": a.output}
    if a.cmd in ("iwslt-train", "split-every"):
        return {"--src": a.src, "--tgt": a.tgt}, {"--out-dir": _train_valid(a.out_dir, a.src_lang, a.tgt_lang)}
    if a.cmd in ("xml", "sgm"):
        ins = {"files": a.files} if a.cmd == "xml" else {"--src": a.src, "--ref": a.ref}
        return ins, {"--out-src": a.out_src, "--out-tgt": a.out_tgt}
    if a.cmd == "hyps":
        bins = [a.bin_prefix + ".bin", a.bin_prefix + ".idx"] if a.bin_prefix else None
        return ({"--gen": a.gen, "--source": a.source, "--spm-model": a.spm_model, "--bin-prefix": bins},
                {"--out": a.out, "--out-pieces": a.out_pieces})
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fairseq_kd.prep", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("check-aligned", help="refuse parallel files with different line counts")
    c.add_argument("files", nargs="+", help="SRC TGT [SRC TGT ...]")
    c.set_defaults(fn=_cmd_check_aligned)

    def length_flags(c):
        g = c.add_argument_group("length filter (whitespace words, Moses clean-corpus-n rule)")
        g.add_argument("--min-len", type=int, default=1, help="drop pairs with a side shorter than this")
        g.add_argument("--max-len", type=int, default=250, help="drop pairs with a side longer than this")
        g.add_argument("--ratio", type=float, default=1.5, help="drop pairs whose length ratio exceeds this")

    c = sub.add_parser("clean", help="normalize whitespace and filter aligned pairs by length/ratio")
    c.add_argument("--pair", nargs=4, action="append",
                   metavar=("SRC_IN", "TGT_IN", "SRC_OUT", "TGT_OUT"), help="a training pair to filter (repeatable)")
    c.add_argument("--eval-pair", nargs=4, action="append",
                   metavar=("SRC_IN", "TGT_IN", "SRC_OUT", "TGT_OUT"),
                   help="a valid/test pair: whitespace-normalized, never filtered (repeatable)")
    c.add_argument("--no-filter", action="store_true", help="normalize only (valid/test sets are never filtered)")
    length_flags(c)
    c.set_defaults(fn=_cmd_clean)

    c = sub.add_parser("spm-train", help="train one joint sentencepiece model on all inputs")
    c.add_argument("--input", nargs="+", required=True)
    c.add_argument("--model-prefix", required=True)
    c.add_argument("--vocab-size", type=int, default=8000)
    c.add_argument("--model-type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    c.add_argument("--character-coverage", type=float, default=1.0)
    c.add_argument("--input-sentence-size", type=int, default=2_000_000)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--seed", type=int, default=1)
    c.set_defaults(fn=_cmd_spm_train)

    c = sub.add_parser("spm-encode", help="raw text -> pieces")
    c.add_argument("--model", required=True)
    c.add_argument("--pair", nargs=2, action="append", required=True, metavar=("IN", "OUT"))
    c.set_defaults(fn=_cmd_spm_encode)

    c = sub.add_parser("spm-decode", help="pieces -> text")
    c.add_argument("--model", required=True)
    c.add_argument("--input", default="-")
    c.add_argument("--output", default="-")
    c.set_defaults(fn=_cmd_spm_decode)

    c = sub.add_parser("iwslt-train", help="WIT3 train.tags -> cleaned train + valid (every 23rd pair)")
    c.add_argument("--src", required=True, help="train.tags.de-en.de")
    c.add_argument("--tgt", required=True, help="train.tags.de-en.en")
    c.add_argument("--src-lang", default="de")
    c.add_argument("--tgt-lang", default="en")
    c.add_argument("--out-dir", required=True)
    c.add_argument("--valid-every", type=int, default=23)
    length_flags(c)
    c.set_defaults(fn=_cmd_iwslt_train)

    for name, fn, hlp in (("xml", _cmd_xml, "IWSLT <seg> XML pairs -> one aligned test set"),):
        c = sub.add_parser(name, help=hlp)
        c.add_argument("files", nargs="+", help="SRC_XML TGT_XML [SRC_XML TGT_XML ...] (concatenated)")
        c.add_argument("--out-src", required=True)
        c.add_argument("--out-tgt", required=True)
        c.set_defaults(fn=fn)

    c = sub.add_parser("split-every", help="split aligned pairs: valid = every N-th pair, train = the rest")
    c.add_argument("--src", required=True)
    c.add_argument("--tgt", required=True)
    c.add_argument("--every", type=int, default=0, help="N (0: chosen from --n-valid)")
    c.add_argument("--n-valid", type=int, default=1000, help="about this many valid pairs when --every is 0")
    c.add_argument("--src-lang", required=True)
    c.add_argument("--tgt-lang", required=True)
    c.add_argument("--out-dir", required=True, help="writes train.* and valid.* here")
    c.set_defaults(fn=_cmd_split_every)

    c = sub.add_parser("sgm", help="WMT SGML src/ref -> aligned text")
    c.add_argument("--src", required=True)
    c.add_argument("--ref", required=True)
    c.add_argument("--out-src", required=True)
    c.add_argument("--out-tgt", required=True)
    c.set_defaults(fn=_cmd_sgm)

    c = sub.add_parser("download", help="fetch a URL (gunzip / untar) with a clear offline error")
    c.add_argument("--url", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--gunzip", action="store_true")
    c.add_argument("--untar", default=None, metavar="DIR")
    c.set_defaults(fn=_cmd_download)

    c = sub.add_parser("hyps", help="fairseq-generate output -> hypotheses in input order, spm removed")
    c.add_argument("--gen", required=True, help="fairseq-generate stdout")
    c.add_argument("--source", help="the decoded source file (its line count is the expected number)")
    c.add_argument("--n", type=int, default=None, help="expected number of sentences (instead of --source)")
    c.add_argument("--bin-prefix", default=None, help="binarized source prefix (e.g. bin/test.de-en.de) giving the count")
    c.add_argument("--spm-model", default=None, help="remove sentencepiece with this model (else by the ▁ rule)")
    c.add_argument("--no-spm", action="store_true", help="keep the hypotheses as they are")
    c.add_argument("--out", required=True)
    c.add_argument("--out-pieces", default=None, help="also write the ordered piece-level hypotheses")
    c.set_defaults(fn=_cmd_hyps)

    c = sub.add_parser("dicts", help="refuse checkpoints trained with other dictionaries or direction than --data-bin")
    c.add_argument("--checkpoint", action="append", required=True, help="a checkpoint (repeatable)")
    c.add_argument("--data-bin", required=True)
    c.add_argument("--src", required=True)
    c.add_argument("--tgt", required=True)
    c.add_argument("--allow-renamed", action="store_true",
                   help="other symbols under the same ids (pieces renamed id for id on purpose): warn, do not refuse")
    c.set_defaults(fn=_cmd_dicts)

    c = sub.add_parser("guard", help="refuse outputs that are, contain or lie inside an input (exit 2)")
    c.add_argument("--tool", default="", help="tool name for the message")
    c.add_argument("--input", action="append", help="an input path (repeatable)")
    c.add_argument("--output", action="append", help="an output path (repeatable)")
    c.set_defaults(fn=_cmd_guard)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "hyps" and args.n is None and not args.source and not args.bin_prefix:
        build_parser().error("hyps: give --source, --bin-prefix or --n")
    try:
        io_paths = _paths(args)
        if io_paths is not None:
            from fairseq_kd.guard import check_paths
            check_paths(*io_paths, f"python -m fairseq_kd.prep {args.cmd}")
        result = args.fn(args)
    except KDInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
