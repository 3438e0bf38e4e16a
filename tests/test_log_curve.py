"""docs/results/tools/log_curve.py: one cell's validation curve from its fairseq-train log(s); the segments of
one resumed training join, logs of two cells or two trainings are refused.

Truths: hand-written fairseq json log lines whose curves are known by construction."""
import json

import pytest

from tests.helpers import load_results_tool

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tool():
    return load_results_tool("log_curve")


def log(path, points):
    """A train.log of (updates, bleu, loss) validations, as fairseq --log-format json writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(
        f'2026-01-01 | INFO | valid | {json.dumps({"valid_loss": str(l), "valid_bleu": str(b), "valid_num_updates": str(n)})}\n'
        for n, b, l in points))
    return str(path)


def test_segments_of_one_resumed_cell_join_in_order(tool, tmp_path, capsys):
    cell = tmp_path / "cells" / "none_seed1"
    # the second segment repeats the validation at 500 (resumed from the checkpoint before it): same values
    first = log(cell / "train.log", [(250, 10.0, 6.0), (500, 20.0, 5.0)])
    second = log(cell / "train.2.log", [(500, 20.0, 5.0), (750, 25.0, 4.5)])
    assert tool.main([first, second, "--set", "model=CE"]) == 0
    assert capsys.readouterr().out == ("model,updates,valid_bleu_greedy,valid_loss\n"
                                       "CE,250,10.0,6.0\nCE,500,20.0,5.0\nCE,750,25.0,4.5\n")


def test_logs_of_two_cells_are_refused(tool, tmp_path, capsys):
    a = log(tmp_path / "cells" / "none_seed1" / "train.log", [(250, 10.0, 6.0)])
    b = log(tmp_path / "cells" / "none_seed2" / "train.log", [(500, 12.0, 5.5)])  # no shared update
    with pytest.raises(SystemExit) as e:
        tool.main([a, b])
    assert str(e.value) == (f"log_curve.py: {a} and {b} are in different folders (cells); pass the log(s) of "
                            f"one cell, e.g. cells/<cell>/train.log")
    assert capsys.readouterr().out == ""


def test_an_update_two_logs_record_differently_is_refused(tool, tmp_path, capsys):
    first = log(tmp_path / "a.log", [(250, 10.0, 6.0), (500, 20.0, 5.0)])
    second = log(tmp_path / "b.log", [(500, 15.0, 5.0), (750, 25.0, 4.5)])
    with pytest.raises(SystemExit) as e:
        tool.main([first, second])
    assert str(e.value) == (f"log_curve.py: update 500: {first} has {{'valid_loss': 5.0, 'valid_bleu': 20.0}} but "
                            f"{second} has {{'valid_loss': 5.0, 'valid_bleu': 15.0}}; these logs are not segments "
                            f"of one training: pass one cell's logs")
    assert capsys.readouterr().out == ""


def test_one_log_and_a_log_without_validations(tool, tmp_path, capsys):
    one = log(tmp_path / "train.log", [(250, 10.0, 6.0)])
    assert tool.main([one]) == 0
    assert capsys.readouterr().out == "updates,valid_bleu_greedy,valid_loss\n250,10.0,6.0\n"
    (tmp_path / "empty.log").write_text("nothing\n")
    assert tool.main([str(tmp_path / "empty.log")]) == 1
    assert capsys.readouterr().err == f"log_curve.py: no validation records in {tmp_path}/empty.log\n"
