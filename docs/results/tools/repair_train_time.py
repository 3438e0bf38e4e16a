"""Give a finished study's resumed cells the training time of all their segments.

Before 2026-12-06 (the commit that added ``earlier_segments_s`` to ``train.json``) a cell's
``train_time`` was the wall time of the fairseq-train run that finished it: a cell resumed across sessions
recorded its last segment only. fairseq keeps the sum of every segment in the checkpoint
(``extra_state["previous_training_time"]``, ``fairseq_kd.study.runner.own_seconds``; a
``--student-init`` study's initial checkpoint's time is taken off). For each cell
whose ``train.json`` has no ``earlier_segments_s`` and whose ``checkpoint_last.pt`` holds more time than
was recorded (so the record missed earlier segments; a one-segment run records more, its start-up
included), this prints both and, with ``--write``, puts the checkpoint's time in ``train.json``
(``train_time``, the old value kept as ``train_time_last_segment``) and in the cell's rows of
``results.csv`` and ``results.<split>.csv``. A study with a cell training or decoding is refused (its
lane rewrites those files). ``--copy-to`` names tables copied from the study (docs/results/*.csv, any
columns) whose rows of those cells get the same time: one study per call then, as two studies can share a
cell name.

    python docs/results/tools/repair_train_time.py exp/converged/teacher_d0.3 [--write]
    python docs/results/tools/repair_train_time.py exp/converged/students_1m_laneG --write \
        --copy-to docs/results/converged_ce_1m.csv docs/results/converged_ce_1m.test1.csv
"""
import argparse
import csv
import glob
import os
import sys
from pathlib import Path

from fairseq_kd import fileio, integrity
from fairseq_kd.errors import KDInputError
from fairseq_kd.study.config import RESULT_FIELDS
from fairseq_kd.study.records import read_csv, write_csv_atomic
from fairseq_kd.study.runner import own_seconds
from fairseq_kd.study.status import cell_state, study_status


def repairs(study: str):
    """(cell, recorded s, checkpoint s) of every cell whose record missed earlier segments."""
    busy = [r["cell"] for r in study_status(study) if cell_state(r) in ("training", "decoding")]
    if busy:
        raise KDInputError(f"{study}: {', '.join(busy)} still running (log written in the last 15 min); "
                           f"repair after the lane has stopped")
    settings = integrity.load_json(os.path.join(study, "study.json"), "re-run fairseq-kd-study to rewrite it")
    init = settings.get("student_init") or ""
    if init and not os.path.isfile(init):
        raise KDInputError(f"{study}: its students start from {init}, not found from here; run the tool from the "
                           f"directory the study ran in (that checkpoint's time is taken off each cell's)")
    out = []
    for train_json in sorted(glob.glob(os.path.join(study, "cells", "*", "train.json"))):
        cell = Path(train_json).parent
        info = integrity.load_json(train_json, f"delete {train_json} to read the training again (the study resumes from the cell's checkpoint)")
        if "earlier_segments_s" in info:  # written by a runner that already adds them
            continue
        total = own_seconds(cell / "checkpoints" / "checkpoint_last.pt", init)
        if total > float(info["train_time"]):
            out.append((cell.name, float(info["train_time"]), round(total, 2)))
    return out


def retime(table: str, new, fields=None) -> None:
    """Rewrite ``table`` with the new train_time of the cells in ``new``: a study's own results file
    (``fields``: read through the integrity checks) or a copy of it with any columns."""
    if fields:
        rows = read_csv(table)
    else:
        with open(table, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows, fields = list(reader), reader.fieldnames or []
        if not {"cell", "train_time"} <= set(fields):
            raise KDInputError(f"{table}: no cell and train_time columns; pass a copy of a study's results")
    if any(r.get("cell") in new for r in rows):
        write_csv_atomic(table, [{**r, "train_time": new.get(r["cell"], r["train_time"])} for r in rows], fields)


def write(study: str, fixes, copies=()) -> None:
    new = {cell: total for cell, _, total in fixes}
    for cell, recorded, total in fixes:
        path = os.path.join(study, "cells", cell, "train.json")
        info = integrity.load_json(path, f"delete {path} to read the training again (the study resumes from the cell's checkpoint)")
        info.update(train_time=total, train_time_last_segment=recorded)
        fileio.atomic_write_json(Path(path), info)
    for table in sorted(glob.glob(os.path.join(study, "results*.csv"))):
        retime(table, new, RESULT_FIELDS)
    for table in copies:
        retime(table, new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("studies", nargs="+", help="fairseq-kd-study out-dirs, none of them running")
    ap.add_argument("--write", action="store_true", help="rewrite train.json and the results rows (else: print)")
    ap.add_argument("--copy-to", nargs="+", default=[], metavar="CSV",
                    help="tables copied from the (one) study whose rows of the repaired cells get the new time")
    args = ap.parse_args(argv)
    if args.copy_to and len(args.studies) != 1:
        ap.error("--copy-to takes one study (two studies can share a cell name)")
    missing = [t for t in args.copy_to if not os.path.isfile(t)]
    if missing:
        ap.error(f"--copy-to: no such file: {', '.join(missing)}")
    for study in args.studies:  # a KDInputError prints as one line and exits 2 (fairseq_kd.errors)
        fixes = repairs(study)
        for cell, recorded, total in fixes:
            print(f"{study}\t{cell}\trecorded {recorded:.0f} s\tcheckpoint {total:.0f} s")
        if args.write and fixes:
            write(study, fixes, args.copy_to)
    return 0


if __name__ == "__main__":
    sys.exit(main())
