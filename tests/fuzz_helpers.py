"""The fuzz tier's shared pieces: generated bad inputs and the contract of docs/reliability.md.

Contract, for every console tool and every input: exit 0 with a correct result, or exit 2 with one
``TOOL: error: ...`` line and no traceback; the inputs byte-identical afterwards; on exit 2 no output
written (``Contract``). Tools are called in this process (``cli_main(argv)``, ``SystemExit`` captured);
an exception escaping a tool fails the test with its traceback.

Bounded for CI: ``FUZZ`` runs each property on a fixed (derandomized) set of examples, without a
deadline (a loaded 2-core runner) and without the example database; FAIRSEQ_KD_FUZZ_EXAMPLES scales the
example counts up for a longer local search.
"""
import contextlib
import importlib
import io
import logging
import os
import sys
from typing import Dict, Iterable, Optional

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE = float(os.environ.get("FAIRSEQ_KD_FUZZ_EXAMPLES", "1"))


def fuzz_settings(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


# ---------------------------------------------------------------- generated inputs

PIECES = ["", "a b c", "w1 w2 w3", "der Hund .", "\ufeff", "\0", "\r", "\u2028", "\x0c", "é ü ß", "\t", "  ",
          "x" * 5000, "\u0301", "😀", "\x1b[0m", ",", '"', "nan", "-1"]
line_st = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=4).map("".join)
lines_st = st.lists(line_st.filter(lambda s: "\n" not in s), max_size=7)


@st.composite
def text_bytes(draw, lines=lines_st):
    """Bytes of a text file: lines joined by \\n, \\r\\n or \\r, final newline or not, an optional BOM, UTF-8 or
    a non-UTF-8 encoding (latin-1 / UTF-16) or a cut multi-byte character."""
    ls = draw(lines)
    eol = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    text = eol.join(ls) + (eol if ls and draw(st.booleans()) else "")
    if draw(st.integers(0, 5)) == 0:
        text = "\ufeff" + text
    enc = draw(st.sampled_from(["utf-8"] * 6 + ["latin-1", "utf-16", "cut"]))
    if enc == "latin-1":
        return text.encode("latin-1", errors="replace") + b"\xe9"
    if enc == "utf-16":
        return text.encode("utf-16")
    data = text.encode("utf-8", errors="surrogatepass")
    return data + b"\xc3" if enc == "cut" else data


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def split_lines(data: bytes):
    """The project's reading of a text file (UTF-8, split on \\n only, no empty last line)."""
    text = data.decode("utf-8")
    if not text:
        return []
    out = text.split("\n")
    return out[:-1] if text.endswith("\n") else out


# ---------------------------------------------------------------- calling a tool


class Result:
    def __init__(self, rc: int, out: str, err: str):
        self.rc, self.out, self.err = rc, out, err


def call(module: str, argv, stdin: bytes = b"") -> Result:
    """``module.cli_main(argv)`` in this process with stdin/stdout/stderr replaced; logging handlers the tool
    installs are removed afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = importlib.import_module(module).cli_main(argv)
            except SystemExit as e:
                rc = e.code
    finally:
        sys.stdin = old_stdin
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    if isinstance(rc, str):  # sys.exit("message")
        err.write(rc + "\n")
        rc = 1
    return Result(0 if rc is None else rc, out.getvalue(), err.getvalue())


LOCK = ".fairseq-kd.lock"  # a tool's lock file is no output (guard.DirLock)


def snapshot(paths: Iterable[str]) -> Dict[str, Optional[bytes]]:
    """Bytes of every file under ``paths`` (None for a path that does not exist; a folder that holds no file
    but a lock counts as absent)."""
    snap: Dict[str, Optional[bytes]] = {}
    for p in paths:
        if os.path.isdir(p):
            snap[p] = None  # replaced by the files below, if any
            for root, _, files in os.walk(p):
                for f in files:
                    if f == LOCK:
                        continue
                    full = os.path.join(root, f)
                    if os.path.isfile(full):
                        with open(full, "rb") as fh:
                            snap[full] = fh.read()
                        snap.pop(p, None)
        elif os.path.isfile(p):
            with open(p, "rb") as fh:
                snap[p] = fh.read()
        else:
            snap[p] = None
    return snap


class Contract:
    """``with Contract(tool, inputs, outputs) as c: c.result = call(...)``: checks the contract on exit."""

    def __init__(self, tool: str, inputs: Iterable[str], outputs: Iterable[str] = ()):
        self.tool, self.inputs, self.outputs = tool, list(inputs), list(outputs)
        self.result: Optional[Result] = None

    def __enter__(self):
        self.before = snapshot(self.inputs)
        self.out_before = snapshot(self.outputs)
        return self

    def __exit__(self, kind, value, tb):
        if kind is not None:
            return False
        r = self.result
        assert r is not None, "no tool call inside the Contract"
        assert "Traceback" not in r.err, r.err
        assert r.rc in (0, 2), f"{self.tool}: exit {r.rc}\n{r.err}"
        if r.rc == 2:
            errors = [ln for ln in r.err.splitlines() if ": error:" in ln]
            assert len(errors) == 1 and errors[0].split(": error:")[0].strip() in (self.tool, "usage"), r.err
            assert snapshot(self.outputs) == self.out_before, f"{self.tool} refused but wrote output\n{r.err}"
        assert snapshot(self.inputs) == self.before, f"{self.tool} changed an input"
        return False
