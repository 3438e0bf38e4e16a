"""docs/results/tools/curve_means.py: seed-averaged validation curves and the differences between methods.

Truths: hand-written curves whose means and differences are computed by hand."""
import json

import pytest

from tests.helpers import load_results_tool

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tool():
    return load_results_tool("curve_means")


def write(path, points, header="model,code_commit,updates,valid_bleu_greedy,valid_loss"):
    path.write_text(header + "\n" + "".join(f"m,c,{u},{b},4.0\n" for u, b in points))
    return str(path)


def test_means_differences_and_the_common_cutoff(tool, tmp_path, capsys):
    write(tmp_path / "a_seed1.csv", [(500, 10.0), (1000, 20.0), (1500, 30.0)])
    write(tmp_path / "a_seed2.csv", [(500, 12.0), (1000, 22.0)])  # stopped at 1,000
    write(tmp_path / "b_seed1.csv", [(500, 11.0), (1000, 25.0), (1500, 26.0)])
    out_json = tmp_path / "rows.json"
    assert tool.main([f"A={tmp_path}/a_seed*.csv", f"B={tmp_path}/b_seed*.csv", "--diff", "B-A", "--every", "500",
                      "--json", str(out_json)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| updates | A (2 seeds) | B (1 seed) | B - A |"
    # no 1,500 row: A's seed 2 stopped at 1,000
    assert lines[2:] == ["| 500 | 11.00 | 11.00 | +0.00 |", "| 1,000 | 21.00 | 25.00 | +4.00 |"]
    rows = json.loads(out_json.read_text())
    assert rows[1]["A"] == [21.0, 2] and rows[1]["B-A"] == 4.0


def test_until_goes_on_with_fewer_seeds_and_says_so(tool, tmp_path, capsys):
    write(tmp_path / "a_seed1.csv", [(500, 10.0), (1000, 20.0), (1500, 30.0)])
    write(tmp_path / "a_seed2.csv", [(500, 12.0), (1000, 22.0)])
    assert tool.main([f"A={tmp_path}/a_seed*.csv", "--every", "1000", "--until", "2000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == ["| 1,000 | 21.00 |"]  # multiples of 1,000 only; 2,000 reached by no seed
    assert tool.main([f"A={tmp_path}/a_seed*.csv", "--every", "500", "--until", "1500"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "| 1,500 | 30.00 (1) |"


def test_figure_is_written(tool, tmp_path):
    write(tmp_path / "a_seed1.csv", [(500, 10.0), (1000, 20.0)])
    png = tmp_path / "m.png"
    assert tool.main([f"A={tmp_path}/a_seed1.csv", "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["A=/nonexistent/*.csv"], "matches no file"),
    (["A"], "write NAME=GLOB"),
    (["A={d}/bad.csv"], "missing column(s) valid_bleu_greedy"),
    (["A={d}/a.csv", "--diff", "A-C"], "--diff"),
    (["A={d}/nan.csv"], "nan.csv:2"),
])
def test_refusals_name_the_problem(tool, tmp_path, capsys, args, message):
    write(tmp_path / "a.csv", [(500, 10.0)])
    (tmp_path / "bad.csv").write_text("updates,bleu\n500,1\n")
    (tmp_path / "nan.csv").write_text("updates,valid_bleu_greedy\nx,1\n")
    with pytest.raises(SystemExit) as e:
        tool.main([a.format(d=tmp_path) for a in args])
    assert message in str(e.value) + capsys.readouterr().err


def test_a_file_two_patterns_match_is_refused_not_counted_twice(tool, tmp_path, capsys):
    write(tmp_path / "ce_seed1.csv", [(500, 20.0)])
    write(tmp_path / "ce_seed2.csv", [(500, 30.0)])
    with pytest.raises(SystemExit) as e:
        tool.main([f"CE={tmp_path}/ce_seed*.csv,{tmp_path}/ce_seed1.csv"])
    assert str(e.value) == (f"curve_means: CE: {tmp_path}/ce_seed1.csv is named twice (also as "
                            f"{tmp_path}/ce_seed1.csv); give each seed's curve once per method")
    # another spelling of the same file (a relative ../ path) is the same file
    (tmp_path / "sub").mkdir()
    with pytest.raises(SystemExit) as e:
        tool.main([f"CE={tmp_path}/ce_seed1.csv,{tmp_path}/sub/../ce_seed1.csv"])
    assert str(e.value).startswith(f"curve_means: CE: {tmp_path}/sub/../ce_seed1.csv is named twice")
    # each once: two seeds, mean 25
    assert tool.main([f"CE={tmp_path}/ce_seed*.csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0::2] == ["| updates | CE (2 seeds) |", "| 500 | 25.00 |"]


def test_the_same_file_under_two_methods_is_allowed(tool, tmp_path, capsys):
    write(tmp_path / "ce_seed1.csv", [(500, 20.0)])
    assert tool.main([f"A={tmp_path}/ce_seed1.csv", f"B={tmp_path}/ce_seed1.csv", "--diff", "A-B"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == "| 500 | 20.00 | 20.00 | +0.00 |"
