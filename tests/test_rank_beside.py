"""docs/results/tools/rank_beside.py: two studies' rankings of the same methods side by side."""
import json

import pytest

from tests.helpers import load_results_tool


def load():
    return load_results_tool("rank_beside")


def group(method, bleu, std=0.5, n=3, noise=0.0, arch="a", delta=None):
    g = {"method": method, "noise": noise, "arch": arch, "search": "beam", "n": n, "bleu_mean": bleu, "bleu_std": std}
    if delta:
        g["vs_baseline"] = {"delta": delta[0], "ci_low": delta[1], "ci_high": delta[2]}
    return g


def write(tmp_path, name, groups):
    p = tmp_path / name
    p.write_text(json.dumps(groups))
    return str(p)


def test_ranks_deltas_gap_and_which_ranks_moved(tmp_path, capsys):
    short = write(tmp_path, "s.json", [group("none", 20.0), group("word", 22.0, delta=(2.0, 1.0, 3.0)),
                                       group("seq", 23.0, delta=(3.0, -0.5, 6.5))])
    conv = write(tmp_path, "c.json", [group("none", 40.0), group("word", 41.0, delta=(1.0, 0.2, 1.8)),
                                      group("seq", 40.5, delta=(0.5, -0.1, 1.1)), group("hybrid", 41.5)])
    t = load()
    assert t.main([f"short={short}", f"conv={conv}", "--teacher-bleu", "short=30", "--teacher-bleu", "conv=42"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("| method | noise | short: BLEU | rank | Δ vs CE [95% CI] | gap closed | conv: BLEU | rank "
                      "| Δ vs CE [95% CI] | gap closed |")
    # rows ordered by the last side's BLEU; hybrid is on one side only: left out
    assert out[2] == "| word | 0 | 22.00 ± 0.50 (n=3) | 2 | +2.00 [+1.00, +3.00]* | +20% | " \
                     "41.00 ± 0.50 (n=3) | 1 | +1.00 [+0.20, +1.80]* | +50% |"
    assert out[3] == "| seq | 0 | 23.00 ± 0.50 (n=3) | 1 | +3.00 [-0.50, +6.50] | +30% | " \
                     "40.50 ± 0.50 (n=3) | 2 | +0.50 [-0.10, +1.10] | +25% |"
    assert out[4] == "| none | 0 | 20.00 ± 0.50 (n=3) | 3 |  |  | 40.00 ± 0.50 (n=3) | 3 |  |  |"
    assert out[-1].endswith("Rank changed: word, seq.")


def test_ties_share_a_rank_and_noise_levels_rank_apart():
    t = load()
    side = {("none", 0.0): group("none", 20.0), ("word", 0.0): group("word", 20.0),
            ("none", 0.3): group("none", 10.0, noise=0.3), ("word", 0.3): group("word", 12.0, noise=0.3)}
    assert t.ranks(side, list(side)) == {("none", 0.0): 1, ("word", 0.0): 1, ("none", 0.3): 2, ("word", 0.3): 1}
    assert t.gap_closed(side, ("word", 0.3), 9.0) is None  # teacher below CE: no gap to close


def test_refusals_name_the_file_and_fix(tmp_path):
    t = load()
    two = write(tmp_path, "two.json", [group("none", 20.0, arch="a"), group("none", 21.0, arch="b")])
    with pytest.raises(SystemExit, match="several groups for method none at noise 0.*--arch"):
        t.load_side(two)
    assert list(t.load_side(two, arch="b").values())[0]["bleu_mean"] == 21.0
    bad = write(tmp_path, "bad.json", {"summary": []})
    with pytest.raises(SystemExit, match="bad.json: not a fairseq-kd-report summary.json"):
        t.load_side(bad)
    ok = write(tmp_path, "ok.json", [group("none", 20.0)])
    with pytest.raises(SystemExit, match="no side labelled 'x'"):
        t.main([f"a={ok}", f"b={ok}", "--teacher-bleu", "x=30"])


def test_gap_closed_is_taken_on_the_seeds_both_have(tmp_path, capsys):
    """A summary with per-seed BLEU (fairseq-kd-report's bleu_by_seed): hybrid at seeds 1, 2 against CE's 1, 2
    (mean 39), not CE's three (38; seed 3 at 36): (41 - 39) / (43 - 39) = 50%, not (41 - 38) / (43 - 38) = 60%."""
    ce = {**group("none", 38.0), "bleu_by_seed": {"1": 38.0, "2": 40.0, "3": 36.0}}
    hybrid = {**group("hybrid", 41.0, n=2), "bleu_by_seed": {"1": 40.0, "2": 42.0}}
    one = write(tmp_path, "a.json", [ce, hybrid])
    assert load().main([f"a={one}", f"b={one}", "--teacher-bleu", "a=43", "--teacher-bleu", "b=43"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| hybrid "))
    assert row.count("| +50% |") == 2
