"""No silently wrong results: weak checks made strong, locks.

Truths: the teacher's dictionary symbols, the token bytes of a split, the checkpoint bytes;
a reordered dictionary of the same size, a split with the same lengths but other tokens, a
teacher file changed in place must each be refused, never used.
"""
import shutil
from pathlib import Path

import pytest
import torch

from tests.reliability_helpers import run_cli


pytestmark = pytest.mark.integration

MAXLEN = ["--max-len-a", "1.2", "--max-len-b", "10"]


def copy_bin(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def swap_dictionary_symbols(bin_dir: Path, i: int = 4, j: int = 5) -> None:
    """Same size, two symbols in another order (ids keep their bytes: their meaning changes)."""
    for lang in ("src", "tgt"):
        path = bin_dir / f"dict.{lang}.txt"
        rows = path.read_text(encoding="utf-8").split("\n")
        a, b = i - 4, j - 4  # dict.txt lists symbols from id 4 (after the specials)
        rows[a], rows[b] = rows[b], rows[a]
        path.write_text("\n".join(rows), encoding="utf-8")


def checkpoint_with_data(src_ckpt: Path, dst: Path, data: str) -> Path:
    """A copy of the checkpoint whose stored data directory is ``data`` (e.g. a relative path)."""
    import fairseq_kd  # noqa: F401  (allowlists fairseq's checkpoint types)

    state = torch.load(src_ckpt, weights_only=True)  # the raw file: cfg is a plain dict
    state["cfg"]["task"]["data"] = data
    torch.save(state, dst)
    return dst


def distill(tt_data, ckpt, out, *extra):
    from fairseq_kd.cli import distill as cli

    argv = ["--data", str(tt_data), "--split", "valid", "--teacher", str(ckpt), "-o", str(out), "--cpu",
            "--no-progress", "--shard-size", "16", "--max-tokens", "200", "--decoding", "greedy", *MAXLEN, *extra]
    return run_cli(cli.__name__, argv)


def test_distill_compares_teacher_dictionaries_by_symbols(tiny_teacher, tmp_path, capsys):
    data = copy_bin(tiny_teacher.data_bin, tmp_path / "bin")
    swap_dictionary_symbols(data)
    moved = checkpoint_with_data(tiny_teacher.checkpoint, tmp_path / "teacher.pt", "no/such/relative/bin")
    out = tmp_path / "out"
    # the teacher's own data dir does not resolve: its dictionaries are unknown -> refused, not --data's
    assert distill(data, moved, out) == 2
    assert "--teacher-data" in capsys.readouterr().err
    # its dictionaries given: same size, other order -> refused naming both and the first difference
    assert distill(data, moved, out, "--teacher-data", str(tiny_teacher.data_bin)) == 2
    err = capsys.readouterr().err
    assert "vocabulary mismatch" in err and "first at index 4" in err
    assert not (out / "summary.json").exists() and not (out / "bin").exists()
    # the same teacher with the right dictionaries works
    assert distill(tiny_teacher.data_bin, moved, out, "--teacher-data", str(tiny_teacher.data_bin)) == 0


def test_distill_rerun_with_other_settings_refuses_and_overwrite_unpublishes_first(tiny_teacher, tmp_path,
                                                                                    monkeypatch, capsys):
    out = tmp_path / "out"
    assert distill(tiny_teacher.data_bin, tiny_teacher.checkpoint, out) == 0
    first = (out / "valid.tgt").read_bytes()
    capsys.readouterr()
    assert distill(tiny_teacher.data_bin, tiny_teacher.checkpoint, out, "--max-len-b", "12") == 2  # not "exists"
    assert "other settings" in capsys.readouterr().err
    assert (out / "valid.tgt").read_bytes() == first

    from fairseq_kd.distill import run

    def killed(*a, **k):
        raise KeyboardInterrupt  # the run dies while decoding its first new shard

    monkeypatch.setattr(run, "decode_shard", killed)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny_teacher.data_bin, tiny_teacher.checkpoint, out, "--max-len-b", "12", "--overwrite")
    left = sorted(p.name for p in out.iterdir())
    assert "summary.json" not in left and "bin" not in left and "valid.tgt" not in left, left


def _cache(data, ckpt, out, *extra):
    from fairseq_kd.cli import cache as cli

    argv = [str(data), "--teacher-path", str(ckpt), "--out-dir", str(out), "--split", "valid", "--topk", "4",
            "--no-progress", *extra]
    return run_cli(cli.__name__, argv)


def _open_cache(data, out, teacher_path=None):
    from fairseq_kd.cache import TeacherCache
    from fairseq_kd.cli import cache as cli

    args = cli.get_parser().parse_args([str(data), "--teacher-path", "unused", "--out-dir", str(out)])
    task = cli.build_task(args)
    task.load_dataset("valid")
    return TeacherCache.open(str(out), "valid", task.dataset("valid"), task, teacher_path)


def test_cache_fingerprint_covers_tokens_teacher_bytes_and_settings(tiny_teacher, tmp_path, capsys):
    from fairseq_kd.errors import KDInputError

    ckpt = tmp_path / "teacher.pt"
    shutil.copyfile(tiny_teacher.checkpoint, ckpt)
    out = tmp_path / "cache"
    assert _cache(tiny_teacher.data_bin, ckpt, out) == 0
    assert _open_cache(tiny_teacher.data_bin, out).k == 4  # reads fine without --teacher-path

    # same sentence lengths, one target token changed
    other = copy_bin(tiny_teacher.data_bin, tmp_path / "other")
    binf = other / "valid.src-tgt.tgt.bin"
    raw = bytearray(binf.read_bytes())
    raw[0] = 4 + (raw[0] - 4 + 1) % 8  # another word id (uint16 little endian: low byte)
    binf.write_bytes(bytes(raw))
    with pytest.raises(KDInputError, match="split_data fingerprint"):
        _open_cache(other, out, str(ckpt))
    capsys.readouterr()
    assert _cache(other, ckpt, out) == 2  # the tool refuses too, never "exists"

    # another --topk into the finished cache: refused, not reported as existing
    assert _cache(tiny_teacher.data_bin, ckpt, out, "--topk", "2") == 2
    assert "--topk 4" in capsys.readouterr().err

    # the teacher file changed in place: refused even without --teacher-path
    with open(ckpt, "ab") as f:
        f.write(b"\0")
    with pytest.raises(KDInputError, match="changed since"):
        _open_cache(tiny_teacher.data_bin, out)


def test_second_cache_run_on_one_directory_is_refused_with_pid(tiny_teacher, tmp_path, capsys):
    import os

    from fairseq_kd.guard import DirLock

    out = tmp_path / "cache"
    with DirLock(out, "fairseq-kd-cache"):  # a first run holds the directory
        assert _cache(tiny_teacher.data_bin, tiny_teacher.checkpoint, out) == 2
    err = capsys.readouterr().err
    assert f"in use by another fairseq-kd-cache run (pid {os.getpid()}" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [".fairseq-kd.lock"]
