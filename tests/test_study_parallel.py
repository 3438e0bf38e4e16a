"""fairseq-kd-study --jobs: cells side by side give what one at a time gives (parallel.py)."""
import csv
import os
import threading
import time
from pathlib import Path

import pytest

from fairseq_kd import study as S
from fairseq_kd.cli import study as study_cli
from fairseq_kd.errors import KDInputError
from fairseq_kd.study import parallel
from fairseq_kd.study import runner as runner_mod
from tests import helpers
from tests.test_study import TINY_TRAIN_ARGS


def test_threads_per_job_splits_the_budget_and_keeps_one():
    assert parallel.threads_per_job(2, 2) == 1
    assert parallel.threads_per_job(2, 8) == 4
    assert parallel.threads_per_job(3, 8) == 2
    assert parallel.threads_per_job(4, 2) == 1  # never zero threads


def test_total_threads_reads_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert parallel.total_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")  # not a count: the CPUs this process may use
    assert parallel.total_threads() == len(os.sched_getaffinity(0))


def test_run_all_runs_every_item_and_at_most_jobs_at_once():
    lock, now, peak, seen = threading.Lock(), [0], [0], []

    def one(i):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.05)
        with lock:
            now[0] -= 1
            seen.append(i)

    assert parallel.run_all(list(range(7)), one, str, 3, False, False) == []
    assert sorted(seen) == list(range(7)) and peak[0] == 3


def test_run_all_keep_going_reports_every_failure():
    def one(i):
        if i % 2:
            raise RuntimeError(f"cell {i} broke\nsecond line")

    failed = parallel.run_all(list(range(5)), one, lambda i: f"c{i}", 2, True, False)
    assert sorted(failed, key=lambda f: f["cell"]) == [{"cell": "c1", "error": "cell 1 broke"},
                                                       {"cell": "c3", "error": "cell 3 broke"}]


def test_run_all_without_keep_going_starts_nothing_after_a_failure_and_raises_it():
    started = []

    def one(i):
        started.append(i)
        if i == 0:
            raise RuntimeError("first cell broke")
        time.sleep(0.2)

    with pytest.raises(RuntimeError, match="first cell broke"):
        parallel.run_all(list(range(6)), one, str, 2, False, False)
    assert sorted(started) == [0, 1]  # cell 1 was running (it finished); 2.. never started


def test_jobs_refused_in_process_and_with_several_ranks(tmp_path):
    args = ["--data", str(tmp_path), "-s", "de", "-t", "en", "--test-ref", "r", "--out-dir", str(tmp_path / "o"),
            "--jobs", "2", "--in-process"]
    with pytest.raises(KDInputError, match="drop --in-process"):
        study_cli.check_options(study_cli.get_parser().parse_args(args))
    with pytest.raises(KDInputError, match="--jobs"):
        study_cli.check_options(study_cli.get_parser().parse_args(args[:-3] + ["--jobs", "0"]))
    (tmp_path / "dict.de.txt").write_text("a 1\n")
    (tmp_path / "dict.en.txt").write_text("a 1\n")
    cfg = S.StudyConfig(data=str(tmp_path), out_dir=str(tmp_path / "o"), test_ref="r", source_lang="de",
                        target_lang="en", jobs=2, nprocs=2)
    with pytest.raises(KDInputError, match="one-process CPU cells"):
        cfg.validate()
    assert "jobs" not in S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="s", target_lang="t",
                                       jobs=2).settings_fingerprint()  # a resume may change it


@pytest.mark.integration
def test_two_jobs_give_the_rows_of_one_job_side_by_side(tiny_teacher, tmp_path, monkeypatch):
    """word (teacher cache) and seq (distilled corpus): serial in process on one thread, then --jobs 2
    as subprocesses of one thread each. Same rows but train_time, in grid order; each shared input
    built once, with every thread; the two trainings overlapped in time."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    base = dict(data=str(tiny_teacher.data_bin), test_ref=str(tiny_teacher.raw / "test.tgt"), source_lang="src",
                target_lang="tgt", teacher=str(tiny_teacher.checkpoint), methods=["word", "seq"],
                decodings=["greedy"], lrs=[0.005], seeds=[1], max_update=12, warmup_updates=4,
                validate_interval_updates=6, max_tokens=1000, beam=1, bpe="none", train_args=TINY_TRAIN_ARGS,
                cache_topk=4, cache_methods=["word"])
    serial = S.Study(S.StudyConfig(out_dir=str(tmp_path / "serial"), **base), runner=S.run_inprocess)
    one = helpers.run_study_one_thread(serial)
    assert one["ran"] == 2 and not one["failed"]

    calls = []  # (tool, threads, start, end)
    real = runner_mod.run_logged

    def recording(cmd, log_path, threads=0):
        t0 = time.monotonic()
        real(cmd, log_path, threads=threads)
        calls.append((Path(cmd[0]).name, threads, t0, time.monotonic()))

    monkeypatch.setattr(runner_mod, "run_logged", recording)
    side = S.Study(S.StudyConfig(out_dir=str(tmp_path / "jobs2"), jobs=2, **base), runner=recording)
    two = side.run(progress=False)
    assert two["ran"] == 2 and not two["failed"]

    def rows(path):
        return [{k: v for k, v in r.items() if k != "train_time"} for r in csv.DictReader(open(path))]

    assert rows(two["results"]) == rows(one["results"])  # same numbers, same (grid) order
    assert rows(two["curves"]) == rows(one["curves"])
    assert [r["method"] for r in rows(two["results"])] == ["word", "seq"]
    inputs = [(tool, threads) for tool, threads, *_ in calls if tool in ("fairseq-kd-cache", "fairseq-kd-distill")]
    assert sorted(inputs) == [("fairseq-kd-cache", 2), ("fairseq-kd-distill", 2)]  # once each, every thread
    trains = [(t0, t1) for tool, threads, t0, t1 in calls if tool == "fairseq-train" and threads == 1]
    assert len(trains) == 2
    (a0, a1), (b0, b1) = trains
    assert a0 < b1 and b0 < a1  # side by side


def test_rows_end_in_grid_order_and_a_failed_cell_does_not_stop_the_others(tmp_path, monkeypatch):
    """Fake tools (no fairseq): the first cell trains slowest, so the others are recorded before it; one
    cell fails. With --keep-going every other cell is recorded, and the files end in grid order."""
    from tests.test_study import fake_runner, make_cfg

    raw = helpers.make_synthetic_corpus(tmp_path / "raw", n_train=20, n_valid=5, n_test=6)
    corpus = (raw, helpers.preprocess(raw, tmp_path / "bin"))
    cfg = make_cfg(corpus, tmp_path / "study", seeds=[1, 2], jobs=2, keep_going=True)
    grid = S.build_grid(cfg)
    launched, threads = [], []
    fake = fake_runner(launched)
    fake.ref = cfg.test_ref

    def runner(cmd, log_path, threads_=None, **kw):
        threads.append(kw.get("threads", threads_))
        if Path(cmd[0]).name == "fairseq-train":
            save = cmd[cmd.index("--save-dir") + 1]
            if grid[0].slug() in save:
                time.sleep(1.0)  # the first cell finishes last
            if grid[2].slug() in save:
                raise RuntimeError("fairseq-train failed (exit 1)")
        fake(cmd, log_path)

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(runner_mod, "run_logged", runner)
    summary = S.Study(cfg, runner=runner).run(progress=False)
    assert summary["failed"] == [{"cell": grid[2].slug(), "error": "fairseq-train failed (exit 1)"}]
    order = [c.key() for c in grid if c is not grid[2]]
    assert [S.row_key(r) for r in csv.DictReader(open(summary["results"]))] == order
    assert [S.row_key(r) for r in csv.DictReader(open(summary["curves"]))][::2] == order  # two points per cell
    assert set(threads) == {1}  # no shared inputs here: every tool ran as a cell's, on one thread
