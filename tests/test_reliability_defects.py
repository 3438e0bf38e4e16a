"""Defects of a hostile probe: data loss, teachers trained in the other direction, stuck states
(full disks: test_reliability_disk.py; silent wrong results, tracebacks and weak messages:
test_reliability_refusals.py).

Truths: the bytes of every file that must survive, the language pair stored in a checkpoint,
the bytes of a first complete build, the exit code and one-line message of each refusal.
"""
import os
import shutil
from pathlib import Path

import pytest

from tests.reliability_helpers import run_cli

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
    pytest.importorskip("ctranslate2")
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
    pytest.importorskip("ctranslate2")
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
