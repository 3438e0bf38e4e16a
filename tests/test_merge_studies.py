"""docs/results/tools/merge_studies.py: lanes' study out-dirs as one, extra test splits included."""
import csv
import json

import pytest

from fairseq_kd.errors import KDInputError
from fairseq_kd.study.config import CURVE_FIELDS, RESULT_FIELDS
from tests.helpers import load_results_tool

merge = load_results_tool("merge_studies")
SIG = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


def _cell(method, seed):
    return f"{method}_noise0_a_nodec_lr0.1_seed{seed}"  # the name fairseq-kd-study gives these columns


def _row(method, seed, bleu):
    cell = _cell(method, seed)
    return {"method": method, "noise": "0", "arch": "a", "decoding": "-", "lr": "0.1", "seed": str(seed),
            "teacher": "-", "search": "beam5", "parameters": "10", "bleu": bleu, "chrf": "1.0", "tok_bleu": "1.0",
            "signature": SIG, "train_time": "5.0", "updates": "4", "best_update": "4", "stop": "patience",
            "cell": cell, "hyp": f"cells/{cell}/hyp.beam5.txt"}


def _write(path, rows, fields):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


SETTINGS = {"max_update": 20000, "patience": 8, "train_args": "--dropout 0.1", "method_args": {"word": "--kd-alpha 0.5"}}


def _study(root, name, cells, test1=None, **settings):
    """cells: [(method, seed, test BLEU)]; test1: {(method, seed): BLEU} or None (split not decoded); settings:
    study.json's, over SETTINGS."""
    d = root / name
    for method, seed, _ in cells:
        (d / "cells" / _cell(method, seed)).mkdir(parents=True)
    _write(d / "results.csv", [_row(m, s, b) for m, s, b in cells], RESULT_FIELDS)
    if test1 is not None:
        _write(d / "results.test1.csv", [_row(m, s, test1[m, s]) for m, s, _ in cells], RESULT_FIELDS)
    curve = [{"method": m, "noise": "0", "arch": "a", "decoding": "-", "lr": "0.1", "seed": str(s), "teacher": "-",
              "updates": "2", "valid_bleu": "1.0", "valid_loss": "3.0"} for m, s, _ in cells]
    _write(d / "curves.csv", curve, CURVE_FIELDS)
    (d / "study.json").write_text(json.dumps({**SETTINGS, **settings}))
    return d


def test_both_splits_hold_every_lanes_cells_with_their_own_scores(tmp_path):
    a = _study(tmp_path, "laneA", [("none", 1, "30.0"), ("none", 2, "31.0")], {("none", 1): "25.0", ("none", 2): "26.0"})
    b = _study(tmp_path, "laneB", [("word", 1, "32.0")], {("word", 1): "27.5"})
    dst = tmp_path / "merged"
    merge.merge_studies(str(dst), [str(a), str(b)])
    test = {(r["method"], r["seed"]): r["bleu"] for r in _read(dst / "results.csv")}
    test1 = {(r["method"], r["seed"]): r["bleu"] for r in _read(dst / "results.test1.csv")}
    assert test == {("none", "1"): "30.0", ("none", "2"): "31.0", ("word", "1"): "32.0"}
    assert test1 == {("none", "1"): "25.0", ("none", "2"): "26.0", ("word", "1"): "27.5"}  # test1's, not test's
    assert len(_read(dst / "curves.csv")) == 3
    assert (dst / "cells" / _cell("word", 1)).resolve() == (b / "cells" / _cell("word", 1)).resolve()
    assert json.loads((dst / "study.json").read_text()) == SETTINGS


def test_a_split_one_lane_did_not_decode_is_refused_naming_its_file(tmp_path):
    a = _study(tmp_path, "laneA", [("none", 1, "30.0")], {("none", 1): "25.0"})
    b = _study(tmp_path, "laneB", [("word", 1, "32.0")], test1=None)
    with pytest.raises(KDInputError, match=r"laneB/results\.test1\.csv: not found.*--extra-test test1=REF"):
        merge.merge_studies(str(tmp_path / "merged"), [str(a), str(b)])
    assert not (tmp_path / "merged").exists()  # refused before anything is written


def test_one_seed_measured_twice_is_refused(tmp_path):
    a = _study(tmp_path, "laneA", [("none", 1, "30.0")], {("none", 1): "25.0"})
    b = _study(tmp_path, "laneB", [("none", 1, "30.0")], {("none", 1): "24.0"})  # same cell, other test1 score
    with pytest.raises(KDInputError, match="results.test1.csv"):
        merge.merge_studies(str(tmp_path / "merged"), [str(a), str(b)])


def test_a_dst_cell_that_points_to_another_lane_is_refused(tmp_path):
    a = _study(tmp_path, "laneA", [("none", 1, "30.0")])
    other = _study(tmp_path, "old", [("none", 1, "30.0")])
    dst = tmp_path / "merged"
    merge.merge_studies(str(dst), [str(other)])
    with pytest.raises(KDInputError, match="merge into an empty DST"):
        merge.merge_studies(str(dst), [str(a)])


def test_only_lanes_of_one_study_merge(tmp_path):
    """Lanes of one study merge: a CE lane run before the teacher existed joins the KD lanes (study.json then
    records the teacher), and a method's flags need agree only where it has rows; another budget, another
    teacher (by content digest), or another flag set for a method with rows in two lanes is refused, naming
    the setting and both lanes."""
    digest = {"teacher": "a" * 64}
    ce = _study(tmp_path, "ce", [("none", 1, "30.0")], method_args={"word": "--kd-alpha 0.9"})
    w1 = _study(tmp_path, "w1", [("word", 1, "31.0")], teacher="t.pt", checkpoint_sha256=digest, cache_topk=8)
    w2 = _study(tmp_path, "w2", [("word", 2, "32.0")], teacher="/abs/t.pt", checkpoint_sha256=digest, cache_topk=8)
    merge.merge_studies(str(tmp_path / "m"), [str(ce), str(w1), str(w2)])
    merged = json.loads((tmp_path / "m" / "study.json").read_text())
    assert (merged["teacher"], merged["cache_topk"], merged["method_args"]) == ("t.pt", 8, {"word": "--kd-alpha 0.5"})
    assert len(_read(tmp_path / "m" / "results.csv")) == 3

    cases = [
        (dict(max_update=2000), r"ce and .*other were run with different max_update \(20000 vs 2000\)"),
        (dict(teacher="t.pt", checkpoint_sha256={"teacher": "b" * 64}, cache_topk=8), r"w1 and .*other were run with "
                                                                                     r"different teacher"),
        (dict(teacher="t.pt", checkpoint_sha256=digest, cache_topk=4), r"different cache_topk \(8 vs 4\)"),
        (dict(teacher="t.pt", checkpoint_sha256=digest, cache_topk=8, method_args={"word": "--kd-alpha 0.7"}),
         r"w1 and .*other ran method word with different --method-args"),
    ]
    for settings, message in cases:
        other = _study(tmp_path / str(len(message)), "other", [("word", 3, "33.0")], **settings)
        with pytest.raises(KDInputError, match=message):
            merge.merge_studies(str(tmp_path / "m2"), [str(ce), str(w1), str(other)])
    (w2 / "study.json").unlink()
    with pytest.raises(KDInputError, match=r"w2/study.json: not found"):
        merge.merge_studies(str(tmp_path / "m3"), [str(ce), str(w2)])


def test_an_earlier_merges_split_no_source_has_is_removed(tmp_path, capsys):
    """Merging again into DST: the first merge's results.test1.csv would be read as the new merge's test1 rows
    (of the old lanes only); no new source decoded test1, so it goes, and the tool says so."""
    a = _study(tmp_path, "laneA", [("none", 1, "30.0")], {("none", 1): "25.0"})
    b = _study(tmp_path, "laneB", [("word", 1, "32.0")], test1=None)
    dst = tmp_path / "merged"
    merge.merge_studies(str(dst), [str(a)])
    assert (dst / "results.test1.csv").exists()
    merge.main([str(dst), str(b)])
    assert not (dst / "results.test1.csv").exists()
    assert [r["method"] for r in _read(dst / "results.csv")] == ["word"]
    assert capsys.readouterr().out.splitlines()[0] == (f"removed {dst / 'results.test1.csv'}: an earlier merge's; "
                                                       "no source decoded that split")
