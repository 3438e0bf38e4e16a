"""Data preparation against the real files in ../shared/data (skipped when absent)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_kd.prep import iwslt, sgm, textio

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_iwslt14_test_xml_is_6750_pairs(shared_data):
    total = []
    for name in iwslt.IWSLT14_TEST_SETS:
        s, t = iwslt.read_xml_pair(shared_data / f"iwslt14/{name}.de-en.de.xml",
                                   shared_data / f"iwslt14/{name}.de-en.en.xml")
        assert len(s) == len(t) and all(s) and all(t)
        total.append(len(s))
    assert total == [887, 1165, 1565, 1433, 1700] and sum(total) == 6750


@pytest.mark.slow
def test_newstest2014_sgm_is_3003_aligned_pairs(shared_data):
    d = shared_data / "wmt14"
    src, ref = sgm.read_sgm_pair(d / "newstest2014-deen-src.de.sgm", d / "newstest2014-deen-ref.en.sgm")
    assert len(src) == len(ref) == 3003
    assert src[0] == "Gutach: Noch mehr Sicherheit für Fußgänger"


@pytest.mark.slow
def test_multi30k_end_to_end_on_real_data(shared_data, tmp_path):
    """The layout the main job relies on: raw, spm and bin aligned split by split (~30 s)."""
    from fairseq.data import data_utils

    out = tmp_path / "m30k"
    cmd = ["bash", str(REPO / "data_prep/prepare_multi30k.sh"), "--data-dir", str(shared_data / "multi30k"),
           "--out-dir", str(out), "--vocab-size", "1000", "--test-sets", "test_2016_flickr,test_2017_flickr"]
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = {s: textio.check_aligned([(out / f"raw/{s}.de", out / f"raw/{s}.en")])[0]
              for s in ("train", "valid", "test", "test1")}
    assert counts["valid"] == 1014 and counts["test"] == counts["test1"] == 1000   # never filtered
    assert 28000 < counts["train"] <= 29000                                        # ratio 2.0 drops a few dozen
    raw_test = textio.read_lines(shared_data / "multi30k/test_2016_flickr.en")
    assert textio.read_lines(out / "raw/test.en") == [textio.normalize(x) for x in raw_test]
    for split, n in counts.items():
        for lang in ("de", "en"):
            assert textio.count_lines(out / f"spm/{split}.{lang}") == n
            assert len(data_utils.load_indexed_dataset(str(out / f"bin/{split}.de-en.{lang}"), None)) == n
    assert (out / "bin/dict.de.txt").read_text() == (out / "bin/dict.en.txt").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and all(f"stage {k}: skip" in again.stderr for k in (1, 2, 3, 4))
