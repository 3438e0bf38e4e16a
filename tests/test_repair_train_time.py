"""docs/results/tools/repair_train_time.py: a resumed cell's train_time from fairseq's checkpoint time."""
import csv
import json
import os
import time

import pytest
import torch

from fairseq_kd.errors import KDInputError
from tests.helpers import load_results_tool

repair = load_results_tool("repair_train_time")
FIELDS = "method,noise,arch,decoding,lr,seed,teacher,search,parameters,bleu,chrf,tok_bleu,signature,train_time,"\
         "updates,best_update,stop,cell,hyp"


def slug(seed):
    return f"none_noise0_a_nodec_lr0.1_seed{seed}"  # the cell name fairseq-kd-study gives these columns


RESUMED, FRESH, NEW = slug(1), slug(2), slug(3)


def _cell(study, name, recorded, checkpoint_s, new_runner=False):
    cell = study / "cells" / name
    (cell / "checkpoints").mkdir(parents=True)
    info = {"parameters": 10, "updates": 4, "best_update": 4, "train_time": recorded, "curve": []}
    if new_runner:
        info["earlier_segments_s"] = 0.0
    (cell / "train.json").write_text(json.dumps(info))
    torch.save({"extra_state": {"previous_training_time": checkpoint_s}}, cell / "checkpoints" / "checkpoint_last.pt")
    (cell / "train.log").write_text("")
    os.utime(cell / "train.log", (time.time() - 3600, time.time() - 3600))  # an hour old: not running


def _row(cell, t):
    return {**dict.fromkeys(FIELDS.split(","), ""), "method": "none", "noise": "0", "arch": "a", "decoding": "-",
            "lr": "0.1", "seed": cell[-1], "teacher": "-", "search": "beam5", "parameters": "10", "bleu": "1.0",
            "chrf": "1.0", "tok_bleu": "1.0", "signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0",
            "train_time": t, "updates": "4", "best_update": "4", "stop": "patience", "cell": cell, "hyp": f"cells/{cell}/hyp.beam5.txt"}


def _write(path, rows, fields):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def test_only_cells_that_missed_segments_get_the_checkpoint_time(tmp_path, capsys):
    """resumed: recorded 100 s, checkpoint 900 s -> 900; fresh: recorded 50 (start-up included) > 40 -> kept;
    new: written by a runner that already adds the segments -> kept. The study's results and a copy with
    other columns get the same times; nothing else in them changes."""
    study = tmp_path / "study"
    _cell(study, RESUMED, 100.0, 900.0)
    _cell(study, FRESH, 50.0, 40.0)
    _cell(study, NEW, 30.0, 900.0, new_runner=True)
    (study / "study.json").write_text(json.dumps({"patience": 8, "validate_interval_updates": 250, "max_update": 9}))
    rows = [_row(RESUMED, "100.0"), _row(FRESH, "50.0"), _row(NEW, "30.0")]
    _write(study / "results.csv", rows, FIELDS.split(","))
    copy = tmp_path / "copy.csv"
    _write(copy, [{**r, "code_commit": "abc"} for r in rows], FIELDS.split(",") + ["code_commit"])

    assert repair.main([str(study)]) == 0  # dry run: prints, writes nothing
    assert f"{RESUMED}\trecorded 100 s\tcheckpoint 900 s" in capsys.readouterr().out
    assert json.loads((study / "cells" / RESUMED / "train.json").read_text())["train_time"] == 100.0

    assert repair.main([str(study), "--write", "--copy-to", str(copy)]) == 0
    info = json.loads((study / "cells" / RESUMED / "train.json").read_text())
    assert (info["train_time"], info["train_time_last_segment"]) == (900.0, 100.0)
    for table in (study / "results.csv", copy):
        got = list(csv.DictReader(open(table)))
        assert [(r["cell"], float(r["train_time"])) for r in got] == [(RESUMED, 900.0), (FRESH, 50.0), (NEW, 30.0)]
    assert [r["code_commit"] for r in csv.DictReader(open(copy))] == ["abc"] * 3
    assert repair.repairs(str(study)) == []  # repaired: a second run finds nothing (time > recorded no more)


def test_a_running_study_is_refused(tmp_path):
    study = tmp_path / "study"
    _cell(study, RESUMED, 100.0, 900.0)
    os.utime(study / "cells" / RESUMED / "train.log")  # written just now
    (study / "cells" / RESUMED / "train.json").unlink()  # still training
    (study / "study.json").write_text(json.dumps({"patience": 8, "validate_interval_updates": 250, "max_update": 9}))
    with pytest.raises(KDInputError, match=f"{RESUMED} still running"):
        repair.main([str(study), "--write"])
    with pytest.raises(SystemExit):
        repair.main([str(study), str(study), "--copy-to", str(study / "study.json")])
