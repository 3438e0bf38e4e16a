"""Joint sentencepiece model: train on both sides with one vocabulary, encode, decode.

Uses the ``sentencepiece`` package directly (no spm_train binary needed). The vocabulary
size is a soft limit (``hard_vocab_limit=False``) so tiny corpora in tests still train.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from fairseq_kd.fileio import atomic_write_lines, check_file, read_lines


@dataclass
class SpmConfig:
    """Sentencepiece training settings."""
    vocab_size: int = 8000
    model_type: str = "unigram"          # unigram | bpe | char | word
    character_coverage: float = 1.0      # 1.0 keeps every character of European languages
    input_sentence_size: int = 2_000_000  # sample at most this many sentences (all of Multi30k)
    num_threads: int = 2
    seed: int = 1


def train_spm(inputs: Sequence[str], model_prefix: str, cfg: SpmConfig) -> Path:
    """Train one model on all ``inputs``; writes ``prefix.model``/``.vocab`` atomically."""
    import sentencepiece as spm

    for path in inputs:
        check_file(path, f"{path}: sentencepiece training input not found", "sentencepiece training input")
    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp = prefix.with_name(f".{prefix.name}.tmp{os.getpid()}")
    spm.set_random_generator_seed(cfg.seed)
    try:
        spm.SentencePieceTrainer.train(
            input=",".join(str(p) for p in inputs), model_prefix=str(tmp),
            vocab_size=cfg.vocab_size, model_type=cfg.model_type,
            character_coverage=cfg.character_coverage, input_sentence_size=cfg.input_sentence_size,
            shuffle_input_sentence=True, num_threads=cfg.num_threads, hard_vocab_limit=False,
            minloglevel=2)
        os.replace(f"{tmp}.vocab", f"{prefix}.vocab")
        os.replace(f"{tmp}.model", f"{prefix}.model")  # last: its presence marks completion
    finally:
        for ext in (".model", ".vocab"):
            if Path(f"{tmp}{ext}").exists():
                Path(f"{tmp}{ext}").unlink()
    return Path(f"{prefix}.model")


def load(model: str):
    """A SentencePieceProcessor for ``model`` (clear error when missing)."""
    import sentencepiece as spm

    check_file(model, f"{model}: sentencepiece model not found (run the data preparation first)",
               "sentencepiece model")
    return spm.SentencePieceProcessor(model_file=str(model))


def encode_lines(sp, lines: Sequence[str]) -> List[str]:
    """Raw sentences -> space-separated pieces, one output line per input line."""
    return [" ".join(p) for p in sp.encode(list(lines), out_type=str)]


def decode_lines(sp, lines: Sequence[str]) -> List[str]:
    """Space-separated pieces -> detokenized text (sentencepiece removed)."""
    return [sp.decode_pieces(line.split()) for line in lines]


def encode_file(sp, src, dst) -> int:
    return atomic_write_lines(dst, encode_lines(sp, read_lines(src)))
