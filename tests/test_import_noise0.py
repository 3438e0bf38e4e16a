"""docs/results/tools/import_noise0.py: a finished study's noise-0 cells join a noise study's out-dir only when
the two study.json are one study's (merge_studies.one_study, the noise settings aside), and the tool says how
many rows it added."""
import json

import pytest

from fairseq_kd.errors import KDInputError
from fairseq_kd.study.config import CURVE_FIELDS, RESULT_FIELDS
from tests.helpers import load_results_tool
from tests.test_merge_studies import SETTINGS, _read, _row, _study, _write

imp = load_results_tool("import_noise0")
pytestmark = pytest.mark.unit


def _noise_study(root, **settings):
    """A noise study's out-dir: word seed 1 at noise 0.3 done, its study.json over SETTINGS (deletion only)."""
    d = root / "noise"
    row = {**_row("word", 1, "20.0"), "noise": "0.3", "cell": "word_noise0.3_a_nodec_lr0.1_seed1",
           "hyp": "cells/word_noise0.3_a_nodec_lr0.1_seed1/hyp.beam5.txt"}
    (d / "cells" / row["cell"]).mkdir(parents=True)
    _write(d / "results.csv", [row], RESULT_FIELDS)
    _write(d / "curves.csv", [], CURVE_FIELDS)
    (d / "study.json").write_text(json.dumps({**SETTINGS, "noise_ops": ["deletion"], **settings}))
    return d


@pytest.fixture
def main_study(tmp_path):
    return _study(tmp_path, "main", [("none", 1, "30.0"), ("word", 1, "32.0"), ("word", 2, "33.0")],
                  noise_ops=["deletion", "substitution", "swap"])


def test_rows_join_the_noise_studys_and_the_count_is_what_was_added(main_study, tmp_path, capsys):
    """The noise study already has results.csv (before, nothing was imported and '2 result rows imported' printed);
    its noise ops differ from the main study's, which noise 0 does not read."""
    dst = _noise_study(tmp_path)
    imp.main([str(dst), "--from", str(main_study), "--methods", "none", "word", "--seeds", "1"])
    assert capsys.readouterr().out == (f"2 result rows, 2 curve rows imported into {dst} from {main_study} "
                                       f"(0 result rows, 0 curve rows were there already)\n")
    assert sorted((r["method"], r["noise"], r["seed"]) for r in _read(dst / "results.csv")) == [
        ("none", "0", "1"), ("word", "0", "1"), ("word", "0.3", "1")]
    assert (dst / "cells" / "word_noise0_a_nodec_lr0.1_seed1").resolve() == (
        main_study / "cells" / "word_noise0_a_nodec_lr0.1_seed1").resolve()
    imp.main([str(dst), "--from", str(main_study), "--methods", "none", "word", "--seeds", "1"])
    assert capsys.readouterr().out.startswith("0 result rows, 0 curve rows imported into")
    assert len(_read(dst / "results.csv")) == 3


@pytest.mark.parametrize("settings, message", [
    (dict(max_update=300), r"different max_update \(300 vs 20000\)"),
    (dict(train_args="--dropout 0.3"), r"different train_args"),
    (dict(method_args={"word": "--kd-alpha 0.9"}), r"ran method word with different --method-args"),
])
def test_a_study_with_other_settings_is_refused(main_study, tmp_path, settings, message):
    dst = _noise_study(tmp_path, **settings)
    before = (dst / "results.csv").read_text()
    with pytest.raises(KDInputError, match=message + r".*import noise-0 cells only from a study run with the noise"):
        imp.import_noise0(str(main_study), str(dst), ("none", "word"), (1,))
    assert (dst / "results.csv").read_text() == before
    assert not (dst / "cells" / "word_noise0_a_nodec_lr0.1_seed1").exists()


def test_another_teacher_is_refused_for_kd_rows(tmp_path):
    main_study = _study(tmp_path, "main", [("none", 1, "30.0"), ("word", 1, "32.0")], teacher="a.pt")
    dst = _noise_study(tmp_path, teacher="b.pt")
    with pytest.raises(KDInputError, match="different teacher"):
        imp.import_noise0(str(main_study), str(dst), ("word",), (1,))
    assert imp.import_noise0(str(main_study), str(dst), ("none",), (1,))[0] == (1, 0)  # CE reads no teacher


def test_without_the_noise_studys_settings_nothing_is_imported(main_study, tmp_path):
    dst = tmp_path / "fresh"
    with pytest.raises(KDInputError, match=r"fresh/study.json: not found; start the noise study first"):
        imp.import_noise0(str(main_study), str(dst))
    assert not dst.exists()


def test_a_selection_with_no_rows_is_refused(main_study, tmp_path):
    with pytest.raises(KDInputError, match="no noise-0 row of methods seq, seeds 1 2"):
        imp.import_noise0(str(main_study), str(_noise_study(tmp_path)), ("seq",), (1, 2))


def _noise_study_with_test1(root, **settings):
    """_noise_study that also decodes split test1 (--extra-test): its noise-0.3 row there too."""
    d = _noise_study(root, **settings)
    row = _read(d / "results.csv")[0]
    _write(d / "results.test1.csv", [{**row, "bleu": "10.0"}], RESULT_FIELDS)
    return d


def test_extra_test_split_rows_are_imported_too(tmp_path, capsys):
    """The noise study decodes test1: its test1 table gets the imported cells' noise-0 rows (before, only
    results.csv did, and results.test1.csv kept its one noise-0.3 row)."""
    digests = {"reference_sha256": {"test": "a" * 64, "test1": "b" * 64}}
    main = _study(tmp_path, "main", [("none", 1, "30.0"), ("word", 1, "32.0"), ("word", 2, "33.0")],
                  test1={("none", 1): "20.0", ("word", 1): "22.0", ("word", 2): "23.0"}, **digests)
    dst = _noise_study_with_test1(tmp_path, **digests)
    imp.main([str(dst), "--from", str(main), "--methods", "none", "word", "--seeds", "1"])
    assert capsys.readouterr().out.splitlines()[1:] == [
        "test1: 2 result rows imported into results.test1.csv (0 were there already)"]
    assert sorted((r["method"], r["noise"], r["seed"], r["bleu"]) for r in _read(dst / "results.test1.csv")) == [
        ("none", "0", "1", "20.0"), ("word", "0", "1", "22.0"), ("word", "0.3", "1", "10.0")]
    assert imp.import_noise0(str(main), str(dst), ("none", "word"), (1,))[2] == {"test1": (0, 2)}  # no duplicates
    assert len(_read(dst / "results.test1.csv")) == 3


def test_a_split_recorded_before_any_row_gets_its_file(tmp_path):
    """A noise study that started with --extra-test test1 records its reference digest before any row."""
    main = _study(tmp_path, "main", [("none", 1, "30.0")], test1={("none", 1): "20.0"})
    dst = _noise_study(tmp_path, reference_sha256={"test": "a" * 64, "test1": "b" * 64})
    assert imp.import_noise0(str(main), str(dst), ("none",), (1,))[2] == {"test1": (1, 0)}
    assert [r["bleu"] for r in _read(dst / "results.test1.csv")] == ["20.0"]


def _unchanged(dst):
    return {p.name: p.read_text() for p in dst.iterdir() if p.is_file()}


def test_a_split_the_source_did_not_decode_for_a_cell_is_refused(tmp_path):
    main = _study(tmp_path, "main", [("none", 1, "30.0"), ("word", 1, "32.0")])  # no test1
    dst = _noise_study_with_test1(tmp_path)
    before = _unchanged(dst)
    with pytest.raises(KDInputError, match=r"main/results.test1.csv: no row of cell none_noise0.*decodes split "
                                           r"'test1'.*--extra-test test1=REF"):
        imp.import_noise0(str(main), str(dst), ("none", "word"), (1,))
    assert _unchanged(dst) == before and not (dst / "cells" / "word_noise0_a_nodec_lr0.1_seed1").exists()


def test_another_reference_for_the_split_or_another_row_is_refused_and_nothing_written(tmp_path):
    main = _study(tmp_path, "main", [("none", 1, "30.0")], test1={("none", 1): "20.0"},
                  reference_sha256={"test": "a" * 64, "test1": "c" * 64})
    dst = _noise_study_with_test1(tmp_path, reference_sha256={"test": "a" * 64, "test1": "b" * 64})
    before = _unchanged(dst)
    with pytest.raises(KDInputError, match=r"different reference_sha256"):
        imp.import_noise0(str(main), str(dst), ("none",), (1,))
    assert _unchanged(dst) == before
    other = _study(tmp_path, "other", [("none", 1, "30.0")], test1={("none", 1): "21.0"})
    dst2 = _noise_study_with_test1(tmp_path / "b")
    row = {**_read(other / "results.test1.csv")[0], "bleu": "99.0"}  # a test1 row of that cell, other values
    _write(dst2 / "results.test1.csv", [*_read(dst2 / "results.test1.csv"), row], RESULT_FIELDS)
    before = _unchanged(dst2)
    with pytest.raises(KDInputError):
        imp.import_noise0(str(other), str(dst2), ("none",), (1,))
    assert _unchanged(dst2) == before  # results.csv not written either: every check precedes every write


def test_a_split_only_the_source_decoded_is_not_imported_and_said(tmp_path, capsys):
    main = _study(tmp_path, "main", [("none", 1, "30.0")], test1={("none", 1): "20.0"})
    dst = _noise_study(tmp_path)
    imp.main([str(dst), "--from", str(main), "--methods", "none", "--seeds", "1"])
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"test1: not imported; {dst} decodes no split test1 (its study.json records no --extra-test test1)"]
    assert not (dst / "results.test1.csv").exists() and len(_read(dst / "results.csv")) == 2
