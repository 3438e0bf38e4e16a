"""Decode with a CTranslate2 export exactly as fairseq's SequenceGenerator would, in
length-sorted mixed-length batches, every output identical to decoding the sentence alone.

What makes CTranslate2 follow fairseq's rules:

* ``suppress_sequences=[["<blank>"]]``: fairseq never emits ``<pad>`` (CTranslate2's
  ``<blank>``); CTranslate2 would.
* ``return_end_token=True``: the hypothesis length then counts EOS, as fairseq's length
  penalty ``score / len^lenpen`` does (CTranslate2 otherwise divides by the length without EOS).
* the length limit ``L = min(int(a * src_len + b), max_positions - 1)`` (``src_len`` with
  EOS): fairseq forces EOS after ``L`` tokens, CTranslate2 stops after ``L`` steps; the
  tokens are the same.

One limit per sentence in a mixed batch (CTranslate2 takes one ``max_decoding_length``
per call, the largest of the batch):

* greedy (and sampling, beam 1): a search never looks ahead, so the output under a larger
  limit, cut to the sentence's own ``L`` tokens, is the output under ``L``;
* beam (``lenpen != 0``): the search of a sentence is the same under any limit until it
  finishes; it finishes at the step where its ``beam``-th hypothesis completes, and asking
  for ``beam`` hypotheses returns that one (the earlier ones are fewer than ``beam``), so
  ``s = longest returned length - 1``. If ``s < L - 1`` the sentence finished before its
  own last step and the output is the one it gets alone; otherwise it is decoded again
  alone (rare: the sentence ran into its own limit);
* beam with ``lenpen == 0``: CTranslate2 then exits early (top beam finished) and the
  step cannot be read off the hypotheses, so sentences are grouped by their own limit.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

PAD_SYMBOL = "<blank>"
EOS_SYMBOL = "</s>"


@dataclass
class SearchConfig:
    """fairseq-generate's decoding flags, as CTranslate2 reads them."""
    beam: int = 5
    nbest: int = 1
    lenpen: float = 1.0
    max_len_a: float = 1.2
    max_len_b: int = 10
    min_len: int = 1
    max_positions: int = 1024  # the decoder's max target positions (fairseq's cap)
    sampling: bool = False
    sampling_topk: int = 0
    sampling_topp: float = 1.0
    temperature: float = 1.0

    def __post_init__(self):
        # what CTranslate2 cannot do as fairseq does (``distill.ct2.check_options`` refuses it from the flags)
        if self.sampling and self.beam > 1:
            raise ValueError(f"sampling draws one hypothesis per sentence here: beam {self.beam} (fairseq's best of "
                             f"{self.beam} samples) is not reproduced; use beam 1")
        if not self.sampling and self.temperature != 1.0:
            raise ValueError(f"temperature {self.temperature}: CTranslate2 applies a temperature only when sampling")

    def limit(self, src_len: int) -> int:
        """The sentence's own length limit (``src_len`` counts the source EOS)."""
        return min(int(self.max_len_a * src_len + self.max_len_b), self.max_positions - 1)

    def options(self, max_decoding_length: int) -> Dict:
        opts = dict(max_decoding_length=max_decoding_length, min_decoding_length=self.min_len,
                    return_scores=True, return_end_token=True, max_input_length=0,
                    suppress_sequences=[[PAD_SYMBOL]], length_penalty=self.lenpen)
        if self.sampling:
            opts.update(beam_size=1, num_hypotheses=1, sampling_topk=max(self.sampling_topk, 0),
                        sampling_topp=self.sampling_topp if self.sampling_topp > 0 else 1.0,
                        sampling_temperature=self.temperature)
        else:
            opts.update(beam_size=self.beam, num_hypotheses=self.beam)
        return opts

    @property
    def one_limit_per_call(self) -> bool:
        """Beam search without length penalty: batches of one limit (see the module doc)."""
        return not self.sampling and self.beam > 1 and self.lenpen == 0


Hyp = Tuple[List[str], float]  # (tokens without EOS, score)


def _hyps(result, nbest: int) -> List[Tuple[List[str], float, int]]:
    """``(tokens without EOS, score, length with EOS)`` of a CTranslate2 result, best first."""
    out = []
    for toks, score in zip(result.hypotheses, result.scores):
        n = len(toks)
        if toks and toks[-1] == EOS_SYMBOL:
            toks = toks[:-1]
        out.append((list(toks), float(score), n))
    return out


class FairseqLikeDecoder:
    """``decode(sources)`` -> per sentence a list of ``(tokens, score)`` (best first)."""

    def __init__(self, translator, cfg: SearchConfig, max_batch_tokens: int = 6000):
        self.translator, self.cfg, self.max_batch_tokens = translator, cfg, max_batch_tokens
        self.redone = 0  # sentences decoded a second time, alone (beam hit its own limit in a batch)

    def _call(self, sources: Sequence[Sequence[str]], max_len: int):
        return self.translator.translate_batch([list(s) for s in sources], **self.cfg.options(max_len))

    def _iterable(self, sources: Sequence[Sequence[str]], max_len: int):
        return self.translator.translate_iterable(
            iter([list(s) for s in sources]), max_batch_size=self.max_batch_tokens, batch_type="tokens",
            **self.cfg.options(max_len))

    def _finish(self, result, limit: int, src: Sequence[str]) -> List[Hyp]:
        hyps = _hyps(result, self.cfg.beam)
        if self.cfg.sampling or self.cfg.beam == 1:
            toks, score, n = hyps[0]
            if n > limit:  # searched past its own limit: the first ``limit`` tokens are its output alone
                return [(toks[:limit], score)]
            return [(toks, score)]
        if max(n for _, _, n in hyps) >= limit:  # reached its own last step: decode it alone
            self.redone += 1
            hyps = _hyps(self._call([src], limit)[0], self.cfg.beam)
        return [(t, s) for t, s, _ in hyps[: self.cfg.nbest]]

    def decode(self, sources: Sequence[Sequence[str]]) -> List[List[Hyp]]:
        """``sources``: token lists without EOS (CTranslate2 adds it); outputs in input order."""
        if not sources:
            return []
        limits = [self.cfg.limit(len(s) + 1) for s in sources]
        out: List[Optional[List[Hyp]]] = [None] * len(sources)
        groups: Dict[int, List[int]] = {}
        if self.cfg.one_limit_per_call:
            for i, lim in enumerate(limits):
                groups.setdefault(lim, []).append(i)
        else:
            groups[max(limits)] = list(range(len(sources)))
        for max_len, idx in groups.items():
            idx = sorted(idx, key=lambda i: (len(sources[i]), i))  # length-sorted: little padding
            results = self._iterable([sources[i] for i in idx], max_len)
            for i, res in zip(idx, results):
                out[i] = self._finish(res, limits[i], sources[i])
        return out  # type: ignore[return-value]
