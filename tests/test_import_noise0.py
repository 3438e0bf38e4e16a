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
