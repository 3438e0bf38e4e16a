"""Running a study: each cell trained, decoded with every test search, scored and recorded.

Each cell, through the real command-line tools (subprocesses by default, so a cell is
exactly what a user would run by hand; ``run_inprocess`` calls the same entry points in
this process, after ``world.fresh_world()``):

1. data: the prepared corpus, or for offline ``seq`` the distilled corpus that
   ``fairseq-kd-distill`` builds once per (decoding strategy, teacher), shared by all cells;
2. ``fairseq-train --user-dir fairseq_kd --task kd_translation`` (``commands.train_command``);
   validation loss and greedy BLEU (``--eval-bleu``) every ``validate_interval_updates``;
3. ``fairseq-generate`` of ``checkpoint_last.pt`` (the fixed budget) on the test split with
   each test search (beam ``cfg.beam``, greedy), hypotheses restored to input order;
4. sacrebleu BLEU / chrF against the raw reference (``fairseq_kd.scoring``);
5. one row per search in ``results.csv`` and the validation curve in ``curves.csv``.

Resume: a (cell, search) already in ``results.csv`` is skipped; inside a cell, finished
steps are skipped (``train.json``, ``hyp.<search>.txt``) and fairseq-train itself resumes
from ``checkpoint_last.pt``. ``study.json`` records the settings that change results, and
a resume with different ones is refused (they would mix incomparable rows).
"""
import contextlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

from fairseq_kd import fileio, guard
from fairseq_kd.errors import KDInputError
from fairseq_kd.study import commands as C
from fairseq_kd.study.config import (CURVE_FIELDS, KEY_FIELDS, RESULT_FIELDS, Cell, StudyConfig, method_base, method_spec,
                                     build_grid, row_key, teacher_name)
from fairseq_kd.study.logs import parse_generate, parse_train_log
from fairseq_kd.study.records import read_csv, replace_rows_atomic
from fairseq_kd.study.world import fresh_world, kept_threads

logger = logging.getLogger("fairseq_kd.study")

Runner = Callable[..., None]  # (cmd, log_path)


def run_logged(cmd: List[str], log_path: str) -> None:
    """Run ``cmd``, appending its stdout+stderr to ``log_path``; raise naming the log on failure."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ {shlex.join(cmd)}\n")
        log.flush()
        code = guard.run_child(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)  # dies with the study
    if code != 0:
        tail = "\n".join(fileio.split_lines(Path(log_path).read_text(encoding="utf-8", errors="replace"))[-15:])
        raise RuntimeError(f"{os.path.basename(cmd[0])} failed (exit {code}); log: {log_path}\n{tail}")


def _tool_main(tool: str, argv: List[str]) -> None:
    if tool in ("fairseq-train", "fairseq-generate"):
        from fairseq import options
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        if tool == "fairseq-train":
            from fairseq_cli.train import main
            parser = options.get_training_parser()
        else:
            from fairseq_cli.generate import main
            parser = options.get_generation_parser()
        main(convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv)))
    elif tool == "fairseq-kd-distill":
        from fairseq_kd.cli.distill import main

        main(argv)
    else:
        raise KDInputError(f"no in-process entry point for {tool}")


def run_inprocess(cmd: List[str], log_path: str) -> None:
    """Same as ``run_logged`` but calls the tool's Python entry point in this process.

    Saves the interpreter start-up and imports of every subprocess (seconds per call on a
    small CPU); used by the tests and by ``fairseq-kd-study --in-process``. The process-wide
    state fairseq keeps between calls is reset first (``world.fresh_world``), so a cell
    gives what it gives alone. Log lines go to ``log_path`` in fairseq's format.
    """
    tool, argv = os.path.basename(cmd[0]), cmd[1:]
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    quieted = [(h, h.level) for h in root.handlers]
    for h, level in quieted:  # the tool's INFO lines go to the log file only
        h.setLevel(max(level, logging.WARNING))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    fresh_world()
    try:
        with open(log_path, "a", encoding="utf-8") as out, contextlib.redirect_stdout(out), kept_threads():
            out.write(f"\n$ {shlex.join(cmd)}\n")
            out.flush()
            _tool_main(tool, argv)
    except SystemExit as e:
        if e.code not in (0, None):
            raise RuntimeError(f"{tool} failed (exit {e.code}); log: {log_path}") from None
    finally:
        root.removeHandler(handler)
        handler.close()
        for h, level in quieted:
            h.setLevel(level)
        root.setLevel(old_level)


def run_ranks(cmds: List[List[str]], log_path: str) -> None:
    """Training processes of one multi-process (CPU) run: rank r logs to ``log_path`` (r=0) or ``.rank<r>``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs, logs = [], []
    try:
        for rank, cmd in enumerate(cmds):
            path = log_path if rank == 0 else f"{log_path}.rank{rank}"
            log = open(path, "a", encoding="utf-8")
            logs.append(log)
            log.write(f"\n$ {shlex.join(cmd)}\n")
            log.flush()
            procs.append(guard.popen_child(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    if any(codes):
        raise RuntimeError(f"fairseq-train failed (exit codes {codes} by rank); logs: {log_path}[.rankN]")


class Study:
    """Runs the grid of a ``StudyConfig``; ``run()`` returns a summary dict."""

    def __init__(self, cfg: StudyConfig, runner: Runner = run_logged):
        self.cfg = cfg
        self.runner = runner
        self.out = Path(cfg.out_dir)
        self.results = str(self.out / "results.csv")
        self.curves = str(self.out / "curves.csv")
        self.launched: List[str] = []  # tool names launched (the resume test counts them)

    def preflight(self, cells: List[Cell]) -> None:
        """Fail before any work: bad paths, missing tools or criteria, changed settings."""
        self.cfg.validate()
        C.find_tool("fairseq-train")
        C.find_tool("fairseq-generate")
        if any(method_spec(c.method)["data"] == "distilled" for c in cells):
            C.find_tool("fairseq-kd-distill")
        C.check_criteria(self.cfg)
        self.out.mkdir(parents=True, exist_ok=True)
        settings = self.out / "study.json"
        current = json.loads(json.dumps(self.cfg.settings_fingerprint()))
        if settings.exists():
            previous = json.loads(settings.read_text())
            changed = sorted(k for k in set(previous) | set(current)
                             if k != "method_args" and previous.get(k) != current.get(k))
            changed += self._changed_method_args(previous.get("method_args", {}), current["method_args"])
            if changed:
                raise KDInputError(f"{settings} was written with different settings ({', '.join(changed)}): "
                                   f"resume with the same settings or use a new --out-dir")
            current["method_args"] = {**previous.get("method_args", {}), **current["method_args"]}
        fileio.atomic_write_json(settings, current)

    def _changed_method_args(self, previous: Dict[str, str], current: Dict[str, str]) -> List[str]:
        """Per-method flags may be added for a method with no finished cell (a new method or
        variant joins the study); flags of a method that has results must stay as they were."""
        trained = {r["method"] for r in read_csv(self.results)}
        trained |= {method_base(m) for m in trained}
        return [f"method_args[{m}]" for m in sorted(set(previous) | set(current))
                if previous.get(m) != current.get(m) and (m in previous or m in trained)
                and (m in current or m in set(self.cfg.methods))]

    def done(self) -> set:
        default = self.cfg.test_searches()[0][0]
        return {(*row_key(r), r.get("search") or default) for r in read_csv(self.results)}

    def run(self, progress: bool = True) -> Dict:
        from tqdm import tqdm

        cells = build_grid(self.cfg)
        self.preflight(cells)
        done = self.done()
        searches = [name for name, _ in self.cfg.test_searches()]
        todo = [c for c in cells if any((*c.key(), s) not in done for s in searches)]
        logger.info("study: %d cells, %d already in %s, %d to run", len(cells), len(cells) - len(todo),
                    self.results, len(todo))
        failed = []
        for cell in tqdm(todo, desc="study cells", disable=not progress, file=sys.stderr):
            try:
                self.run_cell(cell)
            except Exception as err:  # noqa: BLE001  (reported, study continues with --keep-going)
                logger.error("cell %s failed: %s", cell.slug(), err)
                failed.append({"cell": cell.slug(), "error": str(err).splitlines()[0]})
                if not self.cfg.keep_going:
                    raise
        return {"cells": len(cells), "skipped": len(cells) - len(todo), "ran": len(todo) - len(failed),
                "failed": failed, "results": self.results, "curves": self.curves}

    def distilled_data(self, decoding: str, teacher: str) -> str:
        """Build (once) the distilled corpus for ``decoding`` and ``teacher``; returns its binarized dir."""
        out = self.out / "distilled" / decoding
        if teacher != self.cfg.teacher:
            out = out / teacher_name(teacher).replace("/", "-")
        done = out / "bin" / f"dict.{self.cfg.target_lang}.txt"
        if not (done.exists() and (out / "summary.json").exists()):
            out.mkdir(parents=True, exist_ok=True)
            logger.info("distilling the training set with %s decoding into %s", decoding, out)
            self.launched.append("fairseq-kd-distill")
            self.runner(C.distill_command(self.cfg, decoding, str(out), teacher), str(out.parent / f"{decoding}.log"))
        return str(out / "bin")

    def train(self, cell: Cell, data: str, save_dir: str, log: str) -> None:
        self.launched.append("fairseq-train")
        if self.cfg.nprocs == 1 or self.cfg.resolved_device() == "cuda":  # one command (fairseq spawns on GPU)
            self.runner(C.train_command(self.cfg, cell, data, save_dir, 0, C.free_port()), log)
        else:
            port = C.free_port()
            run_ranks([C.train_command(self.cfg, cell, data, save_dir, r, port) for r in range(self.cfg.nprocs)],
                      log)

    def run_cell(self, cell: Cell) -> List[Dict]:
        cfg = self.cfg
        cdir = self.out / "cells" / cell.slug()
        cdir.mkdir(parents=True, exist_ok=True)
        spec = method_spec(cell.method)
        teacher = C.cell_teacher(cfg, cell)
        data = self.distilled_data(cell.decoding, teacher) if spec["data"] == "distilled" else cfg.data

        # 1. train (skipped when train.json exists; fairseq resumes from checkpoint_last.pt)
        train_json = cdir / "train.json"
        if not train_json.exists():
            log = cdir / "train.log"
            t0 = time.time()
            self.train(cell, data, str(cdir / "checkpoints"), str(log))
            info = parse_train_log(log.read_text(encoding="utf-8", errors="replace"))
            info["train_time"] = round(time.time() - t0, 2)
            if info["parameters"] is None:
                raise RuntimeError(f"no parameter count in {log}: did fairseq-train start?")
            fileio.atomic_write_json(train_json, info)
        info = json.loads(train_json.read_text())
        ckpt = cdir / "checkpoints" / "checkpoint_last.pt"

        from fairseq_kd import scoring

        key = dict(zip(KEY_FIELDS, cell.key()))
        rows = []
        for search, beam in cfg.test_searches():
            # 2. decode the test split (skipped when the hypotheses exist)
            hyp_path = cdir / f"hyp.{search}.txt"
            if not hyp_path.exists():
                log = cdir / f"generate.{search}.log"
                self.launched.append("fairseq-generate")
                self.runner(C.generate_command(cfg, cfg.data, str(ckpt), beam), str(log))
                fileio.atomic_write_lines(hyp_path, parse_generate(log.read_text(encoding="utf-8",
                                                                                 errors="replace")))
            # 3. score
            score = scoring.score_files(str(hyp_path), [cfg.test_ref])
            fileio.atomic_write_json(cdir / f"score.{search}.json", score)
            rows.append({**key, "search": search, "parameters": info["parameters"],
                         "bleu": round(score["bleu"]["score"], 2), "chrf": round(score["chrf"]["score"], 2),
                         "tok_bleu": round(score["tok_bleu"]["score"], 2), "signature": score["bleu"]["signature"],
                         "train_time": info["train_time"], "updates": info["updates"], "cell": cell.slug(),
                         "hyp": os.path.relpath(hyp_path, self.out)})
        # 4. record: curves first, so a kill between the two writes leaves the cell unrecorded
        # and it reruns (its curve rows are replaced, not duplicated)
        curve_rows = [{**key, "updates": n, "valid_bleu": p.get("valid_bleu", ""), "valid_loss": p["valid_loss"]}
                      for n, p in info["curve"]]
        replace_rows_atomic(self.curves, lambda r: row_key(r) == cell.key(), curve_rows, CURVE_FIELDS)
        searches = {r["search"] for r in rows}
        replace_rows_atomic(self.results, lambda r: row_key(r) == cell.key() and r.get("search") in searches, rows,
                            RESULT_FIELDS)
        for row in rows:
            logger.info("cell %s (%s): BLEU %.2f chrF %.2f (%s params, %s updates, %.0fs)", cell.slug(),
                        row["search"], row["bleu"], row["chrf"], row["parameters"], row["updates"],
                        row["train_time"])
        return rows
