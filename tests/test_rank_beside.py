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
    # rows ordered by the last side's BLEU; hybrid is on one side only: no row, but ranked among conv's
    # four (it is conv's best, so word is 2 of 4 there, not 1) and named below the table
    assert out[2] == "| word | 0 | 22.00 ± 0.50 (n=3) | 2 of 3 | +2.00 [+1.00, +3.00]* | +20% | " \
                     "41.00 ± 0.50 (n=3) | 2 of 4 | +1.00 [+0.20, +1.80]* | +50% |"
    assert out[3] == "| seq | 0 | 23.00 ± 0.50 (n=3) | 1 of 3 | +3.00 [-0.50, +6.50] | +30% | " \
                     "40.50 ± 0.50 (n=3) | 3 of 4 | +0.50 [-0.10, +1.10] | +25% |"
    assert out[4] == "| none | 0 | 20.00 ± 0.50 (n=3) | 3 of 3 |  |  | 40.00 ± 0.50 (n=3) | 4 of 4 |  |  |"
    assert "left out of the rows: conv only: hybrid." in out[-1]
    assert out[-1].endswith("Among the methods on every side, the order changed: word, seq.")
    # word's rank 2 on both sides is no survival: among the shared methods seq moved past it
    conv_same = write(tmp_path, "c2.json", [group("none", 40.0), group("word", 40.5), group("seq", 41.0),
                                            group("hybrid", 41.5)])
    assert t.main([f"short={short}", f"conv={conv_same}"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("Among the methods on every side, the order is the same.")


def test_ties_share_a_rank_and_noise_levels_rank_apart():
    t = load()
    side = {("none", 0.0): group("none", 20.0), ("word", 0.0): group("word", 20.0),
            ("none", 0.3): group("none", 10.0, noise=0.3), ("word", 0.3): group("word", 12.0, noise=0.3)}
    assert t.ranks(side) == {("none", 0.0): (1, 2), ("word", 0.0): (1, 2), ("none", 0.3): (2, 2),
                             ("word", 0.3): (1, 2)}
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


def test_gap_closed_without_a_seed_in_common_is_na(tmp_path, capsys):
    """Seeds 4, 5 against CE's 1-3: no pair, so n/a (as the report), not a gap of unpaired means."""
    ce = {**group("none", 38.0), "bleu_by_seed": {"1": 38.0, "2": 40.0, "3": 36.0}}
    word = {**group("word", 41.0, n=2), "bleu_by_seed": {"4": 40.0, "5": 42.0}}
    one = write(tmp_path, "a.json", [ce, word])
    assert load().main([f"a={one}", f"b={one}", "--teacher-bleu", "a=43"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| word "))
    assert row.endswith("| 1 of 2 |  | n/a | 41.00 ± 0.50 (n=2) | 1 of 2 |  |  |")  # b: no teacher, no gap
