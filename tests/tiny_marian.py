"""A tiny OPUS-MT-style Marian teacher built locally (no download) and converted by CTranslate2's
own converter, plus a tiny student corpus with its own sentencepiece model and dictionary.

The teacher has random weights (``init_std`` 1: its outputs depend on the input) and Marian's
layout: ``source.spm`` / ``target.spm``, ``vocab.json`` = the sentencepiece pieces then ``<pad>``
(``</s>`` = 0, ``<unk>`` = 1), converted with ``ctranslate2.converters.TransformersConverter``.
Needs ``transformers`` (``requirements-test.txt``; the ``teachers`` extra).
"""
import json
import random
import shutil
from pathlib import Path
from typing import List, Optional

WORDS = "the cat dog sat on a mat house red blue big small runs sleeps old new".split()


def sentences(n: int, seed: int) -> List[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(n)]


def train_spm(lines: List[str], prefix: Path, vocab_size: int, model_type: str = "unigram") -> Path:
    """A sentencepiece model with Marian's ids (``</s>`` 0, ``<unk>`` 1, no ``<s>`` / ``<pad>``)."""
    import sentencepiece as spm

    prefix.parent.mkdir(parents=True, exist_ok=True)
    text = prefix.with_suffix(".txt")
    text.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(prefix), vocab_size=vocab_size,
                                   model_type=model_type, character_coverage=1.0, bos_id=-1, eos_id=0, unk_id=1,
                                   pad_id=-1, minloglevel=2, num_threads=1, hard_vocab_limit=False)
    return prefix.with_suffix(".model")


def make_marian(folder: Path, spm_model: Path, seed: int = 0) -> Path:
    """A Hugging Face Marian model directory (random weights) tokenized by ``spm_model`` on both sides."""
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    vocab["<pad>"] = len(vocab)
    for name in ("source.spm", "target.spm"):
        shutil.copy(spm_model, folder / name)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tok = MarianTokenizer(source_spm=str(folder / "source.spm"), target_spm=str(folder / "target.spm"),
                          vocab=str(folder / "vocab.json"))
    pad = len(vocab) - 1
    cfg = MarianConfig(vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                       max_position_embeddings=128, init_std=1.0, pad_token_id=pad, eos_token_id=0,
                       decoder_start_token_id=pad, forced_eos_token_id=0)
    torch.manual_seed(seed)
    MarianMTModel(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def convert(hf_dir: Path, out: Path) -> Path:
    """CTranslate2's own converter (the Python API of ``ct2-transformers-converter``)."""
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(hf_dir), copy_files=["source.spm", "target.spm"]).convert(str(out), force=True)
    return out


def make_student_data(root: Path, n_train: int = 48, n_valid: int = 12) -> dict:
    """Raw text, the student's sentencepiece model (its own vocabulary) and its binarized data."""
    import sentencepiece as spm

    from tests import helpers

    src = {"train": sentences(n_train, 1), "valid": sentences(n_valid, 2)}
    tgt = {k: [" ".join(reversed(s.split())) for s in v] for k, v in src.items()}
    model = train_spm(src["train"] + tgt["train"], root / "student_spm" / "spm", vocab_size=34)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    raw, text = root / "student_raw", root / "student_text"
    for split in src:
        helpers.write_parallel(text, split, list(zip(src[split], tgt[split])))
        helpers.write_parallel(raw, split, [(" ".join(sp.encode(a, out_type=str)), " ".join(sp.encode(b, out_type=str)))
                                            for a, b in zip(src[split], tgt[split])])
    data_bin = helpers.preprocess(raw, root / "student_bin", splits=("train", "valid"))
    return {"spm": model, "bin": data_bin, "text": text, "src": src, "tgt": tgt}


def reference_translation(translator, src_sp, tgt_sp, text: str, beam: int, a: float, b: int,
                          target_prefix: Optional[str] = None, source_prefix: Optional[str] = None):
    """The teacher's own translation of ``text`` alone, through CTranslate2's Python API: (text, score)."""
    tokens = ([source_prefix] if source_prefix else []) + src_sp.encode(text, out_type=str) + ["</s>"]
    limit = int(a * len(tokens) + b) + (1 if target_prefix else 0)
    res = translator.translate_batch([tokens], beam_size=beam, num_hypotheses=1, max_decoding_length=limit,
                                     min_decoding_length=1, return_scores=True, max_input_length=0,
                                     target_prefix=[[target_prefix]] if target_prefix else None)[0]
    hyp = list(res.hypotheses[0])
    if target_prefix:
        assert hyp[0] == target_prefix
        hyp = hyp[1:]
    return tgt_sp.decode_pieces(hyp), float(res.scores[0])


def world(tmp_path_factory) -> dict:
    """Student data and two converted teachers, built once per test session:
    ``same``: the teacher tokenizes with the student's sentencepiece model (its vocabulary = those pieces);
    ``other``: its own BPE model and vocabulary, unlike the student's."""
    import pytest

    pytest.importorskip("transformers", reason="the tiny Marian teacher is built with transformers "
                                               "(pip install -r requirements-test.txt)")
    root = tmp_path_factory.getbasetemp() / "tiny_marian"
    done = root / "DONE"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)
        student = make_student_data(root)
        other_spm = train_spm(sentences(60, 7), root / "teacher_spm" / "bpe", vocab_size=30, model_type="bpe")
        for name, model, seed in (("same", student["spm"], 0), ("other", other_spm, 1)):
            convert(make_marian(root / f"hf_{name}", model, seed), root / f"ct2_{name}")
        done.write_text("ok\n")
    return {"root": root, "spm": root / "student_spm" / "spm.model", "bin": root / "student_bin",
            "text": root / "student_text", "same": root / "ct2_same", "other": root / "ct2_other",
            "hf_same": root / "hf_same", "hf_other": root / "hf_other"}
