"""Cells side by side: ``fairseq-kd-study --jobs N`` trains N cells at once, each tool with T / N threads.

A small student gains less than 2x from a second core (the main job's 1.3M student: 1.6x on the
2-core AMD machine), so there two one-thread students finish sooner than the same two one after the
other with two threads each (1.20x; ``bench/parallel_cells.sh`` prints the ratio). What keeps it safe:

* the inputs several cells share (distilled corpus, noisy copies, teacher caches) are built first,
  one at a time and with every thread (``Study.cell_inputs``), so no two cells build one input;
* a cell writes only its own folder; ``results.csv`` / ``curves.csv`` are rewritten under one lock
  as each cell finishes (a finished cell is on disk at once) and put back in grid order at the end,
  so the files hold what a one-at-a-time run writes (``train_time`` aside);
* every tool runs as a subprocess (``processes.run_logged``): fairseq's process-wide state rules out
  two in-process cells, and a worker thread lives until all cells are done, so the parent-death
  signal of ``guard.popen_child`` (tied to the forking thread) only fires when the study dies.
"""
import logging
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable, Dict, List, Sequence, TypeVar

logger = logging.getLogger("fairseq_kd.study")
T = TypeVar("T")


def total_threads() -> int:
    """The thread budget of this study: ``OMP_NUM_THREADS`` when set (scripts/main.sh sets it), else the CPUs
    this process may run on (its affinity mask, which a container or ``taskset`` may narrow)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int, total: int) -> int:
    """Threads for each of ``jobs`` cells sharing ``total`` (at least one)."""
    return max(1, total // jobs)


def run_all(items: Sequence[T], run_one: Callable[[T], object], name: Callable[[T], str], jobs: int,
            keep_going: bool, progress: bool) -> List[Dict[str, str]]:
    """Run ``run_one`` on every item, ``jobs`` at a time (1: in this thread, in order).

    Returns ``[{"cell": name(item), "error": first line}]`` for the items that raised. Without
    ``keep_going`` the first failure stops new items from starting, waits for the running ones
    (their cells finish and are recorded) and is raised."""
    from tqdm import tqdm

    failed: List[Dict[str, str]] = []

    def note(item: T, err: BaseException) -> None:
        logger.error("cell %s failed: %s", name(item), err)
        failed.append({"cell": name(item), "error": str(err).splitlines()[0] if str(err) else type(err).__name__})

    bar = tqdm(total=len(items), desc="study cells", disable=not progress, file=sys.stderr)
    try:
        if jobs == 1:
            for item in items:
                try:
                    run_one(item)
                except Exception as err:  # noqa: BLE001  (reported; the study continues with --keep-going)
                    note(item, err)
                    if not keep_going:
                        raise
                bar.update()
            return failed
        first_error = None
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cell") as pool:
            waiting = list(items)
            running = {}
            while waiting or running:
                while waiting and len(running) < jobs and first_error is None:
                    item = waiting.pop(0)
                    running[pool.submit(run_one, item)] = item
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    item = running.pop(future)
                    err = future.exception()
                    if err is not None:
                        note(item, err)
                        if not keep_going and first_error is None:
                            first_error = err
                    bar.update()
        if first_error is not None:
            raise first_error
        return failed
    finally:
        bar.close()
