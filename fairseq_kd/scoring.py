"""Corpus BLEU, chrF and tokenized BLEU with sacrebleu, plus aligned file reading.

* ``bleu``: sacrebleu's standard detokenized BLEU (``tokenize=13a`` by default); report
  this one, with its signature.
* ``chrf``: sacrebleu chrF (character n-gram F-score, beta=2).
* ``tok_bleu``: BLEU over the whitespace tokens of the files *as given*
  (sacrebleu with ``tokenize=none``). On Moses-tokenized files this is what
  ``multi-bleu.perl`` reports, the "tokenized BLEU" of many NMT papers; on detokenized
  text it is a stricter, punctuation-glued number. ``tok_bleu_tokenize`` may name any
  sacrebleu tokenizer instead (e.g. ``13a`` on pre-tokenized text).
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from fairseq_kd import fileio
from fairseq_kd.errors import KDInputError

METRICS = ("bleu", "chrf", "tok_bleu")


@dataclass
class ScoreConfig:
    """How to score: sacrebleu tokenizer for BLEU, casing, tokenizer for tokenized BLEU."""

    tokenize: str = "13a"
    lowercase: bool = False
    tok_bleu_tokenize: str = "none"
    metrics: Tuple[str, ...] = METRICS


def read_lines(path: str) -> List[str]:
    """Lines of a UTF-8 file without their newline (split on ``\\n`` only)."""
    return fileio.read_lines(path, "hypothesis/reference file")


def check_aligned(hyps: Sequence[str], refs: Sequence[Sequence[str]], hyp_name: str,
                  ref_names: Sequence[str]) -> None:
    """Refuse hypotheses and references with different line counts, naming both."""
    for ref, name in zip(refs, ref_names):
        if len(ref) != len(hyps):
            raise KDInputError(f"misaligned: hypotheses {hyp_name} have {len(hyps)} lines but references "
                               f"{name} have {len(ref)}; score files that align line by line "
                               f"(restore hypothesis order, e.g. sort fairseq-generate's H- lines by id)")
    if not hyps:
        raise KDInputError(f"{hyp_name}: no lines to score")


def score_lines(hyps: Sequence[str], refs: Sequence[Sequence[str]], cfg: ScoreConfig = ScoreConfig()) -> Dict:
    """Score aligned lines; ``refs`` is a list of reference streams. Returns a JSON-able dict."""
    from sacrebleu.metrics import BLEU, CHRF

    hyps, refs = list(hyps), [list(r) for r in refs]
    out = {}
    for name in cfg.metrics:
        if name == "bleu":
            metric = BLEU(tokenize=cfg.tokenize, lowercase=cfg.lowercase)
        elif name == "tok_bleu":
            metric = BLEU(tokenize=cfg.tok_bleu_tokenize, lowercase=cfg.lowercase)
        elif name == "chrf":
            metric = CHRF(lowercase=cfg.lowercase)
        else:
            raise KDInputError(f"unknown metric {name!r}: choose from {', '.join(METRICS)}")
        res = metric.corpus_score(hyps, refs)
        entry = {"score": round(res.score, 4), "signature": str(metric.get_signature()), "verbose": str(res)}
        if name != "chrf":
            entry.update(precisions=[round(p, 4) for p in res.precisions], bp=round(res.bp, 4),
                         sys_len=res.sys_len, ref_len=res.ref_len)
        out[name] = entry
    out["nlines"] = len(hyps)
    return out


def score_files(hyp_path: str, ref_paths: Sequence[str], cfg: ScoreConfig = ScoreConfig()) -> Dict:
    """Read, check alignment, score."""
    hyps = read_lines(hyp_path)
    refs = [read_lines(p) for p in ref_paths]
    check_aligned(hyps, refs, hyp_path, ref_paths)
    result = score_lines(hyps, refs, cfg)
    result.update(hyp=hyp_path, refs=list(ref_paths))
    return result
