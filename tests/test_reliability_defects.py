"""Defects of a hostile probe, one test each: data loss, wrong-direction teachers, full disks,
stuck states, silent wrong results, tracebacks and weak messages.

Truths: the bytes of every file that must survive, the language pair stored in a checkpoint,
the exit code and the one-line message of each refusal.
"""
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.reliability_helpers import run_cli

ct2 = pytest.importorskip("ctranslate2")


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def checkpoint_with_task(src_ckpt: Path, dst: Path, **task) -> Path:
    """A copy of the checkpoint with some task fields changed (data dir, languages)."""
    import torch

    import fairseq_kd  # noqa: F401  (allowlists fairseq's checkpoint types)

    state = torch.load(src_ckpt, weights_only=True)
    state["cfg"]["task"].update(task)
    torch.save(state, dst)
    return dst


def export(argv, capsys):
    from fairseq_kd.cli import export as cli

    return run_cli(cli.__name__, [str(a) for a in argv], capsys)


# ---------------------------------------------------------------- 1. data loss


@pytest.mark.integration
def test_export_force_never_deletes_what_is_not_an_export(tiny_teacher, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(tiny_teacher.data_bin, work / "bin")
    (work / "notes.txt").write_text("mine\n")
    ckpt = checkpoint_with_task(tiny_teacher.checkpoint, tmp_path / "student.pt", data=str(work / "bin"))
    before = snapshot(work)
    # OUT_DIR holding the checkpoint's own data dir (stored in it, never passed as --data)
    rc, err = export([ckpt, work, "--force"], capsys)
    assert rc == 2 and "checkpoint's data" in err and "Traceback" not in err, err
    assert snapshot(work) == before
    # an export inside the checkpoint's data dir would lie inside an input
    rc, err = export([ckpt, work / "bin" / "ct2"], capsys)
    assert rc == 2 and "lies inside" in err, err
    # the current directory, and any directory that is not a previous export
    monkeypatch.chdir(work)
    rc, err = export([ckpt, ".", "--force", "--data", tiny_teacher.data_bin], capsys)
    assert rc == 2 and "current directory" in err, err
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    rc, err = export([ckpt, other, "--force", "--data", tiny_teacher.data_bin], capsys)
    assert rc == 2 and "not a fairseq-kd-export directory" in err, err
    assert snapshot(work) == before and (other / "keep.txt").read_text() == "x"
    # a previous export is replaced; a foreign file put into it makes it not replaceable
    out = tmp_path / "ct2"
    assert export([ckpt, out, "--data", tiny_teacher.data_bin], capsys)[0] == 0
    assert export([ckpt, out, "--force", "--data", tiny_teacher.data_bin], capsys)[0] == 0
    (out / "results.txt").write_text("x")
    rc, err = export([ckpt, out, "--force", "--data", tiny_teacher.data_bin], capsys)
    assert rc == 2 and "results.txt" in err and (out / "results.txt").exists(), err
    assert not [p for p in tmp_path.iterdir() if ".tmp." in p.name or ".old." in p.name]


def test_export_help_prints_no_null(capsys):
    from fairseq_kd.cli import export as cli

    assert cli.cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: fairseq-kd-export" in out and "null" not in out


@pytest.mark.integration
def test_cache_and_prune_treat_the_checkpoints_data_dir_as_an_input(tiny_teacher, tmp_path, capsys):
    from fairseq_kd.cli import cache, prune

    work = tmp_path / "work"
    shutil.copytree(tiny_teacher.data_bin, work / "bin")
    ckpt = checkpoint_with_task(tiny_teacher.checkpoint, tmp_path / "teacher.pt", data=str(work / "bin"))
    before = snapshot(work)
    rc, err = run_cli(cache.__name__, [str(tiny_teacher.data_bin), "--teacher-path", str(ckpt), "--out-dir",
                                       str(work), "--split", "valid", "--no-progress"], capsys)
    assert rc == 2 and "--teacher-path's data" in err, err
    rc, err = run_cli(prune.__name__, ["-i", str(ckpt), "-o", str(work / "bin" / "pruned.pt")], capsys)
    assert rc == 2 and "checkpoint's data" in err, err
    assert snapshot(work) == before


# ---------------------------------------------------------------- 2. teacher trained in the other direction


def test_pair_conflict_rule():
    from fairseq_kd.langpair import pair_conflict, stored_pair

    assert pair_conflict(("en", "de"), ("de", "en")) == "it was trained in the other direction"
    assert pair_conflict(("de", "fr"), ("de", "en")) is not None
    assert pair_conflict(("de", "en"), ("de", "en")) is None
    assert pair_conflict(("src", "tgt"), ("de", "en")) is None  # other naming scheme: cannot be told
    assert pair_conflict((None, None), ("de", "en")) is None
    assert stored_pair({"task": {"source_lang": "en", "target_lang": "de"}}) == ("en", "de")


@pytest.mark.integration
def test_reversed_teacher_is_refused_by_distill_cache_and_task(tiny_teacher, tmp_path, capsys):
    from fairseq_kd.cli import cache, distill
    from fairseq_kd.errors import KDInputError
    from tests import helpers

    # same joined dictionary, same data dir: only the stored direction tells the teachers apart
    rev = checkpoint_with_task(tiny_teacher.checkpoint, tmp_path / "rev.pt", source_lang="tgt", target_lang="src")
    data = str(tiny_teacher.data_bin)
    rc, err = run_cli(distill.__name__, ["--data", data, "--split", "valid", "--teacher", str(rev), "-o",
                                         str(tmp_path / "d"), "--cpu", "--no-progress"], capsys)
    assert rc == 2 and "other direction" in err, err
    rc, err = run_cli(cache.__name__, [data, "--teacher-path", str(rev), "--out-dir", str(tmp_path / "c"),
                                       "--split", "valid", "--no-progress"], capsys)
    assert rc == 2 and "other direction" in err, err
    with pytest.raises(KDInputError, match="other direction"):  # kd_translation --teacher-path
        task, _, _ = helpers.build_components(tiny_teacher.data_bin, ["--criterion", "label_smoothed_cross_entropy",
                                                                       "--teacher-path", str(rev)])
        task.load_teacher()
    assert not (tmp_path / "d" / "summary.json").exists() and not list((tmp_path / "c").glob("valid*"))


# ---------------------------------------------------------------- 3. full disk


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

    from fairseq_kd import cache
    from fairseq_kd.errors import KDDiskError

    class Data:
        tgt_sizes = np.array([3, 2])

        def __len__(self):
            return 2

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(KDDiskError, match="No space left"):
        cache.TeacherCacheWriter(str(tmp_path), "valid", Data(), 4, {})
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    w = cache.TeacherCacheWriter(str(tmp_path), "valid", Data(), 4, {})
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "valid.partial").iterdir()}
    blocks = {p.name: p.stat().st_blocks for p in (tmp_path / "valid.partial").iterdir()}
    assert sizes["valid.ids.i32"] == 5 * 4 * 4 and sizes["valid.done.u8"] == 2
    assert blocks["valid.ids.i32"] > 0  # allocated, not sparse
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


# ---------------------------------------------------------------- 4. stuck states


@pytest.mark.integration
def test_truncated_cache_is_rebuilt_with_overwrite(tiny_teacher, tmp_path, capsys):
    from fairseq_kd.cli import cache

    out = tmp_path / "cache"

    def run(*extra):
        return run_cli(cache.__name__, [str(tiny_teacher.data_bin), "--teacher-path", str(tiny_teacher.checkpoint),
                                        "--out-dir", str(out), "--split", "valid", "--topk", "4", "--no-progress",
                                        *extra], capsys)

    assert run()[0] == 0
    good = snapshot(out)
    ids = out / "valid.ids.i32"
    ids.write_bytes(ids.read_bytes()[:100])  # a copy or a disk cut it short
    rc, err = run()
    assert rc == 2 and "truncated" in err and "--overwrite" in err, err
    assert run()[0] == 2  # the advised fix is not "the same command again"
    assert run("--overwrite")[0] == 0
    assert snapshot(out) == good


@pytest.mark.integration
def test_prepare_multi30k_reruns_stage_1_when_its_inputs_change(tmp_path):
    import subprocess
    import sys

    data, out = tmp_path / "m30k", tmp_path / "out"
    data.mkdir()
    for name in ("val", "test_2016_flickr"):
        (data / f"{name}.de").write_text("ein Hund\n" * 3)
        (data / f"{name}.en").write_text("a dog\n" * 3)
    (data / "train.de").write_text("")
    (data / "train.en").write_text("")

    def prepare():
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["bash", str(root / "data_prep/prepare_multi30k.sh"), "--data-dir", str(data),
                               "--out-dir", str(out), "--stop-stage", "1"], capture_output=True, text=True,
                              env={**os.environ, "PYTHON": sys.executable})

    r = prepare()  # an empty corpus is refused at once, not after sentencepiece fails on it
    assert r.returncode == 2 and "train.de: no sentence pair left to write: it is empty" in r.stderr, r.stderr[-2000:]
    assert not (out / "raw" / "train.de").exists()
    (data / "train.de").write_text("eine Katze\nein Haus\n")
    (data / "train.en").write_text("a cat\na house\n")
    assert prepare().returncode == 0
    assert (out / "raw" / "train.en").read_text() == "a cat\na house\n"
    (data / "train.en").write_text("one cat\none house\n")  # the corpus fixed after a run: stage 1 again
    os.utime(data / "train.en", (1, 1))
    r = prepare()
    assert r.returncode == 0 and (out / "raw" / "train.en").read_text() == "one cat\none house\n", r.stderr[-2000:]
    r = prepare()
    assert r.returncode == 0 and "stage 1: skip" in r.stderr


@pytest.mark.integration
def test_truncated_ctranslate2_conversion_is_rebuilt(tiny_teacher, tmp_path):
    from fairseq_kd.distill.ct2 import convert_teacher
    from fairseq_kd.export.convert import export_complete
    from fairseq_kd.teacher import load_teacher

    ckpt = tmp_path / "teacher.pt"
    shutil.copyfile(tiny_teacher.checkpoint, ckpt)
    teacher = load_teacher(str(ckpt))
    out = Path(convert_teacher(teacher, str(ckpt), "f" * 64))
    good = snapshot(out)
    model = out / "model.bin"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # a full disk or a copy cut it
    assert not export_complete(str(out))
    assert convert_teacher(teacher, str(ckpt), "f" * 64) == str(out)
    assert snapshot(out) == good and export_complete(str(out))
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no .tmp / .old left


# ---------------------------------------------------------------- 5. silent wrong results


def test_a_bom_is_not_text(tmp_path, capsys):
    from fairseq_kd import fileio
    from fairseq_kd.cli import noise, score

    ref = tmp_path / "ref.txt"
    ref.write_text("a small house by the river\nthe cat sleeps\n", encoding="utf-8")
    hyp = tmp_path / "hyp.txt"
    hyp.write_bytes(b"\xef\xbb\xbf" + ref.read_bytes())  # Notepad's UTF-8
    assert fileio.read_lines(hyp) == fileio.read_lines(ref) == list(fileio.iter_lines(hyp))
    rc = run_cli(score.__name__, ["-r", str(ref), "-i", str(hyp), "--metrics", "bleu"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["bleu"]["score"] == 100.0
    out = tmp_path / "noisy.txt"
    assert run_cli(noise.__name__, ["-i", str(hyp), "-o", str(out), "--swap", "1", "--seed", "3"]) == 0
    assert "\ufeff" not in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("count", ["-3", "nan", "inf"])
def test_noise_vocab_counts_must_be_finite_and_not_negative(count, tmp_path):
    from fairseq_kd.errors import KDInputError
    from fairseq_kd.noise import read_vocab

    vocab = tmp_path / "vocab.txt"
    vocab.write_text(f"Haus\t5\nKatze\t{count}\n", encoding="utf-8")
    with pytest.raises(KDInputError, match=rf"vocab.txt:2: count '{count}' is not a finite number >= 0"):
        read_vocab(str(vocab), "word")


@pytest.mark.integration
def test_decode_sh_refuses_a_reordered_dictionary_of_the_same_size(tiny_teacher, tmp_path):
    import subprocess
    import sys

    from tests.test_reliability_silent import swap_dictionary_symbols

    data = tmp_path / "bin"
    shutil.copytree(tiny_teacher.data_bin, data)
    swap_dictionary_symbols(data)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(["bash", str(root / "scripts/decode.sh"), "--data-bin", str(data), "--checkpoint",
                        str(tiny_teacher.checkpoint), "--out", str(tmp_path / "hyp"), "--src", "src", "--tgt", "tgt",
                        "--spm-model", "none", "--subset", "valid"], capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "is not the source dictionary" in r.stderr and "first difference at id 4" in r.stderr, \
        r.stderr[-2000:]
    assert not (tmp_path / "hyp").exists()
    from fairseq_kd.prep.dicts import check_checkpoint_dicts  # the checkpoint's own data-bin passes

    assert check_checkpoint_dicts(str(tiny_teacher.checkpoint), str(tiny_teacher.data_bin), "src", "tgt")["checked"] \
        == ["source", "target"]


# ---------------------------------------------------------------- 6. one line instead of a traceback

from tests.test_translate import exported  # noqa: E402,F401  (fixture: spm model, random model, its export)


@pytest.mark.integration
def test_translate_cuts_a_line_longer_than_the_model_and_translates_the_rest(exported, tmp_path, caplog):
    from fairseq_kd.cli import translate

    root, sp, d, model, lines = exported
    lines = [x for x in lines if x][:6]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run_cli(translate.__name__, [str(root / "ct2"), "-i", str(tmp_path / "in.txt"), "-o",
                                        str(tmp_path / "ref.txt"), "--beam", "1", "--no-progress"]) == 0
    long_line = " ".join(["ein hund läuft über die wiese"] * 350)  # ~10,000 characters, > 1024 positions
    (tmp_path / "in2.txt").write_text("\n".join(lines[:3] + [long_line] + lines[3:]) + "\n", encoding="utf-8")
    rc = run_cli(translate.__name__, [str(root / "ct2"), "-i", str(tmp_path / "in2.txt"), "-o",
                                      str(tmp_path / "out.txt"), "--beam", "1", "--no-progress"])
    assert rc == 0 and "line 4: 3850 pieces, more than the model's 1024 source positions" in caplog.text
    out = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")[:-1]
    ref = (tmp_path / "ref.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(out) == 7 and out[:3] + out[4:] == ref


@pytest.mark.integration
def test_translate_refusals_are_one_line(exported, tmp_path, capsys):
    from fairseq_kd.cli import translate

    root = exported[0]
    (tmp_path / "in.txt").write_text("ein hund\n", encoding="utf-8")
    (tmp_path / "not.model").write_text("not a sentencepiece model\n")
    (tmp_path / "file").write_text("x")
    base = [str(root / "ct2"), "-i", str(tmp_path / "in.txt"), "--no-progress"]
    for extra, says in ((["--compute-type", "float16"], "--compute-type float16 is not supported on cpu"),
                        (["--spm-model", str(tmp_path / "not.model")], "is not a sentencepiece model"),
                        (["-o", str(tmp_path / "file" / "out.txt")], "is a file, not a directory"),
                        (["--spm-model", str(tmp_path)], "is a directory where a file (sentencepiece model) is expected")):
        rc, err = run_cli(translate.__name__, base + extra, capsys)
        assert rc == 2 and says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (extra, err)
    rc, err = run_cli(translate.__name__, [str(root / "ct2"), "-i", str(tmp_path)], capsys)
    assert rc == 2 and "is a directory where a file (input file) is expected" in err, err


@pytest.mark.integration
def test_cache_refuses_small_max_tokens_missing_split_and_file_out_dir(tiny_teacher, tmp_path, capsys):
    from fairseq_kd.cli import cache

    def run(out, *extra):
        return run_cli(cache.__name__, [str(tiny_teacher.data_bin), "--teacher-path", str(tiny_teacher.checkpoint),
                                        "--out-dir", str(out), "--topk", "4", "--no-progress", *extra], capsys)

    rc, err = run(tmp_path / "c", "--split", "valid", "--max-tokens", "3")
    assert rc == 2 and "--max-tokens 3 is below the longest sentence" in err, err
    rc, err = run(tmp_path / "c", "--split", "tset")
    assert rc == 2 and "--split tset: no binarized tset split" in err and "test" in err, err
    (tmp_path / "file").write_text("x")
    rc, err = run(tmp_path / "file", "--split", "valid")
    assert rc == 2 and "is a file, not a directory" in err, err
    assert not [p for p in (tmp_path / "c").rglob("*") if p.name != ".fairseq-kd.lock"]


# ---------------------------------------------------------------- 7. messages that name the fix


def test_directory_for_a_file_and_part_range_hint(tmp_path, capsys):
    from fairseq_kd.cli import cache, noise, score

    (tmp_path / "d").mkdir()
    rc, err = run_cli(noise.__name__, ["-i", str(tmp_path / "d"), "-o", str(tmp_path / "o.txt")], capsys)
    assert rc == 2 and "is a directory where a file" in err and "no such file" not in err, err
    rc, err = run_cli(noise.__name__, ["-i", str(tmp_path / "d"), "-o", str(tmp_path / "d" / "o.txt")], capsys)
    assert rc == 2 and err.count("fairseq-kd-noise") == 1, err  # the tool named once, not twice
    rc, err = run_cli(score.__name__, ["-r", str(tmp_path / "d"), "-i", str(tmp_path / "d")], capsys)
    assert rc == 2 and "is a directory where a file" in err, err
    rc, err = export([tmp_path / "d", tmp_path / "out"], capsys)
    assert rc == 2 and "is a directory where a file (checkpoint) is expected" in err, err
    rc, err = run_cli(noise.__name__, ["-i", "-", "--substitution", "0.1", "--vocab", str(tmp_path / "d")], capsys)
    assert rc == 2 and "is a directory where a file (vocabulary file)" in err, err
    rc, err = run_cli(cache.__name__, ["data", "--teacher-path", "t.pt", "--out-dir", "c", "--part", "2/2"], capsys)
    assert rc == 2 and "I counts from 0, so with N = 2 the parts are 0/2, 1/2" in err, err


@pytest.mark.integration
def test_teacher_dictionary_refusal_names_real_files_and_topk_above_cache_is_refused(tiny_teacher, tmp_path, capsys):
    from fairseq_kd.cli import cache
    from fairseq_kd.errors import KDInputError
    from tests import helpers
    from tests.test_reliability_silent import swap_dictionary_symbols

    data = tmp_path / "bin"
    shutil.copytree(tiny_teacher.data_bin, data)
    swap_dictionary_symbols(data)
    unnamed = checkpoint_with_task(tiny_teacher.checkpoint, tmp_path / "t.pt", source_lang=None, target_lang=None)
    with pytest.raises(KDInputError, match=r"teacher dictionary \S+/dict\.src\.txt") as err:
        helpers.build_components(data, ["--criterion", "label_smoothed_cross_entropy", "--teacher-path", str(unnamed)])
    assert "dict.None.txt" not in str(err.value)
    out = tmp_path / "cache"
    assert run_cli(cache.__name__, [str(tiny_teacher.data_bin), "--teacher-path", str(tiny_teacher.checkpoint),
                                    "--out-dir", str(out), "--split", "train", "--topk", "4", "--no-progress"]) == 0
    extra = ["--teacher-cache", str(out), "--criterion", "word_kd", "--kd-alpha", "0.5", "--kd-topk", "6",
             "--max-update", "1"]
    with pytest.raises(KDInputError, match="--kd-topk 6 exceeds the 4 tokens per position"):
        helpers.train(tiny_teacher.data_bin, tmp_path / "student", task="kd_translation", max_epoch=1, extra=extra)
