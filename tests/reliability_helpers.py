"""Helpers shared by tests/test_reliability_*.py: in-process tool calls, process checks."""
import importlib
import logging
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# import fairseq_kd's leaf modules in a child without the package __init__ (which imports fairseq: ~3 s)
LIGHT_IMPORT = ("import sys, types; pkg = types.ModuleType('fairseq_kd'); "
                f"pkg.__path__ = [{str(REPO / 'fairseq_kd')!r}]; sys.modules['fairseq_kd'] = pkg; ")


def run_cli(module: str, argv, capsys=None):
    """``module.cli_main(argv)`` in this process: its exit code (and stderr when ``capsys`` is given)."""
    root = logging.getLogger()
    for h in root.handlers[:]:  # e.g. fairseq_cli.train's import-time basicConfig on an earlier test's stdout
        if getattr(getattr(h, "stream", None), "closed", False):
            root.removeHandler(h)
    handlers, level = list(root.handlers), root.level
    try:
        rc = importlib.import_module(module).cli_main(argv)
    except SystemExit as e:
        rc = e.code
    finally:  # tools call logging.basicConfig(stream=sys.stderr): no handler may outlive pytest's captured stream
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    rc = 0 if rc is None else rc
    return (rc, capsys.readouterr().err) if capsys is not None else rc


def alive(pid: int) -> bool:
    """A running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def killed_atomic_write(path, text: str = "half a file") -> Path:
    """What a writer killed mid-write leaves: a child writes ``text`` through ``fileio.atomic_open(path)``
    and SIGKILLs itself before the replace. Returns its temporary (``path`` itself is untouched)."""
    import signal
    import subprocess
    import sys

    path = Path(path)
    code = LIGHT_IMPORT + ("import os, signal, sys; from fairseq_kd import fileio\n"
                           "with fileio.atomic_open(sys.argv[1]) as f:\n"
                           "    f.write(sys.argv[2]); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), text])
    assert proc.wait() == -signal.SIGKILL
    (tmp,) = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.{proc.pid}.")]
    return tmp
