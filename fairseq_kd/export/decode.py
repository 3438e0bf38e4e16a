"""Decode with a CTranslate2 export exactly as fairseq's SequenceGenerator would, in
length-sorted mixed-length batches, every output identical to decoding the sentence alone
(exceptions: "Where it is not exact" below).

What makes CTranslate2 follow fairseq's rules:

* ``suppress_sequences=[["<blank>"]]``: fairseq never emits ``<pad>`` (CTranslate2's
  ``<blank>``); CTranslate2 would.
* ``return_end_token=True``: the hypothesis length then counts EOS, as fairseq's length
  penalty ``score / len^lenpen`` does (CTranslate2 otherwise divides by the length without EOS).
* the length limit ``L = min(int(a * src_len + b), max_positions - 1)`` (``src_len`` with
  EOS): fairseq forces EOS after ``L`` tokens, CTranslate2 stops after ``L`` steps; the
  tokens are the same for greedy search (beam search: see the last section).
* ``lenpen == 0`` (fairseq: scores not length-normalized) is passed as a length penalty of
  ``NO_LENGTH_PENALTY`` (1e-12): at 0 CTranslate2 ends a sentence's beam search when its best
  hypothesis ends, fairseq when ``beam`` hypotheses have ended (a sentence's output can differ);
  ``len ** 1e-12`` is exactly 1.0 in float32 for every length, so the scores are fairseq's and
  the search stops where fairseq's does.

One limit per sentence in a mixed batch (CTranslate2 takes one ``max_decoding_length``
per call, the largest of the batch):

* greedy (and sampling, beam 1): a search never looks ahead, so the output under a larger
  limit, cut to the sentence's own ``L`` tokens, is the output under ``L``;
* beam: the search of a sentence is the same under any limit until it
  finishes; it finishes at the step where its ``beam``-th hypothesis completes, and asking
  for ``beam`` hypotheses returns that one (the earlier ones are fewer than ``beam``), so
  ``s = longest returned length - 1``. If ``s < L - 1`` the sentence finished before its
  own last step and the output is the one it gets alone; otherwise it is decoded again
  alone (rare: the sentence ran into its own limit).

``search_flags`` reads fairseq-generate flags (a study's ``gen_args``) into ``SearchConfig``
fields, refusing the ones CTranslate2 would decode otherwise.

Where it is not exact:

* a beam search that reaches the sentence's length limit: fairseq appends EOS to each of its
  ``beam`` live hypotheses (EOS's log-probability counted, length ``L + 1``), CTranslate2 ends
  its top ``beam`` candidates of the last step without EOS (length ``L``); the hypotheses and
  their scores differ, and so can the output (models that loop: 11 of 24 sentences of a random
  model at beam 3; a sentence that ends before its limit is unaffected, and so is greedy search);
* CTranslate2 forbids a token (``<blank>`` at every step, EOS before ``min_len``) before its
  log-softmax, fairseq after it: the other tokens' log-probabilities are renormalised. Where the
  model gives that token ~0 probability (trained models: ``<pad>``, EOS at the first step) the
  scores move by ~0; with ``min_len > 1`` and beam > 1 the hypotheses rank otherwise (16 of 40
  sentences of the tests' copy model at ``--min-len 8``, beam 5), so ``search_flags`` refuses it.
"""
import math
import shlex
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_kd.errors import KDInputError

PAD_SYMBOL = "<blank>"
EOS_SYMBOL = "</s>"
# CTranslate2's length penalty for fairseq's ``--lenpen 0`` (see the module doc): not 0, which would change
# when the beam search stops; ``float32(n) ** float32(1e-12) == 1.0`` exactly for every length n
NO_LENGTH_PENALTY = 1e-12


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
                    suppress_sequences=[[PAD_SYMBOL]], length_penalty=self.lenpen or NO_LENGTH_PENALTY)
        if self.sampling:
            opts.update(beam_size=1, num_hypotheses=1, sampling_topk=max(self.sampling_topk, 0),
                        sampling_topp=self.sampling_topp if self.sampling_topp > 0 else 1.0,
                        sampling_temperature=self.temperature)
        else:
            opts.update(beam_size=self.beam, num_hypotheses=self.beam)
        return opts


# fairseq-generate flags that change no hypothesis: batching, hardware, logging, fairseq's own score line
NEUTRAL_FLAGS = {"--max-tokens": int, "--batch-size": int, "--required-batch-size-multiple": int,
                 "--num-workers": int, "--data-buffer-size": int, "--seed": int, "--log-format": str,
                 "--log-interval": int, "--log-file": str, "--scoring": str}
NEUTRAL_SWITCHES = ("--cpu", "--fp16", "--bf16", "--memory-efficient-fp16", "--memory-efficient-bf16", "--amp",
                    "--quiet", "--no-progress-bar", "--sacrebleu", "--no-early-stop", "--no-beamable-mm")
# why CTranslate2 cannot decode as fairseq does with these (any other flag: not one it is known to reproduce);
# the flags refused for fairseq's own decoding too: study/preflight.py REFUSED_GEN_FLAGS
UNREPRODUCED = {
    "--unkpen": "CTranslate2 has no unknown-word penalty, only disable_unk, an infinite one",
    "--no-repeat-ngram-size": "CTranslate2's n-gram blocking is not checked against fairseq's",
    "--sampling": "a sample is not reproduced across implementations",
    "--sampling-topk": "a sample is not reproduced across implementations",
    "--sampling-topp": "a sample is not reproduced across implementations",
    "--temperature": "CTranslate2 applies a temperature only when sampling; fairseq's search divides every "
                     "step's logits by it",
    "--diverse-beam-groups": "CTranslate2 has no diverse beam search",
    "--diverse-beam-strength": "CTranslate2 has no diverse beam search",
    "--diversity-rate": "CTranslate2 has no diverse beam search",
    "--match-source-len": "CTranslate2 has no output length tied to the source length",
    "--prefix-size": "it forces each output to start with the reference's first tokens",
    "--constraints": "CTranslate2 has no lexically constrained decoding",
    "--lm-path": "CTranslate2 decodes without fairseq's language-model fusion",
    "--lm-weight": "CTranslate2 decodes without fairseq's language-model fusion",
    "--replace-unk": "it rewrites <unk> from fairseq's alignments",
    "--retain-dropout": "dropout at test time is random",
    "--score-reference": "it scores the references instead of decoding",
}
TRANSLATED = "--lenpen, --unnormalized, --min-len"
MIN_LEN_WHY = ("CTranslate2 forbids EOS before its log-softmax, fairseq after it, and the hypotheses rank otherwise; "
               "greedy search is unaffected")


def min_len_reproduced(min_len: int, beam: int) -> bool:
    """Whether CTranslate2's ``min_decoding_length`` gives fairseq's ``--min-len`` outputs: greedy search, or
    ``min_len <= 1`` (the module doc)."""
    return beam == 1 or min_len <= 1


def search_flags(gen_args: str, beam: int, where: str) -> Dict:
    """The ``SearchConfig`` fields that the fairseq-generate flags ``gen_args`` set for a search of
    ``beam`` (``{}`` when they change no hypothesis), or ``KDInputError`` naming the flag and ``where``
    they come from (e.g. ``STUDY/study.json gen_args``).

    ``--lenpen X`` -> ``lenpen`` (the same ``score / len^X``, ``len`` with EOS: the module doc);
    ``--unnormalized`` -> ``lenpen 0`` (fairseq divides by nothing, whatever ``--lenpen``);
    ``--min-len N`` -> ``min_len`` (both forbid EOS at steps ``< N``), for greedy search or ``N <= 1``
    only (the module doc: with beam > 1 CTranslate2's renormalised scores rank otherwise);
    the flags of ``NEUTRAL_FLAGS`` / ``NEUTRAL_SWITCHES`` are read and left; every other word is refused.
    Flags as argparse reads them: ``--flag VALUE`` or ``--flag=VALUE``, the last one given wins."""
    try:
        words = shlex.split(gen_args or "")
    except ValueError as e:
        raise KDInputError(f"{where} {gen_args!r} cannot be read: {e}") from None

    def refuse(flag: str, why: str):
        raise KDInputError(f"{where} has {flag}: CTranslate2 does not decode as fairseq-generate does with it "
                           f"({why}), so nothing was decoded")

    out: Dict = {}
    unnormalized = False
    i = 0
    while i < len(words):
        word = words[i]
        flag, eq, inline = word.partition("=")
        i += 1
        if not flag.startswith("--"):
            raise KDInputError(f"{where}: {word!r} is no flag (a value without its flag?); nothing was decoded")
        if flag in NEUTRAL_SWITCHES or flag == "--unnormalized":
            if eq:
                raise KDInputError(f"{where}: {flag} takes no value (got {word!r})")
            unnormalized = unnormalized or flag == "--unnormalized"
            continue
        kinds = {"--lenpen": float, "--min-len": int, **NEUTRAL_FLAGS}
        if flag not in kinds:
            refuse(flag, UNREPRODUCED.get(flag, f"not one of the flags it is known to reproduce: {TRANSLATED}, and "
                                                f"batching, hardware and logging flags"))
        if eq:
            value = inline
        elif i < len(words) and not words[i].startswith("--"):
            value, i = words[i], i + 1
        else:
            raise KDInputError(f"{where}: {flag} has no value")
        try:
            parsed = kinds[flag](value)
        except ValueError:
            raise KDInputError(f"{where}: {flag} {value!r} is not {'an integer' if kinds[flag] is int else 'a number'}"
                               ) from None
        if flag == "--lenpen":
            if not math.isfinite(parsed):
                raise KDInputError(f"{where}: --lenpen {value} is not a finite number")
            out["lenpen"] = parsed
        elif flag == "--min-len":
            if parsed < 0:
                raise KDInputError(f"{where}: --min-len {parsed} is negative")
            out["min_len"] = parsed
    if unnormalized:
        out["lenpen"] = 0.0
    if not min_len_reproduced(out.get("min_len", 1), beam):
        refuse(f"--min-len {out['min_len']}", f"with beam {beam}: {MIN_LEN_WHY}")
    return out


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
        idx = sorted(range(len(sources)), key=lambda i: (len(sources[i]), i))  # length-sorted: little padding
        results = self._iterable([sources[i] for i in idx], max(limits))
        for i, res in zip(idx, results):
            out[i] = self._finish(res, limits[i], sources[i])
        return out  # type: ignore[return-value]
