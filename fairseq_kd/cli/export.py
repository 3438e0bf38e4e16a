"""fairseq-kd-export: a fairseq checkpoint -> a CTranslate2 model directory.

    fairseq-kd-export exp/student/checkpoint_best.pt exp/student/ct2 --quantization int8
    fairseq-kd-export CKPT OUT_DIR --data DATA_BIN --spm-model spm.model

Converts stock ``transformer`` checkpoints and every ``transformer_glu`` configuration (relu,
gelu, glu, swiglu, geglu, ``--glu-match-params``, pre-/post-norm, shared embeddings, the
per-layer FFN widths of ``fairseq-kd-prune`` output). OUT_DIR holds the model, both
vocabularies, the sentencepiece model (found beside the data dir, or ``--spm-model``) and
``fairseq_kd_export.json``; it is written atomically. Refused, with the fix: adaptive-capacity
checkpoints that were not pruned, ensembles, anything CTranslate2 cannot express.
Prints a JSON summary on stdout; usage errors and refusals exit 2.
"""
import argparse
import json
import sys



def get_parser() -> argparse.ArgumentParser:
    from fairseq_kd.export.convert import QUANTIZATIONS

    p = argparse.ArgumentParser(prog="fairseq-kd-export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("input / output")
    g.add_argument("checkpoint", help="fairseq checkpoint (transformer or transformer_glu; one, not an ensemble)")
    g.add_argument("out_dir", help="CTranslate2 model directory to write")
    g.add_argument("--data", default=None, help="dir of the checkpoint's dict.*.txt (default: the one stored in it)")
    g.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="fully unpickle the checkpoint (a trusted legacy file the allowlist refuses)")
    g = p.add_argument_group("model")
    g.add_argument("--quantization", choices=QUANTIZATIONS, default="none",
                   help="weight type stored (none = float32; CTranslate2 can still convert at load time)")
    g.add_argument("--int8-weight-bits", type=int, choices=[8, 7], default=8,
                   help="with --quantization int8: 7 stores weights in [-63, 63], for x86 CPUs without VNNI "
                        "(AVX2, AVX-512F), whose int8 products saturate 16-bit sums with 8-bit weights; "
                        "VNNI CPUs need 8 (docs/export.md)")
    g.add_argument("--spm-model", default=None,
                   help="sentencepiece model copied into OUT_DIR (default: spm.model beside/in the data dir)")
    g.add_argument("--spm-model-tgt", default=None, help="target-side sentencepiece model if separate")
    return p


def main(argv=None) -> dict:
    import fairseq_kd  # noqa: F401  (checkpoint allowlist, registrations)
    from fairseq_kd import guard
    from fairseq_kd.export.convert import export_checkpoint

    args = get_parser().parse_args(argv)
    guard.check_paths({"checkpoint": args.checkpoint, "--data": args.data, "--spm-model": args.spm_model,
                       "--spm-model-tgt": args.spm_model_tgt}, {"out_dir": args.out_dir})
    meta = export_checkpoint(args.checkpoint, args.out_dir, args.quantization, data=args.data,
                             spm_model=args.spm_model, spm_model_tgt=args.spm_model_tgt,
                             trust=args.trust_checkpoint, force=args.force, int8_weight_bits=args.int8_weight_bits)
    return {"output": args.out_dir, **meta}


def cli_main(argv=None) -> int:
    from fairseq_kd.cli import run_tool

    code, summary = run_tool("fairseq-kd-export", main, argv)
    if code == 0 and summary is not None:  # None: --help
        print(json.dumps(summary, indent=1, sort_keys=True))
    return code


if __name__ == "__main__":
    sys.exit(cli_main())
