"""docs/results/tools/plot_curves.py: the converged study's validation curves in one PNG."""
import pytest

from tests.helpers import load_results_tool


def load():
    return load_results_tool("plot_curves")


def test_curves_merge_across_files_and_best_is_fairseqs(tmp_path, capsys):
    a = tmp_path / "a.csv"
    a.write_text("model,code_commit,updates,valid_bleu_greedy,valid_loss\n"
                 "T,x,500,20.0,4.0\nT,x,250,10.0,5.0\nT,x,750,20.0,3.9\n")
    b = tmp_path / "b.csv"  # a second segment of T (one update repeated identically) and another model
    b.write_text("model,updates,valid_bleu_greedy,valid_loss\nT,750,20.0,3.9\nT,1000,19.5,3.95\nS,250,5.5,\n")
    t = load()
    curves = t.read_curves([str(a), str(b)])
    assert curves["T"] == [(250, 10.0, 5.0), (500, 20.0, 4.0), (750, 20.0, 3.9), (1000, 19.5, 3.95)]
    assert curves["S"] == [(250, 5.5, None)]
    assert t.best(curves["T"]) == (750, 20.0, 3.9)  # the tie goes to the later checkpoint
    out = tmp_path / "c.png"
    assert t.main([str(out), str(a), str(b)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "T: 4 validations to 1000 updates, best 20.00 @750" in capsys.readouterr().out


def test_conflicting_or_malformed_rows_are_refused(tmp_path):
    t = load()
    a = tmp_path / "a.csv"
    a.write_text("model,updates,valid_bleu_greedy\nT,250,10\nT,250,11\n")
    with pytest.raises(SystemExit, match="a.csv:3: model 'T' has update 250 twice"):
        t.read_curves([str(a)])
    b = tmp_path / "b.csv"
    b.write_text("model,updates\nT,250\n")
    with pytest.raises(SystemExit, match="b.csv: missing column.*valid_bleu_greedy"):
        t.read_curves([str(b)])
    c = tmp_path / "c.csv"
    c.write_text("model,updates,valid_bleu_greedy\nT,250,abc\n")
    with pytest.raises(SystemExit, match="c.csv:2:"):
        t.read_curves([str(c)])
