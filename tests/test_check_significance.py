"""docs/results/tools/check_significance.py: every '*' and p of a markdown table agrees with its 95% interval.

Truths: hand-written rows whose interval clearly includes or excludes 0; the repository's own README.md
and docs/results.md must pass."""
from pathlib import Path

import pytest

from tests.helpers import load_results_tool

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool():
    return load_results_tool("check_significance")


HEAD = ("| method | search | BLEU | Δ BLEU vs none [95% CI] | p |\n|---|---|---:|---:|---:|\n"
        "| none | beam5 | 19.36 | | |\n")


def _check(tool, tmp_path, rows: str):
    md = tmp_path / "t.md"
    md.write_text("# t\n\n" + HEAD + rows)
    return tool.check_file(md)


def test_cells_are_read(tool):
    assert tool.parse_interval("+4.30 [+3.56, +5.11]") == (4.30, 3.56, 5.11, False, None)
    assert tool.parse_interval("**+7.66 [+6.91, +8.42]**")[:3] == (7.66, 6.91, 8.42)
    assert tool.parse_interval("**+2.19** [+1.70, +2.64]")[:3] == (2.19, 1.70, 2.64)
    assert tool.parse_interval("**+1.24 [+0.50, +2.02], 0.002**").p_text == "0.002"
    assert tool.parse_interval("\u22123.59 [\u22124.20, \u22123.00]")[:3] == (-3.59, -4.20, -3.00)
    assert tool.parse_interval("18.71 ± 1.32") is None and tool.parse_interval("") is None
    assert tool.parse_p("0.001*") == ("=", 0.001, True)
    assert tool.parse_p("<0.002*") == ("<", 0.002, True)
    assert tool.parse_p(">0.05") == (">", 0.05, False)
    assert tool.parse_p("0.109") == ("=", 0.109, False)
    assert tool.parse_p("significant") is None


@pytest.mark.parametrize("delta, p, problems", [
    ("+4.30 [+3.56, +5.11]", "0.001*", 0),      # excludes 0, starred, small p
    ("+4.11 [+3.49, +4.73]", "<0.002*", 0),
    ("-3.59 [-4.20, -3.00]", "0.001*", 0),      # a significant loss is starred too
    ("+0.67 [-0.40, +1.84]", "0.109", 0),       # includes 0, no star, large p
    ("+0.71 [-0.16, +1.60]", ">0.05", 0),
    ("+0.50 [+0.05, +0.92]", "0.050*", 0),      # the one test: p <= 0.05 exactly when the interval excludes 0
    ("+0.71 [-0.16, +1.60]", "0.049*", 2),      # star and p < 0.05 beside an interval covering 0
    ("+0.71 [-0.16, +1.60]", "0.20*", 1),       # star on a covering interval, p fine
    ("+0.71 [-0.16, +1.60]", "0.030", 1),       # p < 0.05, no star, covering interval
    ("+2.58 [+1.93, +3.24]", "0.001", 1),       # excludes 0, no star in a starred table
    ("+2.58 [+1.93, +3.24]", "0.300*", 1),      # star fine, p says not significant
    ("-1.09 [-1.79, -0.47]", "0.2", 2),         # excludes 0: no star and p > 0.05
    ("+1.00 [+2.00, +0.50]", "0.001*", 1),      # interval ends reversed
    ("+0.71 [-0.16, +1.60]", "sig.", 1),        # unreadable p
])
def test_rows(tool, tmp_path, delta, p, problems):
    starred = "| word | greedy | 20.47 | +1.93 [+1.06, +2.78] | 0.001* |\n"  # the table marks with '*'
    findings, _, checked = _check(tool, tmp_path, starred + f"| seq | beam5 | 22.0 | {delta} | {p} |\n")
    assert checked == 2
    assert len(findings) == problems, findings
    assert all(f.line == 7 and f.path.endswith("t.md") and delta in f.row for f in findings)


def test_no_star_needed_in_a_table_without_stars(tool, tmp_path):
    findings, _, _ = _check(tool, tmp_path, "| word | beam5 | 21.0 | +2.58 [+1.93, +3.24] | 0.001 |\n")
    assert findings == []
    findings, _, _ = _check(tool, tmp_path, "| word | beam5 | 21.0 | +2.58 [+1.93, +3.24] | 0.300 |\n")
    assert [f.why for f in findings] == ["p 0.3 > 0.05 but the interval [+1.93, +3.24] excludes 0"]


def test_p_in_the_interval_cell_and_two_delta_columns(tool, tmp_path):
    md = tmp_path / "t.md"
    md.write_text("| method | Δ vs CE [95% CI] | small − large [95% CI], p |\n|---|---:|---:|\n"
                  "| word | +3.91 [+3.33, +4.44] | +0.61 [+0.11, +1.13], 0.013 |\n"
                  "| seq | +5.40 [+4.60, +6.16] | **+1.24 [-0.50, +2.02], 0.002** |\n")
    findings, _, checked = tool.check_file(md)
    assert checked == 4
    assert [(f.line, f.why) for f in findings] == [(4, "p 0.002 <= 0.05 but the interval [-0.50, +2.02] includes 0")]


def test_p_column_belongs_to_the_nearest_interval_on_its_left(tool, tmp_path):
    md = tmp_path / "t.md"
    md.write_text("| m | Δ A [95% CI] | Δ B [95% CI] | p |\n|---|---|---|---|\n"
                  "| x | +0.10 [-0.50, +0.70] | +2.00 [+1.00, +3.00] | 0.001* |\n")
    findings, _, checked = tool.check_file(md)
    assert checked == 2 and findings == []  # the '*' is B's, not A's


def test_code_fences_and_zero_ends(tool, tmp_path):
    md = tmp_path / "t.md"
    md.write_text("```\n| a | b |\n|---|---|\n| x | +0.71 [-0.16, +1.60] | 0.049* |\n```\n\n"
                  "| m | Δ [95% CI] | p |\n|---|---|---|\n| x | +0.40 [+0.00, +0.80] | 0.050* |\n")
    findings, notes, checked = tool.check_file(md)
    assert checked == 1 and findings == []
    assert len(notes) == 1 and "0.00" in notes[0].why


def test_main_exit_codes(tool, tmp_path, capsys):
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(HEAD + "| word | beam5 | 21.0 | +2.58 [+1.93, +3.24] | 0.001* |\n")
    bad.write_text(HEAD + "| word | beam5 | 21.0 | +0.71 [-0.16, +1.60] | 0.049* |\n")
    assert tool.main([str(good)]) == 0
    assert tool.main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.md:4: '*' but the interval [-0.16, +1.60] includes 0" in out
    assert "| word | beam5 | 21.0 | +0.71 [-0.16, +1.60] | 0.049* |" in out
    assert "1 inconsistent" in out
    assert tool.main([str(tmp_path / "missing.md")]) == 2


def test_repository_docs_are_consistent(tool, capsys):
    assert tool.main([str(REPO / "README.md"), str(REPO / "docs" / "results.md")]) == 0, capsys.readouterr().out
    _, _, checked = tool.check_file(REPO / "docs" / "results.md")
    assert checked > 100  # the tables were found and read, not skipped
