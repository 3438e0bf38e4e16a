"""docs/results/tools/choose_on_valid.py: the candidate a queue goes on with, from hand-written
validation curves whose last and best points are known."""
import csv
import json

import pytest

from tests.helpers import load_results_tool

tool = load_results_tool("choose_on_valid")


def _cell(study, name, curve, finished=True):
    """A study cell whose train.log holds fairseq JSON valid records for ``curve`` [(updates, bleu, loss)]."""
    cell = study / "cells" / name
    cell.mkdir(parents=True)
    lines = ["2026-12-06 10:00:00,000 | INFO | fairseq_cli.train | begin training"]
    for k, (n, bleu, loss) in enumerate(curve):
        rec = {"epoch": k + 1, "valid_loss": str(loss), "valid_bleu": str(bleu), "valid_num_updates": str(n)}
        lines.append(f"2026-12-06 10:0{k}:00,000 | INFO | valid | {json.dumps(rec)}")
    (cell / "train.log").write_text("\n".join(lines) + "\n")
    results = study / "results.csv"
    rows = list(csv.DictReader(results.open())) if results.exists() else []
    if finished:
        rows.append({"method": name.split("_")[0], "cell": name})
    with results.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "cell"])
        w.writeheader()
        w.writerows(rows)
    return cell


@pytest.fixture
def study(tmp_path):
    s = tmp_path / "onpolicy_laneU"
    # a peaks at 500 and falls back; b ends highest, its best tied between 500 and 750 (the later is kept)
    a = _cell(s, "a_seed1", [(250, 30.0, 4.0), (500, 35.0, 3.2), (750, 34.0, 3.3)])
    b = _cell(s, "b_seed1", [(250, 31.0, 3.9), (500, 34.5, 3.1), (750, 34.5, 3.0)])
    return s, a, b


def run(capsys, *argv):
    rc = tool.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_last_and_best_choose_differently(study, capsys, tmp_path):
    _, a, b = study
    rc, out, _ = run(capsys, "--at", "last", "--json", tmp_path / "c.json", f"a={a}", f"b={b}")
    assert rc == 0 and out.rstrip().endswith("choice: b")
    rec = json.loads((tmp_path / "c.json").read_text())
    assert rec["choice"] == "b" and not rec["tie"]
    assert [(c["label"], c["updates"], c["value"]) for c in rec["candidates"]] == [("a", 750, 34.0), ("b", 750, 34.5)]
    rc, out, _ = run(capsys, "--at", "best", f"a={a}", f"b={b}")
    assert rc == 0 and out.rstrip().endswith("choice: a")
    assert "| a | 35.00 | 500 |" in out and "| b | 34.50 | 750 |" in out  # b's tie kept at the later update


def test_loss_is_minimised(study, capsys):
    _, a, b = study
    rc, out, _ = run(capsys, "--at", "best", "--metric", "loss", f"a={a}", f"b={b}/train.log")
    assert rc == 0 and out.rstrip().endswith("choice: b") and "| b | 3.00 | 750 |" in out


def test_print_choice_gives_the_label_alone(study, capsys):
    _, a, b = study
    rc, out, err = run(capsys, "--at", "last", "--print-choice", f"a={a}", f"b={b}")
    assert rc == 0 and out == "b\n" and "choice: b" in err


def test_an_exact_tie_goes_to_the_first_named_and_says_so(study, capsys):
    s, a, _ = study
    twin = _cell(s, "c_seed1", [(250, 1.0, 9.0), (750, 34.0, 9.0)])
    rc, out, _ = run(capsys, "--at", "last", f"c={twin}", f"a={a}")
    assert rc == 0 and "choice: c (an exact tie, broken by the order given)" in out


def test_a_run_not_in_results_is_refused_naming_it(study, capsys):
    s, a, _ = study
    going = _cell(s, "d_seed1", [(250, 50.0, 1.0)], finished=False)
    rc, _, err = run(capsys, "--at", "last", f"a={a}", f"d={going}")
    assert rc == 1 and "d_seed1 is not in" in err and "has not finished" in err
    rc, out, _ = run(capsys, "--at", "last", "--allow-unfinished", f"a={a}", f"d={going}")
    assert rc == 0 and out.rstrip().endswith("choice: d")


def test_bad_specs(study, capsys, tmp_path):
    _, a, _ = study
    assert run(capsys, "--at", "last", str(a))[0] == 1            # no LABEL=
    rc, _, err = run(capsys, "--at", "last", f"x={tmp_path / 'nope'}")
    assert rc == 1 and "nope/train.log not found" in err
    with pytest.raises(SystemExit) as e:
        tool.main(["--at", "last", f"a={a}", f"a={a}"])
    assert e.value.code == 2
