"""fairseq-kd-ladder: print the capacity ladder (layers, dims, heads, FFN width, exact params).

    fairseq-kd-ladder                       # markdown table, 10k joint vocabulary
    fairseq-kd-ladder --vocab-size 8000 --format json
    fairseq-kd-ladder --check               # also build every model and count its parameters

Counts are for ``--share-all-embeddings`` (one ``V x d`` matrix), sinusoidal positions
and a joint dictionary of ``--vocab-size`` symbols (fairseq's 4 specials included).
``--check`` builds each architecture on the ``meta`` device (no memory) through fairseq
and fails if ``sum(p.numel())`` differs from the closed form.
"""
import argparse
import json
import sys
from typing import Dict, List

from fairseq_kd.errors import KDInputError

COLUMNS = [("arch", "arch"), ("family", "FFN"), ("encoder_layers", "enc layers"), ("decoder_layers", "dec layers"),
           ("embed_dim", "d_model"), ("heads", "heads"), ("ffn_width", "FFN width"), ("params", "params")]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairseq-kd-ladder", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="The transformer_glu capacity ladder (about 3M to 146M parameters).")
    g = p.add_argument_group("model")
    g.add_argument("--vocab-size", type=int, default=10000, help="joint dictionary size (shared embeddings)")
    g.add_argument("--family", choices=["all", "relu", "glu"], default="all", help="which FFN family to list")
    g.add_argument("--check", action="store_true",
                   help="build every model with fairseq (meta device) and compare its parameter count")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=["markdown", "json"], default="markdown", help="table format")
    return p


def signature(vocab_size: int) -> str:
    from fairseq_kd import __version__

    return f"vocab:{vocab_size}|embeddings:shared|positions:sinusoidal|norm:post|version:{__version__}"


def markdown(rows: List[Dict], vocab_size: int) -> str:
    out = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [f"`{r['arch']}`" if k == "arch" else f"{r[k]:,}" if k == "params" else str(r[k]) for k, _ in COLUMNS]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append(f"Parameter counts for a {vocab_size:,}-symbol joint dictionary with shared embeddings "
               f"(`{signature(vocab_size)}`).")
    return "\n".join(out)


def cli_main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        if args.vocab_size < 5:
            raise KDInputError(f"--vocab-size {args.vocab_size}: a fairseq dictionary has 4 special symbols; "
                               "pass the real joint dictionary size (e.g. 10000)")
        from fairseq_kd.models import ladder

        rows = [r for r in ladder.ladder_rows(args.vocab_size) if args.family in ("all", r["family"])]
        if args.check:
            for r in rows:
                built = ladder.num_params(ladder.build_model(r["arch"], args.vocab_size, device="meta"))
                r["built_params"] = built
                if built != r["params"]:
                    print(f"fairseq-kd-ladder: error: {r['arch']}: fairseq builds {built:,} params, "
                          f"the closed form says {r['params']:,}", file=sys.stderr)
                    return 1
    except KDInputError as err:
        print(f"fairseq-kd-ladder: error: {err}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps({"vocab_size": args.vocab_size, "signature": signature(args.vocab_size), "rows": rows},
                         indent=2))
    else:
        print(markdown(rows, args.vocab_size))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
