"""Full or read-only disks: one line naming the file (exit 2 from the tools, 1 from anything that
does not catch it), the old outputs intact, no temporary left; the teacher cache allocates its
arrays before mapping them (never a SIGBUS). Errors meant for the user escaping a program
(``fairseq-train`` included) are one line.

Truths: the bytes of the old outputs, the files left in the folder, exit codes.
"""
import os
from pathlib import Path

import pytest

from tests.reliability_helpers import run_cli
from tests.test_reliability_defects import snapshot



@pytest.fixture
def small_disk(tmp_path):
    """``make(kib)``: a tmpfs of that size (root only), unmounted afterwards."""
    import subprocess

    mounts = []

    def make(kib: int) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or 'mount failed'}): needs root; "
                        f"the in-process ENOSPC tests below cover the same code paths")
        mounts.append(folder)
        return folder

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(disk: Path) -> None:
    """Leave no free byte on ``disk``."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def leftovers(folder: Path):
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or ".old." in p.name or "partial" in p.name)


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "EDQUOT"])
def test_atomic_writes_on_a_full_disk_keep_the_old_file_and_name_it(code, tmp_path, monkeypatch):
    import errno

    from fairseq_kd import fileio
    from fairseq_kd.errors import KDDiskError

    out = tmp_path / "out.txt"
    out.write_text("old\n")

    def no_space(fd):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(os, "fsync", no_space)
    for write in (lambda: fileio.atomic_write_text(out, "new\n"), lambda: fileio.atomic_write_many({out: ["new"]})):
        with pytest.raises(KDDiskError, match=rf"cannot write .*out.txt: .* \({code}\); .* and re-run"):
            write()
        assert out.read_text() == "old\n" and os.listdir(tmp_path) == ["out.txt"]


def test_cache_allocates_before_it_maps(tmp_path, monkeypatch):
    """ENOSPC at allocation is an error naming the cache, and no partial directory stays behind."""
    import errno

    import numpy as np

    from fairseq_kd import cache_writer
    from fairseq_kd.errors import KDDiskError

    class Data:
        tgt_sizes = np.array([3, 2])

        def __len__(self):
            return 2

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(KDDiskError, match="No space left"):
        cache_writer.TeacherCacheWriter(str(tmp_path), "valid", Data(), 4, {})
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    w = cache_writer.TeacherCacheWriter(str(tmp_path), "valid", Data(), 4, {})
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "valid.partial").iterdir()}
    blocks = {p.name: p.stat().st_blocks for p in (tmp_path / "valid.partial").iterdir()}
    assert sizes["valid.ids.i32"] == 5 * 4 * 4 and sizes["valid.done.u8"] == 2
    assert blocks["valid.ids.i32"] > 0  # allocated, not sparse
    assert w.todo().tolist() == [0, 1]


def test_cache_resume_removes_the_temporaries_of_killed_writes(tmp_path):
    """A cache run killed mid-write leaves a temporary (never read); the resumed run deletes it."""
    import numpy as np

    from fairseq_kd import cache_writer
    from tests.reliability_helpers import killed_atomic_write

    class Data:
        tgt_sizes = np.array([3, 2])

        def __len__(self):
            return 2

    cache_writer.TeacherCacheWriter(str(tmp_path), "valid", Data(), 4, {})
    plan = tmp_path / "valid.partial" / "valid.meta.json"
    plan_bytes = plan.read_bytes()
    stale = [killed_atomic_write(plan), killed_atomic_write(tmp_path / "valid.meta.json")]
    w = cache_writer.TeacherCacheWriter(str(tmp_path), "valid", Data(), 4, {})  # resumes
    assert [p.name for p in stale if p.exists()] == [] and plan.read_bytes() == plan_bytes
    assert w.todo().tolist() == [0, 1]


@pytest.mark.integration
def test_full_disk_gives_one_line_and_leaves_old_outputs(tiny_teacher, small_disk, tmp_path, capsys):
    import subprocess
    import sys

    import torch

    from fairseq_kd import fileio
    from fairseq_kd.cli import noise, score
    from fairseq_kd.errors import KDDiskError

    disk = small_disk(64)
    src = tmp_path / "in.txt"
    src.write_text("ein kleiner Test mit vielen Wörtern\n" * 2000)
    (disk / "out.txt").write_text("old\n")
    (disk / "score.json").write_text("{}\n")
    fill(disk)
    rc, err = run_cli(noise.__name__, ["-i", str(src), "-o", str(disk / "out.txt"), "--deletion", "0.1"], capsys)
    assert rc == 2 and "No space left on device" in err and "out.txt" in err and "Traceback" not in err, err
    rc, err = run_cli(score.__name__, ["-r", str(src), "-i", str(src), "-o", str(disk / "score.json"),
                                       "--metrics", "bleu"], capsys)
    assert rc == 2 and "No space left on device" in err, err
    with pytest.raises(KDDiskError):  # what fairseq-kd-prune writes a checkpoint with
        with fileio.atomic_open(disk / "pruned.pt", "wb") as f:
            torch.save({"w": torch.zeros(100000)}, f)
    assert (disk / "out.txt").read_text() == "old\n" and (disk / "score.json").read_text() == "{}\n"
    assert leftovers(disk) == [] and not (disk / "pruned.pt").exists()
    # the cache's memory-mapped arrays: an error before the first batch, not SIGBUS (exit -7) mid-run
    cache_disk = small_disk(16)
    r = subprocess.run([sys.executable, "-m", "fairseq_kd.cli.cache", str(tiny_teacher.data_bin), "--teacher-path",
                        str(tiny_teacher.checkpoint), "--out-dir", str(cache_disk / "c"), "--split", "valid",
                        "--topk", "8", "--no-progress", "--device", "cpu"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "No space left on device" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert leftovers(cache_disk) == []


@pytest.mark.integration
def test_export_on_a_full_disk_keeps_the_old_export(small_disk):
    from fairseq_kd.errors import KDDiskError
    from fairseq_kd.export.convert import export_model
    from tests.test_export import _dictionary, random_model

    disk = small_disk(4096)
    d = _dictionary()
    model = random_model("transformer_glu_tiny", ["--ffn-activation", "relu"])
    export_model(model, d, d, str(disk / "ct2"))
    before = snapshot(disk / "ct2")
    fill(disk)
    with pytest.raises(KDDiskError, match="No space left"):
        export_model(model, d, d, str(disk / "ct2"), force=True)
    assert snapshot(disk / "ct2") == before and leftovers(disk) == []


def _python(code: str, *argv):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300,
                          cwd=str(Path(__file__).resolve().parents[1]), env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_uncaught_input_run_and_disk_errors_are_one_line():
    """``import fairseq_kd`` (every tool, and fairseq-train --user-dir) prints them without a traceback."""
    from tests.reliability_helpers import LIGHT_IMPORT

    raise_ = ("kind = sys.argv[1]; raise {'input': KDInputError('bad --x: fix it'), 'run': KDRunError('too many'), "
              "'disk': OSError(errno.ENOSPC, 'No space left on device', 'out.bin'), 'other': KeyError('k')}[kind]")
    full = f"import sys, errno; sys.argv[0] = 'some-tool'; import fairseq_kd; from fairseq_kd.errors import *; {raise_}"
    light = (f"{LIGHT_IMPORT}import errno; sys.argv[0] = 'some-tool'; from fairseq_kd.errors import *; "
             f"install_excepthook(); {raise_}")
    for code, kind, rc, line in ((full, "input", 2, "some-tool: error: bad --x: fix it"),
                                 (light, "run", 1, "some-tool: error: too many"),
                                 (light, "disk", 1, "some-tool: error: cannot write out.bin: No space left on device (ENOSPC)")):
        r = _python(code, kind)
        assert r.returncode == rc and line in r.stderr and "Traceback" not in r.stderr, (kind, r.stderr[-1500:])
    r = _python(light, "other")
    assert r.returncode == 1 and "Traceback" in r.stderr and "KeyError" in r.stderr


@pytest.mark.integration
def test_fairseq_train_refusal_is_one_line_exit_2(tiny_teacher, tmp_path):
    from tests import helpers

    argv = [str(tiny_teacher.data_bin), "--user-dir", helpers.USER_DIR, "--task", "kd_translation",
            "--noise-deletion", "2", *helpers.TINY_ARCH_ARGS, "--optimizer", "adam", "--lr", "1e-3",
            "--max-tokens", "500", "--max-update", "1", "--cpu", "--save-dir", str(tmp_path / "ckpt")]
    r = _python("import sys; sys.argv[0] = 'fairseq-train'; from fairseq_cli.train import cli_main; cli_main()", *argv)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith("fairseq-train: error: ") and "deletion rate" in r.stderr
