"""Console tools (``fairseq-kd-*``)."""


def run_tool(name: str, main, argv=None, level: int = 20):
    """``(exit code, result)`` of a tool's ``main(argv)``: bad input (``KDInputError``) is one line on
    stderr and exit 2, argparse usage errors keep their code; ``level``: logging level (20 = INFO)."""
    import logging
    import sys

    from fairseq_kd.errors import KDInputError

    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=level, stream=sys.stderr)
    try:
        return 0, main(argv)
    except KDInputError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2, None
    except SystemExit as err:  # argparse usage errors
        return int(err.code or 0), None
