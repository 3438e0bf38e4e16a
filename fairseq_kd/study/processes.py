"""How a study runs one tool's command: a logged subprocess (the default: exactly what a user would
type), in this process after ``world.fresh_world()`` (``--in-process``: no interpreter start-up per
call), or one process per rank for CPU distributed training. Each appends to the cell's log and
raises with the log's tail when the tool fails.
"""
import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Callable, List

from fairseq_kd import fileio, guard
from fairseq_kd.errors import KDInputError
from fairseq_kd.study.logs import run_header
from fairseq_kd.study.world import fresh_world, kept_threads

Runner = Callable[..., None]  # (cmd, log_path)


def run_logged(cmd: List[str], log_path: str, threads: int = 0) -> None:
    """Run ``cmd``, appending its stdout+stderr to ``log_path``; raise naming the log on failure.
    ``threads``: the child's OpenMP / MKL threads (torch's intra-op threads); 0 keeps this process's."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(run_header(cmd))
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
    elif tool == "fairseq-kd-noise":
        from fairseq_kd.cli.noise import get_parser, run

        run(get_parser().parse_args(argv))
    elif tool == "fairseq-kd-cache":
        from fairseq_kd.cli.cache import get_parser, main

        main(get_parser().parse_args(argv))
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
            out.write(run_header(cmd))
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
            log.write(run_header(cmd))
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
