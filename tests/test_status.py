"""fairseq-kd-status: a study's cells read from its files (fairseq's patience rule replayed by hand)."""
import json
import os

import pytest

from fairseq_kd.cli import status as cli
from fairseq_kd.study import status as St


def log_line(tag, record):
    return f"2026-01-01 | INFO | {tag} | {json.dumps(record)}\n"


def write_cell(root, name, bleus, interval=250, ups="1.5", trained=False):
    cell = root / "cells" / name
    cell.mkdir(parents=True)
    text = ""
    for i, b in enumerate(bleus, start=1):
        n = i * interval
        text += log_line("train_inner", {"num_updates": str(n), "loss": "4.0", "ups": ups})
        text += log_line("valid", {"valid_loss": "3.9", "valid_bleu": str(b), "valid_num_updates": str(n)})
    (cell / "train.log").write_text(text)
    if trained:
        (cell / "train.json").write_text("{}")
    return cell


@pytest.fixture
def study(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"patience": 4, "validate_interval_updates": 250,
                                                     "max_update": 3000, "best_metric": "bleu"}))
    (tmp_path / "results.csv").write_text("method,noise,arch,decoding,lr,seed,parameters,bleu,chrf,cell\n"
                                          "none,0,a,-,0.003,1,10,30,50,none_noise0_a_nodec_lr0.003_seed1\n")
    write_cell(tmp_path, "none_noise0_a_nodec_lr0.003_seed1", [10, 20, 30], trained=True)
    # best 31 @1,000; 30 @1,250 and the tie 31 @1,500 do not reset the count: 2 of 4 used
    write_cell(tmp_path, "running", [10, 20, 25, 31, 30, 31])
    write_cell(tmp_path, "near_cap", [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 96])  # 2,750; the cap is 3,000
    return tmp_path


def test_patience_count_is_fairseqs():
    assert St.count_since_best([]) == (None, 0)
    assert St.count_since_best([(1, 10.0), (2, 30.0), (3, 29.0), (4, 30.0)]) == ((2, 30.0), 2)  # a tie counts
    assert St.count_since_best([(1, 5.0), (2, 4.0), (3, 4.5)], maximize=False) == ((2, 4.0), 1)


def test_cells_state_counts_and_stop(study):
    rows = {r["cell"]: r for r in St.study_status(str(study), now=os.path.getmtime(study / "cells" / "running" / "train.log") + 60)}
    done, run, cap = rows["none_noise0_a_nodec_lr0.003_seed1"], rows["running"], rows["near_cap"]
    assert done["recorded"] and St.cell_state(done) == "done"
    assert run["updates"] == 1500 and run["last"] == (1500, 31.0) and run["best"] == (1000, 31.0)
    assert run["since_best"] == 2 and run["stops_by"] == 1500 + (4 - 2) * 250 and run["ups"] == 1.5
    assert St.cell_state(run) == "training" and run["log_age_s"] == 60
    assert cap["stops_by"] == 3000  # 2,750 + 4 x 250 would pass the cap
    assert run["min_left_s"] == round(500 / 1.5) and cap["min_left_s"] == round(250 / 1.5)  # updates left / ups
    assert done["min_left_s"] is None  # trained: nothing left to train
    stale = St.study_status(str(study), now=os.path.getmtime(study / "cells" / "running" / "train.log") + 3600)
    assert St.cell_state(next(r for r in stale if r["cell"] == "running")) == "stopped"


def test_cli_table_json_and_refusal(study, tmp_path_factory, capsys):
    assert cli.cli_main([str(study)]) == 0
    out = capsys.readouterr().out
    assert "| running | training | 1,500 | 31.00 @1,500 | 31.00 @1,000 | 2 | 2,000 | 5 min | 1.5 |" in out
    assert cli.cli_main([str(study), "--json"]) == 0
    assert {r["cell"] for r in json.loads(capsys.readouterr().out)[str(study)]} == {"none_noise0_a_nodec_lr0.003_seed1", "running", "near_cap"}
    empty = tmp_path_factory.mktemp("empty")
    assert cli.cli_main([str(empty)]) == 2
    assert "no study.json; pass a fairseq-kd-study --out-dir" in capsys.readouterr().err
