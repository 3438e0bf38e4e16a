"""Where does an int8 export lose BLEU: in its weights or in its activations?

For one checkpoint, on a split with references (choose on valid, not test):

* ``float32``: the plain export (the reference);
* ``weights-int8``: every linear and embedding weight rounded per output row to int8 exactly as
  CTranslate2 quantizes it, then exported and run in float32: the cost of the weights alone;
* ``int8``: the int8 export run as deployed (weights and, at run time, each linear layer's
  input quantized per token).

Prints BLEU (beam 5) and, against float32, the mean absolute and the mean signed change of the
reference translation's log-probability per target token (CTranslate2 ``score_batch``, the
model's own probability of the gold sentence), as a table and as JSON (``--json``).

    python bench/int8_error.py CKPT --data-bin exp/main/multi30k/bin --ref exp/main/multi30k/raw/valid.en
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@torch.no_grad()
def round_weights_int8(model) -> int:
    """Per-row symmetric int8 rounding of every 2-D linear/embedding weight, in place (as
    ``ctranslate2.specs.model_spec`` quantizes: scale 127 / max|row|). Returns the count."""
    n = 0
    for mod in model.modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)) and mod.weight.dim() == 2 and mod.weight.numel():
            w = mod.weight
            amax = w.abs().amax(dim=1, keepdim=True)
            amax = torch.where(amax == 0, torch.full_like(amax, 127.0), amax)
            w.copy_(torch.round(w * (127.0 / amax)) * (amax / 127.0))
            n += 1
    return n


def ref_logprobs(model_dir: str, src, tgt, threads: int):
    import ctranslate2

    tr = ctranslate2.Translator(model_dir, device="cpu", compute_type="default", intra_threads=threads)
    res = tr.score_batch(src, tgt, max_batch_size=64)
    return np.array([sum(r.log_probs) for r in res]), int(sum(len(r.log_probs) for r in res))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data-bin", required=True, help="binarized data dir (dictionaries and the split)")
    p.add_argument("--ref", required=True, help="raw reference file of the split")
    p.add_argument("--split", default="valid")
    p.add_argument("--spm-model", default=None, help="default: spm.model beside the data dir")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work-dir", default=None, help="where the three exports go (default: a temp dir)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import sentencepiece as spm

    import fairseq_kd  # noqa: F401
    from fairseq_kd import scoring
    from fairseq_kd.distill.data import SplitData, infer_langs
    from fairseq_kd.export import convert
    from fairseq_kd.export.evaluate import translate_timed

    spm_model = args.spm_model or convert.find_spm_model(args.data_bin)
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    refs = scoring.read_lines(args.ref)
    s, t = infer_langs(args.data_bin, args.split, None, None)
    data = SplitData(args.data_bin, args.split, s, t)
    src = [list(convert.source_tokens(data.src_dict, data.src_ds[i])) for i in range(len(data))]
    tgt = [list(convert.source_tokens(data.tgt_dict, data.tgt_ds[i])) for i in range(len(data))]
    work = args.work_dir or tempfile.mkdtemp(prefix="int8_error.")
    model, sd, td, _ = convert.load_single(args.checkpoint, data=args.data_bin)

    dirs = {}
    dirs["float32"] = os.path.join(work, "float32")
    convert.export_model(model, sd, td, dirs["float32"], "none", spm_model=spm_model, force=True)
    dirs["int8"] = os.path.join(work, "int8")
    convert.export_model(model, sd, td, dirs["int8"], "int8", spm_model=spm_model, force=True)
    round_weights_int8(model)
    dirs["weights-int8"] = os.path.join(work, "weights-int8")
    convert.export_model(model, sd, td, dirs["weights-int8"], "none", spm_model=spm_model, force=True)

    rows, base = [], None
    for name in ("float32", "weights-int8", "int8"):
        pieces, secs = translate_timed(dirs[name], src, beam=args.beam, threads=args.threads)
        hyps = [sp.decode(x) for x in pieces]
        scoring.check_aligned(hyps, [refs], f"{args.split} of {args.data_bin}", [args.ref])
        bleu = scoring.score_lines(hyps, [refs], scoring.ScoreConfig(metrics=("bleu",)))["bleu"]["score"]
        lp, ntok = ref_logprobs(dirs[name], src, tgt, args.threads)
        if base is None:
            base = lp
        rows.append({"export": name, "bleu": round(bleu, 2), "decode_s": round(secs, 2),
                     "mean_abs_dlogp_per_token": round(float(np.abs(lp - base).sum() / ntok), 4),
                     "mean_dlogp_per_token": round(float((lp - base).sum() / ntok), 4)})
        print(f"{name}: BLEU {bleu:.2f}", file=sys.stderr, flush=True)
    print(f"| export | BLEU ({args.split}, beam {args.beam}) | mean abs dlogp/token vs float32 | mean dlogp/token |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['export']} | {r['bleu']:.2f} | {r['mean_abs_dlogp_per_token']:.4f} | "
              f"{r['mean_dlogp_per_token']:+.4f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"checkpoint": args.checkpoint, "split": args.split, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
