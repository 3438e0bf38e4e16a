"""fairseq-kd-status: where running studies stand (per cell: updates, last and best validation, the
patience count, the update by which it stops, speed), read from their out-dirs without touching them.

    fairseq-kd-status exp/converged/*/            # markdown table on stdout
    fairseq-kd-status exp/converged/teacher_d0.3 --json
"""
import argparse
import sys

from fairseq_kd.errors import KDInputError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairseq-kd-status", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out_dirs", nargs="+", metavar="OUT_DIR", help="fairseq-kd-study --out-dir folders")
    p.add_argument("--json", action="store_true", help="rows as JSON instead of the markdown table")
    return p


def cli_main(argv=None) -> int:
    from fairseq_kd import integrity
    from fairseq_kd.study import status as St

    args = get_parser().parse_args(argv)
    try:
        studies = [(d.rstrip("/"), St.study_status(d)) for d in args.out_dirs]
    except KDInputError as e:
        print(f"fairseq-kd-status: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(integrity.dumps_json({d: rows for d, rows in studies}, indent=1))
    else:
        sys.stdout.write(St.markdown(studies))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
