"""docs/example_marian.md, run as written (its bash block) on the tiny local Marian teacher.

Small budgets through the block's own variables; no network (the teacher is a local Hugging
Face directory). Truths: the distilled corpus is the teacher's own translation of each raw
source line (CTranslate2's Python API on the converted model), re-encoded with the student's
sentencepiece model; the student's dictionary is the one built from the student's data; one
translation per test line.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import tiny_marian

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "example_marian.md"
ARCH = ("--arch transformer --encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 --decoder-embed-dim 32 "
        "--encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 "
        "--decoder-attention-heads 2 --dropout 0.0")


def example_script() -> str:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- example-marian[^\n]*-->\n```bash\n(.*?)\n```", text, re.S)
    assert m, f"{DOC}: the marked bash block is missing"
    return m.group(1)


@pytest.mark.integration
def test_example_runs_end_to_end(tmp_path_factory, tmp_path):
    import ctranslate2
    import sentencepiece as spm
    from fairseq.data import Dictionary

    w = tiny_marian.world(tmp_path_factory)
    raw, work = tmp_path / "raw", tmp_path / "work"
    raw.mkdir()
    for lang in ("src", "tgt"):
        shutil.copy(w["text"] / f"train.{lang}", raw / f"train.{lang}")
        shutil.copy(w["text"] / f"valid.{lang}", raw / f"valid.{lang}")
        shutil.copy(w["text"] / f"valid.{lang}", raw / f"test.{lang}")
    env = dict(os.environ, TEACHER=str(w["hf_other"]), RAW=str(raw), SRC="src", TGT="tgt", WORK=str(work),
               VOCAB="30", BEAM="2", FILTER="empty,copy", ARCH_ARGS=ARCH, MAX_TOKENS="500", MAX_UPDATE="8",
               WARMUP="4", OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-c", example_script()], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the distilled corpus: the teacher's own translations, in the student's pieces and dictionary
    translator = ctranslate2.Translator(str(work / "teacher-ct2"), device="cpu", compute_type="int8")
    t_sp = spm.SentencePieceProcessor(model_file=str(work / "teacher-ct2" / "source.spm"))
    s_sp = spm.SentencePieceProcessor(model_file=str(work / "spm.model"))
    d = Dictionary.load(str(work / "bin" / "dict.tgt.txt"))
    want = []
    for text in (raw / "train.src").read_text(encoding="utf-8").splitlines():
        hyp, _ = tiny_marian.reference_translation(translator, t_sp, t_sp, text, beam=2, a=1.2, b=10)
        want.append(" ".join(p if d.index(p) != d.unk() else "<unk>" for p in s_sp.encode(hyp, out_type=str)))
    kept = [int(x) for x in (work / "distilled" / "train.ids").read_text().split()]
    assert (work / "distilled" / "train.tgt").read_text(encoding="utf-8").splitlines() == [want[i] for i in kept]
    assert len(kept) > 40
    assert (work / "distilled" / "bin" / "dict.tgt.txt").read_bytes() == (work / "bin" / "dict.tgt.txt").read_bytes()
    assert (work / "student-ct2" / "model.bin").is_file()
    hyps = (work / "test.hyp.tgt").read_text(encoding="utf-8").split("\n")
    assert len(hyps) - 1 == len((raw / "test.src").read_text(encoding="utf-8").splitlines())
