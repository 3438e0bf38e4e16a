"""The caches of CTranslate2 conversions are keyed by everything a conversion is made of.

A checkpoint's conversion holds its dictionaries' symbols (and, for ``export.evaluate``, a
sentencepiece model): the same checkpoint read with other dictionaries, or exported with
another sentencepiece model, is another conversion. Keyed by the checkpoint's bytes alone, the
second run was served the first one's vocabulary: every token id decoded to another word, and
the BLEU or the distilled corpus came out wrong without an error.
"""
import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def permuted_data(data_bin: Path, out: Path) -> Path:
    """A copy of ``data_bin`` whose dictionaries list two ordinary symbols in swapped order (same size,
    so the checkpoint still loads with them)."""
    shutil.copytree(data_bin, out)
    for lang in ("src", "tgt"):
        path = out / f"dict.{lang}.txt"
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        lines[0], lines[1] = lines[1], lines[0]
        path.write_text("".join(lines), encoding="utf-8")
    return out


def vocabulary(model_dir: str, side: str):
    """One side's vocabulary (CTranslate2 writes one shared file when both sides are equal)."""
    path = Path(model_dir) / f"{side}_vocabulary.json"
    if not path.exists():
        path = Path(model_dir) / "shared_vocabulary.json"
    return json.loads(path.read_text(encoding="utf-8"))


def test_distillation_teacher_conversion_follows_its_dictionaries(tiny_teacher, tmp_path):
    pytest.importorskip("ctranslate2")
    from fairseq_kd.distill.ct2 import convert_teacher
    from fairseq_kd.export.convert import ct2_vocabulary
    from fairseq_kd.teacher import load_teacher

    ckpt = tmp_path / "t" / "teacher.pt"
    ckpt.parent.mkdir()
    shutil.copyfile(tiny_teacher.checkpoint, ckpt)
    other = permuted_data(Path(tiny_teacher.data_bin), tmp_path / "other")
    own = load_teacher(str(ckpt))
    swapped = load_teacher(str(ckpt), teacher_data=str(other))
    assert own.tgt_dict.symbols != swapped.tgt_dict.symbols
    a = convert_teacher(own, str(ckpt), "f" * 64)
    b = convert_teacher(swapped, str(ckpt), "f" * 64)
    assert a != b
    for teacher, out in ((own, a), (swapped, b)):
        assert vocabulary(out, "source") == ct2_vocabulary(teacher.src_dict)
        assert vocabulary(out, "target") == ct2_vocabulary(teacher.tgt_dict)
    assert convert_teacher(own, str(ckpt), "f" * 64) == a  # and each is still converted once


def train_spm(text: Path, prefix: Path, vocab_size: int) -> Path:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(prefix), vocab_size=vocab_size,
                                   hard_vocab_limit=False, minloglevel=2)
    return Path(f"{prefix}.model")


def test_evaluation_export_follows_dictionaries_sentencepiece_and_completeness(tiny_teacher, tmp_path):
    pytest.importorskip("ctranslate2")
    from fairseq_kd.export.convert import ct2_vocabulary, export_complete
    from fairseq_kd.export.evaluate import ensure_export
    from fairseq_kd.teacher import load_teacher

    ckpt = tmp_path / "s" / "checkpoint_best.pt"
    ckpt.parent.mkdir()
    shutil.copyfile(tiny_teacher.checkpoint, ckpt)
    data = str(tiny_teacher.data_bin)
    other = str(permuted_data(Path(tiny_teacher.data_bin), tmp_path / "other"))
    spm_a = train_spm(Path(tiny_teacher.raw) / "train.tgt", tmp_path / "a", 20)
    spm_b = train_spm(Path(tiny_teacher.raw) / "train.tgt", tmp_path / "b", 24)
    assert spm_a.read_bytes() != spm_b.read_bytes()

    base = ensure_export(str(ckpt), "int8", data=data, spm_model=str(spm_a))
    by_dicts = ensure_export(str(ckpt), "int8", data=other, spm_model=str(spm_a))
    by_spm = ensure_export(str(ckpt), "int8", data=data, spm_model=str(spm_b))
    assert len({base, by_dicts, by_spm}) == 3
    assert vocabulary(by_dicts, "target") == ct2_vocabulary(load_teacher(str(ckpt), teacher_data=other).tgt_dict)
    assert vocabulary(base, "target") == ct2_vocabulary(load_teacher(str(ckpt)).tgt_dict)
    assert (Path(base) / "spm.model").read_bytes() == spm_a.read_bytes()
    assert (Path(by_spm) / "spm.model").read_bytes() == spm_b.read_bytes()

    model = Path(base) / "model.bin"
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 2])  # a kill or a full disk cut it: present, not complete
    assert ensure_export(str(ckpt), "int8", data=data, spm_model=str(spm_a)) == base
    assert model.read_bytes() == good and export_complete(base)
    mtime = model.stat().st_mtime_ns
    assert ensure_export(str(ckpt), "int8", data=data, spm_model=str(spm_a)) == base
    assert model.stat().st_mtime_ns == mtime  # complete: reused, not rewritten
