"""The KD methods as the shell pipelines see them, read from their one definition,
``fairseq_kd.study.config.METHOD_SPECS`` (method -> criterion, training data, teacher, fixed flags).

    python -m fairseq_kd.methods METHOD    shell assignments for ``eval``:
        method_criterion=word_kd method_data=corpus method_teacher=true method_flags=(...)
    python -m fairseq_kd.methods --list    the method names, one per line

An unknown method prints one line naming the known ones and exits 2.
"""
import shlex
import sys
from typing import List, Optional

from fairseq_kd.study.config import METHOD_SPECS


def shell_assignments(method: str) -> str:
    """``method_*`` bash assignments of ``method`` (KeyError when unknown)."""
    spec = METHOD_SPECS[method]
    flags = " ".join(shlex.quote(str(f)) for f in spec.get("flags", []))
    return (f"method_criterion={shlex.quote(spec['criterion'])} method_data={shlex.quote(spec['data'])} "
            f"method_teacher={'true' if spec['teacher'] else 'false'} method_flags=({flags})")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--list"]:
        print("\n".join(METHOD_SPECS))
        return 0
    if len(argv) != 1 or argv[0] not in METHOD_SPECS:
        print(f"fairseq_kd.methods: unknown method {' '.join(argv)!r}: choose one of {', '.join(METHOD_SPECS)}",
              file=sys.stderr)
        return 2
    print(shell_assignments(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
