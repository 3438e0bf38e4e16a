"""Running a study: each cell trained, decoded with every test search, scored and recorded.

Each cell, through the real command-line tools (subprocesses by default, so a cell is
exactly what a user would run by hand; ``run_inprocess`` calls the same entry points in
this process, after ``world.fresh_world()``; both in ``processes``):

1. data: the prepared corpus, or for offline ``seq`` the distilled corpus that
   ``fairseq-kd-distill`` builds once per (decoding strategy, teacher[, noisy copies]), shared by
   all cells (``inputs.CellInputs``);
2. ``fairseq-train --user-dir fairseq_kd --task kd_translation`` (``commands.train_command``);
   validation loss and greedy BLEU (``--eval-bleu``) every ``validate_interval_updates``;
   with ``cfg.patience``, until the validation metric (greedy BLEU or loss) has not improved for that
   many validations, ``--max-update`` being the cap; cache methods read the teacher's top-k
   (``fairseq-kd-cache``, built once per data dir) instead of running it every step;
3. ``fairseq-generate`` of ``checkpoint_last.pt`` (the fixed budget) or ``checkpoint_best.pt``
   (with patience) on the test split with each test search (beam ``cfg.beam``, greedy),
   hypotheses restored to input order; likewise on every ``cfg.extra_tests`` split;
4. sacrebleu BLEU / chrF against the raw reference (``fairseq_kd.scoring``);
5. one row per search in ``results.csv`` (``results.<split>.csv`` for extra test sets: written
   first, so a recorded main row means the cell is complete) and the validation curve in
   ``curves.csv``; rows carry the updates trained, the best checkpoint's update and the stop rule.

Resume: a (cell, search) already in ``results.csv`` is skipped; inside a cell, finished
steps are skipped (``train.json``, ``hyp.<search>.txt``) and fairseq-train itself resumes
from ``checkpoint_last.pt`` (``train_time`` then adds the earlier segments fairseq timed in it).
A hypothesis file is reused only when the stamp beside it says it was decoded as this run decodes
(``stamps``: the generate flags, ``commands.DECODE_VERSION``, the split's data, the checkpoint); otherwise
it is decoded again, recorded rows included (``stale_recorded``), and its row replaced.
``study.json`` records the settings that change results, and a resume with different ones is
refused (they would mix incomparable rows); a teacher may join a study of teacher-free cells
(``resume.teacher_on_resume``); checkpoints (teacher, ``--student-init``, each of ``--teachers``) are
compared by content (``resume``).
"""
import contextlib
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

from fairseq_kd import fileio, guard, integrity
from fairseq_kd.errors import KDInputError
from fairseq_kd.study import commands as C
from fairseq_kd.study.inputs import CellInputs
from fairseq_kd.study.config import (CURVE_FIELDS, KEY_FIELDS, NO_DECODING, RESULT_FIELDS, Cell, StudyConfig,
                                     method_spec, build_grid, reads_noisy_copies, row_key)
from fairseq_kd.study.logs import parse_train_log
from fairseq_kd.study import resume
from fairseq_kd.study import parallel
from fairseq_kd.study.stamps import Decodes
from fairseq_kd.study.records import read_csv, replace_rows_atomic, sort_rows_atomic
from fairseq_kd.study.processes import Runner, run_inprocess, run_logged, run_ranks

logger = logging.getLogger("fairseq_kd.study")

class Study(CellInputs, Decodes):
    """Runs the grid of a ``StudyConfig``; ``run()`` returns a summary dict."""

    def __init__(self, cfg: StudyConfig, runner: Runner = run_logged):
        self.cfg = cfg
        self.runner = runner
        self.out = Path(cfg.out_dir)
        self.results = str(self.out / "results.csv")
        self.curves = str(self.out / "curves.csv")
        self.launched: List[str] = []  # tool names launched (the resume test counts them)
        self._record = threading.Lock()  # results.csv / curves.csv writes of cells run side by side

    def preflight(self, cells: List[Cell]) -> None:
        """Fail before any work: bad paths, missing tools or criteria, changed settings."""
        self.cfg.validate()
        C.find_tool("fairseq-train")
        C.find_tool("fairseq-generate")
        if any(method_spec(c.method)["data"] == "distilled" for c in cells):
            C.find_tool("fairseq-kd-distill")
        if any(reads_noisy_copies(c.method) for c in cells):
            C.find_tool("fairseq-kd-noise")
        if any(self.cfg.uses_cache(c) for c in cells):
            C.find_tool("fairseq-kd-cache")
        C.check_criteria(self.cfg)
        self.out.mkdir(parents=True, exist_ok=True)
        guard.remove_stale_temporaries(self.out)  # of results/curves/study.json writes killed midway
        settings = self.out / "study.json"
        recorded = {r["method"] for r in read_csv(self.results)}  # methods with a finished cell
        self.cfg, current = resume.reconcile(settings, self.cfg, recorded)
        fileio.atomic_write_json(settings, current)

    def done(self) -> set:
        """(cell key, search) recorded for the main test split and every ``--extra-test`` split (a split added
        on a resume decodes the finished cells too: its table must hold the same cells as the main one)."""
        default = self.cfg.test_searches()[0][0]
        recorded = lambda path: {(*row_key(r), r.get("search") or default) for r in read_csv(path)}  # noqa: E731
        out = recorded(self.results)
        for split, _ in self.cfg.extra_tests:
            out &= recorded(str(self.out / f"results.{split}.csv"))
        return out

    def run(self, progress: bool = True) -> Dict:
        self.preflight(build_grid(self.cfg))
        cells = build_grid(self.cfg)  # after preflight: a --teachers entry may have taken its recorded name
        done = self.done() - self.stale_recorded(cells)  # rows decoded otherwise: decoded again, rows replaced
        searches = [name for name, _ in self.cfg.test_searches()]
        todo = [c for c in cells if any((*c.key(), s) not in done for s in searches)]
        logger.info("study: %d cells, %d already in %s, %d to run", len(cells), len(cells) - len(todo),
                    self.results, len(todo))
        jobs = self.cfg.jobs
        if jobs == 1:
            failed = parallel.run_all(todo, self.run_cell, Cell.slug, 1, self.cfg.keep_going, progress)
        else:
            if self.runner is not run_logged:
                raise KDInputError(f"--jobs {jobs} runs each cell's tools as subprocesses: drop --in-process or --jobs")
            total = parallel.total_threads()
            try:
                with self._threads(total):  # shared inputs first, one at a time, every thread
                    failed = parallel.run_all(todo, self.cell_inputs, Cell.slug, 1, self.cfg.keep_going, False)
                broken = {f["cell"] for f in failed}
                ready = [c for c in todo if c.slug() not in broken]
                threads = parallel.threads_per_job(jobs, total)
                logger.info("study: %d cells at a time, %d thread(s) each", jobs, threads)
                with self._threads(threads):
                    failed += parallel.run_all(ready, self.run_cell, Cell.slug, jobs, self.cfg.keep_going, progress)
            finally:  # rows went in as cells finished: back to grid order
                self._grid_order(cells)
        return {"cells": len(cells), "skipped": len(cells) - len(todo), "ran": len(todo) - len(failed),
                "failed": failed, "results": self.results, "curves": self.curves}

    def _grid_order(self, cells: List[Cell]) -> None:
        place = {c.key(): i for i, c in enumerate(cells)}
        for path, fields in [*[(str(self.out / f"results.{s}.csv"), RESULT_FIELDS) for s, _ in self.cfg.extra_tests],
                             (self.curves, CURVE_FIELDS), (self.results, RESULT_FIELDS)]:
            sort_rows_atomic(path, lambda r: place.get(row_key(r), len(place)), fields)

    def train(self, cell: Cell, data: str, save_dir: str, log: str, cache: str = "") -> None:
        self.launched.append("fairseq-train")
        if self.cfg.nprocs == 1 or self.cfg.resolved_device() == "cuda":  # one command (fairseq spawns on GPU)
            # fairseq starts its N GPU workers from its command-line entry point only: called in this process,
            # it would train on one GPU while its log says N
            runner = run_logged if self.cfg.nprocs > 1 and self.runner is run_inprocess else self.runner
            runner(C.train_command(self.cfg, cell, data, save_dir, 0, C.free_port(), cache), log)
        else:
            port = C.free_port()
            run_ranks([C.train_command(self.cfg, cell, data, save_dir, r, port, cache)
                       for r in range(self.cfg.nprocs)], log)

    def cell_inputs(self, cell: Cell) -> Tuple[str, str]:
        """The cell's training data dir and teacher cache dir ("" if none), built once per study (``inputs``)."""
        teacher = cell.teacher if cell.teacher != NO_DECODING else self.cfg.teacher  # PATH or NAME=PATH
        noisy_source = cell.noise if reads_noisy_copies(cell.method) else None  # the teacher translated it
        distilled = method_spec(cell.method)["data"] == "distilled"
        data = self.distilled_data(cell.decoding, teacher, noisy_source) if distilled else self.cfg.data
        return data, (self.teacher_cache(data, teacher) if self.cfg.uses_cache(cell) else "")

    @contextlib.contextmanager
    def _threads(self, threads: int):
        """Meanwhile the runner's tools run as subprocesses with ``threads`` threads each."""
        runner = self.runner
        self.runner = functools.partial(run_logged, threads=threads)
        try:
            yield
        finally:
            self.runner = runner

    def run_cell(self, cell: Cell) -> List[Dict]:
        cfg = self.cfg
        cdir = self.out / "cells" / cell.slug()
        cdir.mkdir(parents=True, exist_ok=True)
        guard.remove_stale_temporaries(cdir)  # of hypothesis / score / train.json writes killed midway
        data, cache = self.cell_inputs(cell)

        # 1. train (skipped when train.json exists; fairseq resumes from checkpoint_last.pt)
        train_json = cdir / "train.json"
        if not train_json.exists():
            for old in [*cdir.glob("hyp.*.txt"), *cdir.glob("hyp.*.stamp.json"), *cdir.glob("score.*.json")]:
                # decoded from an earlier training
                old.unlink()  # (they are written only after train.json: this cell's training is not finished)
            log = cdir / "train.log"
            earlier = own_seconds(cdir / "checkpoints" / "checkpoint_last.pt", cfg.student_init)  # past segments
            t0 = time.time()
            self.train(cell, data, str(cdir / "checkpoints"), str(log), cache)
            info = parse_train_log(log.read_text(encoding="utf-8", errors="replace"))
            info["train_time"] = round(earlier + time.time() - t0, 2)
            info["earlier_segments_s"] = round(earlier, 2)
            info.update(stopping(info, cfg))
            if info["parameters"] is None:
                raise RuntimeError(f"no parameter count in {log}: did fairseq-train start?")
            fileio.atomic_write_json(train_json, info)
        info = integrity.load_json(str(train_json), f"delete {train_json} to read the training again (fairseq "
                                   f"resumes from checkpoints/checkpoint_last.pt; delete {cdir} to train from scratch)",
                                   counts=("updates", "best_update", "parameters"))

        key = dict(zip(KEY_FIELDS, cell.key()))
        # 2-3. decode and score the extra test sets, then the main one; record: curves first, extra test
        # sets next, the main results last, so a kill between writes leaves the cell unrecorded and it
        # reruns (its rows are replaced, not duplicated)
        extra = [(split, ref, self.out / f"results.{split}.csv") for split, ref in cfg.extra_tests]
        curve_rows = [{**key, "updates": n, "valid_bleu": p.get("valid_bleu", ""), "valid_loss": p["valid_loss"]}
                      for n, p in info["curve"]]
        with self._record:
            replace_rows_atomic(self.curves, lambda r: row_key(r) == cell.key(), curve_rows, CURVE_FIELDS)
        for split, ref, path in [*extra, (cfg.gen_subset, cfg.test_ref, self.results)]:
            rows = [{**key, **row} for row in self.decode_and_score(cell, cdir, info, split, ref)]
            searches = {r["search"] for r in rows}
            with self._record:
                replace_rows_atomic(path, lambda r: row_key(r) == cell.key() and r.get("search") in searches, rows,
                                    RESULT_FIELDS)
        for row in rows:
            logger.info("cell %s (%s): BLEU %.2f chrF %.2f (%s params, %s updates, best at %s, stop: %s, %.0fs)",
                        cell.slug(), row["search"], row["bleu"], row["chrf"], row["parameters"], row["updates"],
                        row["best_update"], row["stop"], row["train_time"])
        return rows

    def decode_and_score(self, cell: Cell, cdir: Path, info: Dict, split: str, ref: str) -> List[Dict]:
        """One row per test search of ``split`` (hypotheses and scores kept in the cell dir; a hypothesis file
        is decoded again unless its stamp says it was decoded as this run decodes: ``stamps``)."""
        from fairseq_kd import scoring

        cfg, rows = self.cfg, []
        tag = "" if split == cfg.gen_subset else f"{split}."  # the main test split keeps its old file names
        for search, beam in cfg.test_searches():
            hyp_path = self.decode(cell, split, search, beam)
            score = scoring.score_files(str(hyp_path), [ref])
            fileio.atomic_write_json(cdir / f"score.{tag}{search}.json", score)
            rows.append({"search": search, "parameters": info["parameters"],
                         "bleu": round(score["bleu"]["score"], 2), "chrf": round(score["chrf"]["score"], 2),
                         "tok_bleu": round(score["tok_bleu"]["score"], 2), "signature": score["bleu"]["signature"],
                         "train_time": info["train_time"], "updates": info["updates"],
                         "best_update": info.get("best_update", ""), "stop": info.get("stop", ""),
                         "cell": cell.slug(), "hyp": os.path.relpath(hyp_path, self.out)})
        return rows


def trained_seconds(checkpoint: Path) -> float:
    """The training time fairseq keeps in a checkpoint (``extra_state["previous_training_time"]``: its
    wall clock from the trainer's start to the save, summed over every resumed segment); 0 when there is
    no checkpoint or it cannot be read (fairseq-train, resuming from it, reports that itself)."""
    if not checkpoint.is_file():
        return 0.0
    import torch

    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=False, mmap=True)
        return float(state["extra_state"]["previous_training_time"])
    except Exception as e:  # noqa: BLE001 - a time is not worth failing a resume for
        logger.warning("%s: no training time in it (%s); the cell's train_time counts this segment only",
                       checkpoint, type(e).__name__)
        return 0.0


def own_seconds(checkpoint: Path, student_init: str = "") -> float:
    """A cell's own training time in its checkpoint: fairseq's ``--finetune-from-model`` carries the
    initial checkpoint's time into the student's, so a ``--student-init`` cell's is taken off."""
    total = trained_seconds(checkpoint)
    if total and student_init:
        total = max(0.0, total - trained_seconds(Path(os.path.abspath(student_init))))
    return total


def stopping(info: Dict, cfg: StudyConfig) -> Dict:
    """Why training ended and which validation the decoded checkpoint comes from.

    With patience: the last validation point that reached the best value (fairseq rewrites
    checkpoint_best.pt on ties, ``a >= best``, while its early stopping counts only strict improvements),
    and "patience" when training ended before the cap. Fixed budget: the last update."""
    if not cfg.patience:
        return {"best_update": info["updates"], "stop": "budget"}
    curve = [(n, p.get(f"valid_{cfg.best_metric}")) for n, p in info["curve"]]
    curve = [(n, v) for n, v in curve if v is not None]
    if not curve:
        raise RuntimeError(f"no validation {cfg.best_metric} in the training log: cannot tell the best checkpoint")
    sign = 1 if cfg.best_metric == "bleu" else -1
    best = max(curve, key=lambda nv: (sign * nv[1], nv[0]))[0]
    return {"best_update": best, "stop": "patience" if info["updates"] < cfg.max_update else "budget"}
