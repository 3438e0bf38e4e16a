"""Fuzz tier, tools that read checkpoints and binarized data: fairseq-kd-cache, -distill, -prune, -export,
-translate and -study fed generated bad inputs (checkpoints cut, prefixed or replaced by text/NUL/BOM bytes;
numeric options as arbitrary text, NaN, infinities, negatives; outputs aliasing inputs under four spellings;
fuzzed text for translate's input and the study's reference). Contract of docs/reliability.md on every
example (tests/fuzz_helpers.py); translate's exit 0 keeps one output line per input line."""
import os
import shutil
import tempfile

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.fuzz_helpers import Contract, call, fuzz_settings, is_utf8, split_lines, text_bytes
from tests.test_translate import exported  # noqa: F401  (fixture: spm model, random model, its export)

pytestmark = [pytest.mark.fuzz, pytest.mark.integration]


@st.composite
def broken_checkpoint(draw, real: bytes):
    """Bytes that are not a usable checkpoint: a cut copy, a copy behind a BOM / text / NUL prefix, or other
    bytes altogether."""
    kind = draw(st.sampled_from(["cut", "prefix", "text", "nul", "empty", "tail"]))
    if kind == "cut":
        return real[: draw(st.integers(0, len(real) - 1))]
    if kind == "prefix":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\0" * 8, b"#!", b"PK"])) + real
    if kind == "text":
        return draw(text_bytes())
    if kind == "nul":
        return b"\0" * draw(st.integers(1, 4096))
    if kind == "tail":
        return real[-draw(st.integers(1, len(real) - 1)):]
    return b""


NUMBERS = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e99", "", "x", "1.5", "0x10", "٣"]),
                    st.integers(-10, 10).map(str), st.text(max_size=6))


def _tool_argv(tool, ckpt, data, out):
    return {
        "cache": ("fairseq_kd.cli.cache", [data, "--teacher-path", ckpt, "--out-dir", out, "--split", "valid",
                                           "--no-progress"]),
        "distill": ("fairseq_kd.cli.distill", ["--data", data, "--split", "valid", "--teacher", ckpt, "-o", out,
                                               "--cpu", "--no-progress"]),
        "prune": ("fairseq_kd.cli.prune", ["-i", ckpt, "-o", os.path.join(out, "p.pt")]),
        "export": ("fairseq_kd.cli.export", [ckpt, out]),
    }[tool]


@pytest.fixture(scope="module")
def ckpt_bytes(tiny_teacher):
    return tiny_teacher.checkpoint.read_bytes()


@pytest.mark.parametrize("tool", ["cache", "distill", "prune", "export"])
def test_broken_checkpoints(tool, tiny_teacher, ckpt_bytes):
    @fuzz_settings(6)
    @given(data=broken_checkpoint(ckpt_bytes))
    def prop(data):
        with tempfile.TemporaryDirectory() as d:
            ckpt, out = os.path.join(d, "model.pt"), os.path.join(d, "out")
            with open(ckpt, "wb") as f:
                f.write(data)
            module, argv = _tool_argv(tool, ckpt, str(tiny_teacher.data_bin), out)
            with Contract(f"fairseq-kd-{tool}", [ckpt, str(tiny_teacher.data_bin)], [out]) as c:
                c.result = r = call(module, argv)
            assert r.rc == 2 and ckpt in r.err, r.err[-600:]
    prop()


OPTIONS = {
    "cache": ["--topk", "--max-tokens", "--batch-size", "--flush-every"],
    "distill": ["--beam", "--nbest", "--max-tokens", "--shard-size", "--temperature", "--max-len-a",
                "--sampling-topp", "--max-failed-fraction"],
    "prune": ["--tolerance", "--verify-seed"],
}


def _valid(flag: str, text: str) -> bool:
    """Whether ``text`` is an acceptable value (then the tool may run: exit 0 is fine too)."""
    try:
        v = float(text)
    except ValueError:
        return False
    if v != v or v in (float("inf"), float("-inf")):
        return False
    if flag in ("--sampling-topp", "--max-failed-fraction"):
        return 0 < v <= 1
    return v > 0


@pytest.mark.parametrize("tool", sorted(OPTIONS))
def test_option_values(tool, tiny_teacher):
    @fuzz_settings(8)
    @given(flag=st.sampled_from(OPTIONS[tool]), value=NUMBERS)
    def prop(flag, value):
        assume(not _valid(flag, value))  # only refusals: a valid value would start a (slow) run
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "out")
            module, argv = _tool_argv(tool, str(tiny_teacher.checkpoint), str(tiny_teacher.data_bin), out)
            with Contract(f"fairseq-kd-{tool}", [str(tiny_teacher.checkpoint), str(tiny_teacher.data_bin)],
                          [out]) as c:
                c.result = r = call(module, argv + [f"{flag}={value}"])
            assert r.rc == 2, r.err[-600:]
    prop()


@pytest.mark.parametrize("tool", ["cache", "distill", "export", "study"])
def test_outputs_aliasing_inputs(tool, tiny_teacher, tmp_path):
    """The output dir as the data dir, inside it, or a symlink to it, spelled with ``.`` or ``sub/..``."""
    data = tmp_path / "data"
    shutil.copytree(tiny_teacher.data_bin, data)
    (tmp_path / "sub").mkdir()
    os.symlink(data, tmp_path / "link")
    ref = tmp_path / "ref.txt"
    ref.write_text("w1 w2\n" * 40)

    @fuzz_settings(6)
    @given(how=st.sampled_from(["same", "dot", "dotdot", "inside", "link", "link-inside"]))
    def prop(how):
        out = {"same": data, "dot": tmp_path / "." / "data", "dotdot": tmp_path / "sub" / ".." / "data",
               "inside": data / "out", "link": tmp_path / "link", "link-inside": tmp_path / "link" / "o"}[how]
        if tool == "study":
            module, argv = "fairseq_kd.cli.study", ["--data", str(data), "-s", "src", "-t", "tgt", "--test-ref",
                                                    str(ref), "--out-dir", str(out), "--methods", "none"]
        elif tool == "export":
            module, argv = "fairseq_kd.cli.export", [str(tiny_teacher.checkpoint), str(out), "--data", str(data)]
        else:
            module, argv = _tool_argv(tool, str(tiny_teacher.checkpoint), str(data), str(out))
        with Contract(f"fairseq-kd-{tool}", [str(data), str(ref), str(tiny_teacher.checkpoint)]) as c:
            c.result = r = call(module, argv)
        assert r.rc == 2, r.err[-600:]
    prop()


def test_study_reference_text(tiny_teacher, tmp_path):
    """A reference that is not the test split's raw text (other line count, not UTF-8) is refused before any
    cell trains."""
    @fuzz_settings(8)
    @given(ref=text_bytes())
    def prop(ref):
        assume(not (is_utf8(ref) and len(split_lines(ref)) == 40))
        with tempfile.TemporaryDirectory() as d:
            path, out = os.path.join(d, "ref.txt"), os.path.join(d, "out")
            with open(path, "wb") as f:
                f.write(ref)
            with Contract("fairseq-kd-study", [path, str(tiny_teacher.data_bin)], [os.path.join(out, "results.csv")]
                          ) as c:
                c.result = r = call("fairseq_kd.cli.study", ["--data", str(tiny_teacher.data_bin), "-s", "src",
                                                             "-t", "tgt", "--test-ref", path, "--out-dir", out,
                                                             "--methods", "none"])
            assert r.rc == 2, r.err[-600:]
    prop()


def test_translate_input_text(exported, tmp_path):  # noqa: F811
    """Any input bytes: exit 0 with one translation per input line, or exit 2 (not UTF-8) with no output;
    ``-o`` onto the input (any spelling) is refused."""
    root = exported[0]
    (tmp_path / "sub").mkdir()

    @fuzz_settings(12)
    @given(data=text_bytes(), alias=st.sampled_from([None, None, "dot", "dotdot"]))
    def prop(data, alias):
        src = tmp_path / "in.txt"
        src.write_bytes(data)
        out = tmp_path / "out.txt"
        if out.exists():
            out.unlink()
        target = {None: out, "dot": tmp_path / "." / "in.txt", "dotdot": tmp_path / "sub" / ".." / "in.txt"}[alias]
        with Contract("fairseq-kd-translate", [str(src), str(root / "ct2")], [str(out)]) as c:
            c.result = r = call("fairseq_kd.cli.translate", [str(root / "ct2"), "-i", str(src), "-o", str(target),
                                                             "--beam", "1", "--threads", "1", "--no-progress"])
        if alias or not is_utf8(data):
            assert r.rc == 2, r.err[-600:]
            return
        if r.rc == 0:
            assert len(split_lines(out.read_bytes())) == len(split_lines(data))
    prop()
