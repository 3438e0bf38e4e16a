"""docs/results/tools/export_converged.sh's per-cell curves: a cell with no validation yet has no curve (one
exported before, an earlier run's, is removed, saying so); any other failure of log_curve.py stops the export
with log_curve's message, where it used to be taken for "no validation yet" (stderr to /dev/null) and the old
curve kept."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers

pytestmark = pytest.mark.integration
EXPORT = helpers.REPO / "docs" / "results" / "tools" / "export_converged.sh"
CE = "students_1m_laneG2"  # the script's default --ce-study


def _log(path: Path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"2026-12-06 10:00:00,000 | INFO | valid | {json.dumps(r)}\n" for r in records))


OLD = "model,code_commit,updates,valid_bleu_greedy,valid_loss\nCE 1.3M lr 0.003 seed 2 (partial),abc1234,500,12.0,4.0\n"


def _export(root: Path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(EXPORT), "--out-root", str(root / "out"), "--results", str(root / "res"),
                           "--commits", str(root / "commits.csv"), "--stage", "1", "--stop-stage", "1"],
                          capture_output=True, text=True, env=env, timeout=300)


def _root(tmp_path):
    (tmp_path / "commits.csv").write_text(f"study,code_commit\n{CE},abc1234\n")
    (tmp_path / "res").mkdir()
    return tmp_path / "out" / CE / "cells", tmp_path / "res"


def test_a_cell_without_validations_has_no_curve_and_an_earlier_one_goes(tmp_path):
    cells, res = _root(tmp_path)
    _log(cells / "none_noise0_t_nodec_lr0.003_seed1" / "train.log",
         [{"valid_loss": "5.0", "valid_bleu": "10.0", "valid_num_updates": "500"}])
    _log(cells / "none_noise0_t_nodec_lr0.003_seed2" / "train.log", [])  # restarted: no validation yet
    (cells / "none_noise0_t_nodec_lr0.003_seed3").mkdir()  # not started: no train.log
    for seed in (2, 3):  # curves an earlier export wrote from the cells' earlier runs
        (res / f"converged_none_seed{seed}_curve.csv").write_text(OLD)
    done = _export(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (res / "converged_none_seed1_curve.csv").read_text().splitlines()[1].startswith("CE 1.3M lr 0.003 seed 1 (")
    assert not (res / "converged_none_seed2_curve.csv").exists() and not (res / "converged_none_seed3_curve.csv").exists()
    assert f"{res}/converged_none_seed2_curve.csv: removed, " in done.stderr


def test_any_other_log_curve_failure_stops_the_export_with_its_message(tmp_path):
    """A validation record without its loss: log_curve.py fails (KeyError), which is not "no validation yet"."""
    cells, res = _root(tmp_path)
    _log(cells / "none_noise0_t_nodec_lr0.003_seed2" / "train.log", [{"valid_bleu": "9.0", "valid_num_updates": "500"}])
    (res / "converged_none_seed2_curve.csv").write_text(OLD)
    failed = _export(tmp_path)
    assert failed.returncode == 1
    assert "log_curve.py failed on" in failed.stderr and "seed2/train.log" in failed.stderr
    assert "KeyError: 'valid_loss'" in failed.stderr  # log_curve's own message
