"""Parallel-corpus cleaning by length and length ratio that never misaligns.

Same rule as Moses ``clean-corpus-n.perl`` (used by fairseq's recipes), on whitespace words:
drop a pair when either side is shorter than ``min_len`` or longer than ``max_len`` words, or
when one side is more than ``ratio`` times longer than the other. Pairs are kept or dropped
together, so the output stays aligned by construction.
"""
from dataclasses import dataclass, asdict
from typing import List, Sequence, Tuple

from fairseq_kd.errors import KDInputError
from fairseq_kd.prep.textio import check_aligned, normalize, read_lines, write_parallel_atomic


@dataclass
class CleanConfig:
    """Length filter for training pairs (lengths in whitespace-separated words)."""
    min_len: int = 1        # shorter pairs (incl. empty lines) are dropped
    max_len: int = 250      # longer pairs are dropped
    ratio: float = 1.5      # max(len_a, len_b) / min(len_a, len_b) above this is dropped


def keep_pair(src: str, tgt: str, cfg: CleanConfig) -> bool:
    """True when the (already normalized) pair passes the length and ratio filter."""
    a, b = len(src.split()), len(tgt.split())
    if min(a, b) < cfg.min_len or max(a, b) > cfg.max_len:
        return False
    return max(a, b) <= cfg.ratio * min(a, b)


def clean_pairs(src: Sequence[str], tgt: Sequence[str], cfg: CleanConfig,
                filter_pairs: bool = True) -> Tuple[List[str], List[str], List[int]]:
    """Normalize whitespace and (optionally) filter; returns kept sides and kept 0-based indices."""
    assert len(src) == len(tgt), "callers check alignment first"
    out_s, out_t, kept = [], [], []
    for i, (s, t) in enumerate(zip(src, tgt)):
        s, t = normalize(s), normalize(t)
        if filter_pairs and not keep_pair(s, t, cfg):
            continue
        out_s.append(s)
        out_t.append(t)
        kept.append(i)
    return out_s, out_t, kept


def clean_files(src_in, tgt_in, src_out, tgt_out, cfg: CleanConfig, filter_pairs: bool = True) -> dict:
    """Clean one aligned file pair into another (atomically); returns counts for the log."""
    check_aligned([(src_in, tgt_in)])
    src, tgt = read_lines(src_in), read_lines(tgt_in)
    out_s, out_t, _ = clean_pairs(src, tgt, cfg, filter_pairs)
    if not out_s:  # an empty corpus would only fail later (sentencepiece, fairseq-preprocess), and stick
        why = "it is empty" if not src else f"the length filter (--min-len {cfg.min_len} --max-len {cfg.max_len} " \
                                              f"--ratio {cfg.ratio:g}) drops all {len(src)} pairs"
        raise KDInputError(f"{src_in}: no sentence pair left to write: {why}; fix the corpus (or the filter) "
                           f"and re-run")
    write_parallel_atomic([src_out, tgt_out], [out_s, out_t])
    return {"input": str(src_in), "lines_in": len(src), "lines_out": len(out_s),
            "dropped": len(src) - len(out_s), "filtered": filter_pairs,
            **({"config": asdict(cfg)} if filter_pairs else {})}
