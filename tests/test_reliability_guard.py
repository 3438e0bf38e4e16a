"""No tool overwrites an input under any spelling of its paths.

Every tool that writes is run with an output that is, contains or lies inside one of its
inputs, spelled in every way we know (the same string, ``..``, a symlinked folder, a path
relative to the working directory, a hard link, a parent or child folder). Each must exit 2
with the guard's message before writing anything: the whole tree stays byte-identical.
New tools belong in ``TOOLS``; new spellings in ``spellings``.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability_helpers import run_cli as _cli


REPO = Path(__file__).resolve().parents[1]


def snapshot(root: Path):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


def spellings(root: Path, kind: str):
    """(input, output) pairs under ``root`` naming a conflict. ``kind``: file (a file input
    written over) or dir (a folder input that an output folder equals, contains or enters)."""
    data = root / "exp" / "bin"
    link = root / "link"  # symlink to exp/
    rel = os.path.relpath(data, root)
    if kind == "samedir":  # tools that write fixed names into a folder: the folder is the input's
        return [("same", str(data), str(data)), ("dotdot", str(data), str(data / ".." / "bin")),
                ("symlink", str(data), str(link / "bin")), ("relative", str(data), rel)]
    if kind == "file":
        f = data / "train.en"
        hard = root / "hard.en"
        if not hard.exists():
            os.link(f, hard)
        return [
            ("same", str(f), str(f)),
            ("dotdot", str(f), str(data / ".." / "bin" / "train.en")),
            ("symlink", str(f), str(link / "bin" / "train.en")),
            ("relative", str(f), os.path.join(rel, "train.en")),
            ("hardlink", str(f), str(hard)),
        ]
    return [
        ("same", str(data), str(data)),
        ("parent", str(data), str(root / "exp")),  # --data X/bin --output-dir X
        ("parent-symlink", str(data), str(link)),
        ("child", str(data), str(data / "out")),
        ("child-dotdot", str(data), str(root / "exp" / "x" / ".." / "bin" / "out")),
        ("relative", str(data), rel),
        ("input-via-symlink", str(link / "bin"), str(data / "sub" / "out")),
    ]


@pytest.fixture
def tree(tmp_path, monkeypatch):
    data = tmp_path / "exp" / "bin"
    data.mkdir(parents=True)
    for name in ("train.en", "train.de", "ref.en"):
        (data / name).write_text("ein Haus\n")
    for name in ("dict.de.txt", "dict.en.txt"):
        (data / name).write_text("Haus 1\n")
    (data / "train.de-en.de.idx").write_bytes(b"x")
    (data / "train.de-en.de.bin").write_bytes(b"x")
    (data / "summary.json").write_text("{}\n")
    (tmp_path / "teacher.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "other.en").write_text("ein Haus\n")
    (tmp_path / "link").symlink_to(tmp_path / "exp")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _prep(argv):
    from fairseq_kd.prep.__main__ import main

    try:
        return main(argv)
    except SystemExit as e:
        return e.code


T = "teacher.pt"
# tool -> (input kind, run(input, output) -> exit code). Files other than the input come from ``tree``.
TOOLS = {
    "noise-stream": ("file", lambda i, o: _cli("fairseq_kd.cli.noise", ["-i", i, "-o", o, "--deletion", "0.1"])),
    "noise-parallel-source": ("file", lambda i, o: _cli("fairseq_kd.cli.noise", [
        "--source", i, "--target", "other.en", "--output-source", o, "--output-target", "new.en"])),
    "noise-target-as-output-source": ("file", lambda i, o: _cli("fairseq_kd.cli.noise", [
        "--source", "other.en", "--target", i, "--output-source", o, "--output-target", "new.en"])),
    "noise-summary-json": ("file", lambda i, o: _cli("fairseq_kd.cli.noise", ["-i", i, "-o", "new.de",
                                                                             "--summary-json", o])),
    "noise-write-vocab": ("file", lambda i, o: _cli("fairseq_kd.cli.noise", ["-i", i, "-o", "new.de",
                                                                            "--write-vocab", o])),
    "score-hyp": ("file", lambda i, o: _cli("fairseq_kd.cli.score", ["-i", i, "-r", "other.en", "-o", o])),
    "score-ref": ("file", lambda i, o: _cli("fairseq_kd.cli.score", ["-i", "other.en", "-r", i, "-o", o])),
    "prune": ("file", lambda i, o: _cli("fairseq_kd.cli.prune", ["-i", i, "-o", o, "--force"])),
    "report": ("samedir", lambda i, o: _cli("fairseq_kd.cli.report", [os.path.join(i, "summary.json"), "--out-dir", o])),
    "cache-data": ("dir", lambda i, o: _cli("fairseq_kd.cli.cache", [i, "--teacher-path", T, "--out-dir", o])),
    "cache-teacher": ("file", lambda i, o: _cli("fairseq_kd.cli.cache", ["elsewhere", "--teacher-path", f"{T}:{i}",
                                                                        "--out-dir", o])),
    "distill": ("dir", lambda i, o: _cli("fairseq_kd.cli.distill", ["--data", i, "--teacher", T, "--output-dir", o])),
    "study": ("dir", lambda i, o: _cli("fairseq_kd.cli.study", ["--data", i, "-s", "de", "-t", "en", "--test-ref",
                                                               "other.en", "--out-dir", o])),
    "study-ref": ("file", lambda i, o: _cli("fairseq_kd.cli.study", ["--data", "elsewhere", "-s", "de", "-t", "en",
                                                                    "--test-ref", i, "--out-dir", o])),
    "export": ("file", lambda i, o: _cli("fairseq_kd.cli.export", [i, o, "--force"])),
    "export-dir": ("samedir", lambda i, o: _cli("fairseq_kd.cli.export", [os.path.join(i, "train.en"), o, "--force"])),
    "translate": ("file", lambda i, o: _cli("fairseq_kd.cli.translate", ["elsewhere", "-i", i, "-o", o])),
    "translate-model": ("samedir", lambda i, o: _cli("fairseq_kd.cli.translate", [i, "-i", "other.en", "-o",
                                                                              os.path.join(o, "hyp.en")])),
    "prep-clean": ("file", lambda i, o: _prep(["clean", "--pair", i, "other.en", o, "new.en"])),
    "prep-spm-decode": ("file", lambda i, o: _prep(["spm-decode", "--model", "m", "--input", i, "--output", o])),
    "prep-spm-encode": ("file", lambda i, o: _prep(["spm-encode", "--model", "m", "--pair", i, o])),
    "prep-hyps": ("file", lambda i, o: _prep(["hyps", "--gen", i, "--n", "1", "--out", o])),
    "prep-split-every": ("samedir", lambda i, o: _prep(["split-every", "--src", os.path.join(i, "train.de"),
                                                        "--tgt", os.path.join(i, "train.en"), "--src-lang", "de",
                                                        "--tgt-lang", "en", "--out-dir", o])),
    "prep-sgm": ("file", lambda i, o: _prep(["sgm", "--src", i, "--ref", "other.en", "--out-src", "new.de",
                                             "--out-tgt", o])),
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_writing_tool_refuses_to_overwrite_its_input(tool, tree, capsys):
    kind, run = TOOLS[tool]
    for name, inp, out in spellings(tree, kind):
        before = snapshot(tree)
        rc = run(inp, out)
        err = capsys.readouterr().err
        assert rc == 2, f"{tool} ({name}: {inp} -> {out}) exited {rc}: {err[-500:]}"
        assert "refusing to write" in err, f"{tool} ({name}): {err[-500:]}"
        assert snapshot(tree) == before, f"{tool} ({name}) changed files before refusing"


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_decode_sh_refuses_to_overwrite_its_input(kind, tree):
    # decode.sh checks --data-bin / --checkpoint exist first, then guards, then decodes
    keep = {"file": ("same", "symlink", "hardlink"), "dir": ("same", "child", "input-via-symlink")}[kind]
    for name, inp, out in [c for c in spellings(tree, kind) if c[0] in keep]:
        before = snapshot(tree)
        argv = (["--data-bin", "exp/bin", "--checkpoint", T, "--input", inp, "--out", out] if kind == "file"
                else ["--data-bin", inp, "--checkpoint", T, "--out", os.path.join(out, "hyp.en")])  # out inside
        proc = subprocess.run(["bash", str(REPO / "scripts" / "decode.sh"), *argv], capture_output=True, text=True,
                              env={**os.environ, "PYTHON": sys.executable})
        assert proc.returncode == 2 and "refusing to write" in proc.stderr, (name, proc.stderr[-500:])
        assert snapshot(tree) == before


@pytest.mark.integration
def test_prepare_script_refuses_data_dir_inside_its_outputs(tree):
    # --data-dir DIR/raw --out-dir DIR: stage 1 would rewrite the corpus it reads
    raw = tree / "prep" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "val", "test_2016_flickr"):
        for lang in ("de", "en"):
            (raw / f"{split}.{lang}").write_text("ein Haus\n")
    (tree / "plink").symlink_to(tree / "prep")
    (tree / "out2").mkdir()
    (tree / "out2" / "raw").symlink_to(raw)  # an output folder that is a symlink to the corpus
    for data_dir, out_dir in ((raw, tree / "prep"), (tree / "plink" / "raw", "prep"), (raw, tree / "out2")):
        before = snapshot(tree)
        proc = subprocess.run(["bash", str(REPO / "data_prep" / "prepare_multi30k.sh"), "--data-dir", str(data_dir),
                               "--out-dir", str(out_dir)], capture_output=True, text=True,
                              env={**os.environ, "PYTHON": sys.executable})
        assert proc.returncode == 2 and "refusing to write" in proc.stderr, proc.stderr[-800:]
        assert snapshot(tree) == before


WRITES_NOTHING = {"fairseq_kd.cli.ladder", "fairseq_kd.cli.status"}  # print their tables on stdout only


def test_every_console_tool_is_in_the_guard_test():
    """A new console tool must be added to TOOLS (or to WRITES_NOTHING): no tool escapes the guard test."""
    import re

    tools = re.findall(r'"fairseq-kd-[\w-]+ = ([\w.]+):cli_main"', (REPO / "setup.py").read_text())
    covered = set(re.findall(r'_cli\("([\w.]+)"', Path(__file__).read_text()))
    assert len(tools) >= 10 and not set(tools) - covered - WRITES_NOTHING, set(tools) - covered - WRITES_NOTHING
