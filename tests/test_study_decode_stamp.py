"""fairseq-kd-study's decode stamps (fairseq_kd/study/stamps.py): on resume a hypothesis file is reused only when
the stamp beside it says it was decoded as this run decodes (generate flags, commands.DECODE_VERSION, the split's
data, the checkpoint); a file decoded otherwise, or with no stamp (older code), is decoded again and its rows
replaced, recorded cells included, with one row per cell, split and search at every point of an interrupted run."""
import csv
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import sacrebleu

from fairseq_kd import study as S
from fairseq_kd.errors import KDInputError
from fairseq_kd.study import commands as C
from tests import helpers
from tests.test_study import TRAIN_LOG, make_cfg


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Tiny corpus binarized with two test splits (test, test1: the same sentences)."""
    root = tmp_path_factory.mktemp("stamp_corpus")
    raw = helpers.make_synthetic_corpus(root / "raw", n_train=200, n_valid=20, n_test=30)
    shutil.copy(raw / "test.tgt", raw / "test1.tgt")
    data = helpers.preprocess(raw, root / "bin", splits=("train", "valid"),
                              extra=["--testpref", f"{raw / 'test'},{raw / 'test'}"])
    return raw, data


def fake_tools(launched, ref):
    """fairseq-train writes a log and a checkpoint; fairseq-generate writes H- lines (out of order) that are
    ``run.output(reference line)``: a test changes ``output`` to tell a new decoding from an old one."""
    def run(cmd, log_path):
        tool = os.path.basename(cmd[0])
        launched.append(tool)
        if tool == "fairseq-train":
            save = Path(cmd[cmd.index("--save-dir") + 1])
            save.mkdir(parents=True, exist_ok=True)
            (save / "checkpoint_last.pt").write_bytes(b"x")
            Path(log_path).write_text(TRAIN_LOG)
        elif tool == "fairseq-generate":
            lines = Path(ref).read_text().splitlines()
            Path(log_path).write_text("".join(f"H-{i}\t-0.5\t{run.output(lines[i])}\n"
                                              for i in reversed(range(len(lines)))))
    run.output = lambda line: line
    return run


def setup(corpus, tmp_path, **kw):
    """A finished 2-cell study (noise 0 and 0.3) decoded on test and test1; (cfg, launched, runner)."""
    raw, _ = corpus
    cfg = make_cfg(corpus, tmp_path / "study", extra_tests=[("test1", str(raw / "test1.tgt"))], **kw)
    launched = []
    runner = fake_tools(launched, cfg.test_ref)
    summary = S.Study(cfg, runner=runner).run(progress=False)
    assert summary["ran"] == 2 and not summary["failed"]
    assert launched == ["fairseq-train", "fairseq-generate", "fairseq-generate"] * 2
    launched.clear()
    return cfg, launched, runner


def rows(cfg, name="results.csv"):
    with open(Path(cfg.out_dir) / name, newline="") as f:
        return list(csv.DictReader(f))


def cell_dirs(cfg):
    return [Path(cfg.out_dir) / "cells" / c.slug() for c in S.build_grid(cfg)]


def check_rows_are_their_files(cfg, name="results.csv"):
    """One row per cell and search, in grid order, each scoring the hypothesis file it names."""
    got = rows(cfg, name)
    assert [r["cell"] for r in got] == [d.name for d in cell_dirs(cfg)]
    for r in got:
        hyps = (Path(cfg.out_dir) / r["hyp"]).read_text().splitlines()
        assert float(r["bleu"]) == round(sacrebleu.corpus_bleu(hyps, [Path(cfg.test_ref).read_text().splitlines()])
                                         .score, 2)
    return got


def test_hypotheses_are_stamped_and_an_unchanged_resume_decodes_nothing(corpus, tmp_path):
    cfg, launched, runner = setup(corpus, tmp_path)
    first, cell = cell_dirs(cfg)[0], S.build_grid(cfg)[0]
    for name in ("hyp.beam1.stamp.json", "hyp.test1.beam1.stamp.json"):
        stamp = json.loads((first / name).read_text())
        assert stamp["version"] == C.DECODE_VERSION
        args = stamp["generate_args"]
        assert (args["--task"], args["--beam"], args["--max-len-a"], args["--max-len-b"]) == ("kd_translation", "1",
                                                                                              "1.2", "10")
        assert args["--gen-subset"] == ("test" if name.startswith("hyp.beam1") else "test1")
        assert "--path" not in args and "--cpu" not in args and stamp["hardware"] == {"--cpu": ""}
        assert stamp["checkpoint"]["sha256"] == hashlib.sha256(b"x").hexdigest()
        assert stamp["checkpoint"]["file"] == "checkpoint_last.pt"
        assert all(stamp["data"].values()) and set(stamp["data"]) >= {"dict.src.txt", "dict.tgt.txt"}
    assert cell.slug() == first.name

    assert S.Study(cfg, runner=runner).run(progress=False)["skipped"] == 2 and launched == []
    before = {n: (Path(cfg.out_dir) / n).read_text() for n in ("results.csv", "results.test1.csv")}
    for n in before:  # rows lost (a results file deleted): the cells score their stamped files again, unchanged
        (Path(cfg.out_dir) / n).unlink()
    assert S.Study(cfg, runner=runner).run(progress=False)["ran"] == 2 and launched == []
    assert {n: (Path(cfg.out_dir) / n).read_text() for n in before} == before


def test_hypotheses_without_a_stamp_are_decoded_again_and_their_rows_replaced(corpus, tmp_path, caplog):
    """Files decoded by code before the stamps (e.g. before 8394f95, the batch's length limit) are not reused on
    resume: every recorded row of theirs is decoded again and replaced in place."""
    cfg, launched, runner = setup(corpus, tmp_path)
    for d in cell_dirs(cfg):
        for stamp in d.glob("hyp.*.stamp.json"):
            stamp.unlink()
    runner.output = lambda line: line + " zz"  # this code decodes otherwise
    with caplog.at_level(logging.WARNING):
        summary = S.Study(cfg, runner=runner).run(progress=False)
    assert summary["ran"] == 2 and launched == ["fairseq-generate"] * 4  # decoded again, not trained again
    for name in ("results.csv", "results.test1.csv"):
        got = check_rows_are_their_files(cfg, name)
        assert all(float(r["bleu"]) < 100 for r in got)
    for d in cell_dirs(cfg):
        assert all(line.endswith(" zz") for line in (d / "hyp.beam1.txt").read_text().splitlines())
        assert (d / "hyp.beam1.stamp.json").exists() and (d / "hyp.test1.beam1.stamp.json").exists()
    assert "no decode stamp" in caplog.text and f"{cell_dirs(cfg)[1].name}/hyp.beam1.txt" in caplog.text
    launched.clear()
    assert S.Study(cfg, runner=runner).run(progress=False)["ran"] == 0 and launched == []


def _edit_stamp(key, value):
    def edit(stamp_file, ckpt):
        stamp = json.loads(stamp_file.read_text())
        if key == "version":
            stamp["version"] = value
        else:
            stamp["generate_args"][key] = value
        stamp_file.write_text(json.dumps(stamp))
    return edit


def _new_checkpoint(stamp_file, ckpt):
    ckpt.write_bytes(b"y")


@pytest.mark.parametrize("change, says", [
    (_edit_stamp("--task", "translation"), "--task translation -> kd_translation"),
    (_edit_stamp("version", 1), "decode version 1 -> 2"),
    (_edit_stamp("--lenpen", "0.6"), "--lenpen 0.6 -> (not given)"),
    (_edit_stamp("--beam", "4"), "--beam 4 -> 1"),
    (_new_checkpoint, "checkpoint_last.pt is not the checkpoint decoded"),
])
def test_a_file_decoded_otherwise_is_decoded_again_and_only_its_row_replaced(corpus, tmp_path, caplog, change, says):
    cfg, launched, runner = setup(corpus, tmp_path)
    untouched, changed = cell_dirs(cfg)
    before = {n: rows(cfg, n) for n in ("results.csv", "results.test1.csv")}
    change(changed / "hyp.test1.beam1.stamp.json", changed / "checkpoints" / "checkpoint_last.pt")
    runner.output = lambda line: "zz " + line
    with caplog.at_level(logging.WARNING):
        S.Study(cfg, runner=runner).run(progress=False)
    assert says in caplog.text and f"{changed.name}/hyp.test1.beam1.txt" in caplog.text
    if change is _new_checkpoint:  # another checkpoint: both splits' files were decoded from the old one
        assert launched == ["fairseq-generate"] * 2
    else:
        assert launched == ["fairseq-generate"]
        assert rows(cfg) == before["results.csv"]  # the main split's file was decoded as this run decodes
    after = check_rows_are_their_files(cfg, "results.test1.csv")
    assert after[0] == before["results.test1.csv"][0] and after[1] != before["results.test1.csv"][1]
    assert (changed / "hyp.test1.beam1.txt").read_text().startswith("zz ")
    assert not (untouched / "hyp.test1.beam1.txt").read_text().startswith("zz ")
    launched.clear()
    assert S.Study(cfg, runner=runner).run(progress=False)["ran"] == 0 and launched == []


def test_a_new_decode_version_decodes_every_file_again(corpus, tmp_path, monkeypatch):
    """A code change that bumps commands.DECODE_VERSION (as 8394f95's length limit would have)."""
    cfg, launched, runner = setup(corpus, tmp_path)
    monkeypatch.setattr(C, "DECODE_VERSION", C.DECODE_VERSION + 1)
    runner.output = lambda line: "zz " + line
    assert S.Study(cfg, runner=runner).run(progress=False)["ran"] == 2 and launched == ["fairseq-generate"] * 4
    for name in ("results.csv", "results.test1.csv"):
        assert all(float(r["bleu"]) < 100 for r in check_rows_are_their_files(cfg, name))


@pytest.mark.parametrize("kill_at", ["generate", "stamp", "score"])
def test_a_redecode_killed_at_any_step_resumes_with_one_row_per_cell(corpus, tmp_path, monkeypatch, kill_at):
    """Killed while decoding a recorded cell's stale file again: the other rows stay, the stale row is gone
    (never the old row beside a new file, never two rows); the resume ends with the new decoding's rows."""
    from fairseq_kd import scoring
    from fairseq_kd.study import stamps

    cfg, launched, runner = setup(corpus, tmp_path)
    untouched, changed = cell_dirs(cfg)
    before = rows(cfg)
    (changed / "hyp.beam1.stamp.json").unlink()
    runner.output = lambda line: "zz " + line

    def killed(*args, **kw):
        raise RuntimeError("killed")
    real_score = scoring.score_files

    def killed_scoring_the_new_file(hyp, refs):  # (test1's file, stamped as this run's, is scored before)
        return killed() if hyp.endswith(f"{changed.name}/hyp.beam1.txt") else real_score(hyp, refs)
    if kill_at == "generate":
        real = runner.output
        runner.output = killed
    elif kill_at == "stamp":
        monkeypatch.setattr(stamps, "write_stamp", killed)
    else:
        monkeypatch.setattr(scoring, "score_files", killed_scoring_the_new_file)
    with pytest.raises(RuntimeError, match="killed"):
        S.Study(cfg, runner=runner).run(progress=False)
    assert rows(cfg) == before[:1]  # the stale row went before its file was decoded again; the other stays
    assert [r["cell"] for r in rows(cfg, "results.test1.csv")] == [untouched.name, changed.name]
    monkeypatch.undo()
    if kill_at == "generate":
        runner.output = real
    launched.clear()
    S.Study(cfg, runner=runner).run(progress=False)
    # killed after the new file and its stamp were written, the resume scores that file without decoding it
    assert launched == ([] if kill_at == "score" else ["fairseq-generate"])
    got = check_rows_are_their_files(cfg)
    assert got[0] == before[0] and float(got[1]["bleu"]) < 100
    assert len(rows(cfg, "results.test1.csv")) == 2


def test_a_recorded_row_that_cannot_be_decoded_again_is_refused_before_any_work(corpus, tmp_path):
    cfg, launched, runner = setup(corpus, tmp_path)
    first, second = cell_dirs(cfg)
    (first / "checkpoints" / "checkpoint_last.pt").unlink()  # gone, but its files' stamps match: kept
    assert S.Study(cfg, runner=runner).run(progress=False)["ran"] == 0 and launched == []
    (first / "hyp.beam1.stamp.json").unlink()
    bigger = make_cfg(corpus, cfg.out_dir, seeds=[1, 2], extra_tests=cfg.extra_tests)
    with pytest.raises(KDInputError, match=rf"cells/{first.name}/hyp.beam1.txt \(no decode stamp .*; no "
                                           r"checkpoint_last.pt\).*restore the cell's checkpoints"):
        S.Study(bigger, runner=runner).run(progress=False)
    assert launched == []  # refused before the new seed's cells trained


def test_changes_name_what_differs():
    from fairseq_kd.study.stamps import changes, command_flags, decode_stamp

    assert command_flags(["data", "--beam=5", "--cpu", "--x", "a", "b", "--x", "c"]) == {
        "args": "data", "--beam": "5", "--cpu": "", "--x": "a b c"}
    base = ["fairseq-generate", "DATA", "--path", "a.pt", "--user-dir", "U", "--beam", "5", "--num-workers", "0"]
    stamp = decode_stamp(base + ["--cpu"], {"dict.de.txt": "d" * 64})
    same = decode_stamp(["/other/fairseq-generate", "ELSEWHERE", "--path", "b.pt", "--user-dir", "V", "--beam=5",
                         "--num-workers", "4"], {"dict.de.txt": "d" * 64})
    missing = Path("/nonexistent/checkpoint.pt")  # a checkpoint that is gone is not compared
    assert changes(stamp, same, missing) == []  # paths, workers and the device are not what is decoded
    other = decode_stamp(base + ["--fp16", "--lenpen", "0.6"], {"dict.de.txt": "e" * 64})
    assert changes(stamp, other, missing) == ["--fp16 (not given) -> (given)", "--lenpen (not given) -> 0.6",
                                             "dict.de.txt dddddddddddd -> eeeeeeeeeeee (sha256)"]
    assert "no decode stamp" in changes(None, stamp, missing)[0]
    assert "unreadable" in changes({"unreadable": "x"}, stamp, missing)[0]


@pytest.mark.integration
def test_real_decoding_is_stamped_and_decoded_again_when_its_stamp_differs(corpus, tmp_path):
    """Real fairseq-train / fairseq-generate (in-process), one cell: the stamp names kd_translation and the
    checkpoint's bytes; an unchanged resume runs nothing; a stamp of another version decodes the same file again."""
    from fairseq_kd.fingerprint import file_sha256

    cfg = make_cfg(corpus, tmp_path / "study", noise=[0.0], max_update=10, validate_interval_updates=5)
    study = S.Study(cfg, runner=S.run_inprocess)
    assert helpers.run_study_one_thread(study)["ran"] == 1
    cell = cell_dirs(cfg)[0]
    stamp = json.loads((cell / "hyp.beam1.stamp.json").read_text())
    assert stamp["generate_args"]["--task"] == "kd_translation" and stamp["version"] == C.DECODE_VERSION
    assert stamp["checkpoint"]["sha256"] == file_sha256(str(cell / "checkpoints" / "checkpoint_last.pt"))
    hyps, before = (cell / "hyp.beam1.txt").read_text(), rows(cfg)
    again = S.Study(cfg, runner=S.run_inprocess)
    assert helpers.run_study_one_thread(again)["ran"] == 0 and again.launched == []
    stamp["version"] = C.DECODE_VERSION - 1
    (cell / "hyp.beam1.stamp.json").write_text(json.dumps(stamp))
    redo = S.Study(cfg, runner=S.run_inprocess)
    assert helpers.run_study_one_thread(redo)["ran"] == 1 and redo.launched == ["fairseq-generate"]
    assert (cell / "hyp.beam1.txt").read_text() == hyps and rows(cfg) == before
    assert json.loads((cell / "hyp.beam1.stamp.json").read_text())["version"] == C.DECODE_VERSION
