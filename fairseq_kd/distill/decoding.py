"""Teacher decoding for sequence-level KD: beam, greedy, sampling and teacher forcing.

All modes return, per sentence of a fairseq batch, a list of hypotheses (best first),
each a 1-D LongTensor of target ids ending in EOS, in the teacher's target dictionary.
The same function serves the offline tool (``fairseq-kd-distill``) and the online
criteria (``seq_kd``, ``hybrid_kd``), so both produce the same targets.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from fairseq import search

DECODING_CHOICES = ("beam", "greedy", "sampling", "teacher_forcing")


@dataclass
class DecodingConfig:
    """How the teacher produces targets (mirrors fairseq-generate's flags)."""
    decoding: str = "beam"  # beam | greedy | sampling | teacher_forcing
    beam: int = 5  # beam size (number of samples for sampling)
    nbest: int = 1  # hypotheses kept per sentence (<= beam)
    lenpen: float = 1.0
    max_len_a: float = 1.2  # max target length = a * source length + b
    max_len_b: int = 10
    min_len: int = 1
    sampling_topk: int = -1
    sampling_topp: float = -1.0
    temperature: float = 1.0

    def __post_init__(self):
        if self.decoding not in DECODING_CHOICES:
            raise ValueError(f"unknown decoding {self.decoding!r}; choose from {DECODING_CHOICES}")
        if self.decoding in ("greedy", "teacher_forcing"):
            self.beam, self.nbest = 1, 1
        if self.nbest > self.beam:
            raise ValueError(f"--nbest {self.nbest} exceeds --beam {self.beam}")

    def signature(self) -> str:
        """Short string identifying everything that changes the targets."""
        parts = [self.decoding]
        if self.decoding in ("beam", "sampling"):
            parts += [f"beam{self.beam}", f"nbest{self.nbest}", f"lenpen{self.lenpen}"]
        if self.decoding in ("beam", "greedy") and self.temperature != 1.0:
            # fairseq's search divides every step's logits by it (beam: other hypotheses; greedy: other scores).
            # Only a non-default value is recorded: shards of the default keep their signature and still resume.
            parts.append(f"temp{self.temperature}")
        if self.decoding == "sampling":
            parts += [f"topk{self.sampling_topk}", f"topp{self.sampling_topp}", f"temp{self.temperature}"]
        if self.decoding != "teacher_forcing":
            parts += [f"maxlen{self.max_len_a}x+{self.max_len_b}", f"minlen{self.min_len}"]
        return "-".join(parts)


def base_search(tgt_dict, cfg: DecodingConfig):
    """fairseq's search strategy for ``cfg`` (what SequenceGenerator would pick)."""
    if cfg.decoding == "sampling":
        return search.Sampling(tgt_dict, cfg.sampling_topk, cfg.sampling_topp)
    return search.BeamSearch(tgt_dict)


def build_generator(models, tgt_dict, cfg: DecodingConfig, strategy=None):
    """fairseq's ``SequenceGenerator`` over the teacher model(s) for ``cfg``."""
    from fairseq.sequence_generator import SequenceGenerator

    return SequenceGenerator(
        list(models), tgt_dict, beam_size=cfg.beam, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b,
        min_len=cfg.min_len, len_penalty=cfg.lenpen, temperature=cfg.temperature,
        search_strategy=strategy if strategy is not None else base_search(tgt_dict, cfg),
    )


class SentenceMaxLen(search.Search):
    """A fairseq search strategy that gives every sentence its own length limit.

    fairseq's limit is a * (padded source width) + b for the whole batch, so in a batch of
    mixed lengths a short sentence could search longer than alone. Before delegating to
    the wrapped strategy, this forces EOS (every other token -inf) for the rows whose own
    limit is reached, exactly as SequenceGenerator does at its batch limit, so each output
    is the one the sentence gets alone. The limits are set per batch (``set_limits``, or the
    ``sentence_limits`` context): ``limits[i]`` is row i's; with ``ids`` (the sample's ``id``,
    which SequenceGenerator then passes as ``original_batch_idxs``) they are looked up by id,
    else by row (``original_batch_idxs`` maps the shrinking batch back to the rows).
    """

    def __init__(self, base, tgt_dict):
        super().__init__(tgt_dict)
        self.base = base
        self.supports_constraints, self.stop_on_max_len = base.supports_constraints, base.stop_on_max_len
        self.limits: Optional[torch.Tensor] = None  # one per row of the batch being decoded
        self.ids: Optional[torch.Tensor] = None  # sorted sample ids of those rows (None: rows 0..bsz-1)

    def set_limits(self, limits: Optional[torch.Tensor], ids: Optional[torch.Tensor] = None) -> None:
        """The batch's own limits (None: none, fairseq's batch limit alone) and the rows' sample ids."""
        if limits is None or ids is None:
            self.limits, self.ids = limits, None
            return
        self.ids, order = ids.view(-1).sort()
        self.limits = limits[order.to(limits.device)]

    @property
    def needs_src_lengths(self):
        return getattr(self.base, "needs_src_lengths", False)

    def set_src_lengths(self, src_lengths):
        self.base.set_src_lengths(src_lengths)

    def init_constraints(self, batch_constraints, beam_size: int):
        self.base.init_constraints(batch_constraints, beam_size)

    def prune_sentences(self, batch_idxs):
        self.base.prune_sentences(batch_idxs)

    def update_constraints(self, active_hypos):
        self.base.update_constraints(active_hypos)

    def step(self, step, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None):
        """``lprobs``: bsz x beam x V."""
        if self.limits is not None and original_batch_idxs is not None:
            rows = original_batch_idxs
            if self.limits.device != rows.device:  # moved once per batch, not per step
                self.limits = self.limits.to(rows.device)
                self.ids = None if self.ids is None else self.ids.to(rows.device)
            if self.ids is not None:
                rows = torch.searchsorted(self.ids, rows)
            done = self.limits[rows] <= step  # bsz
            if bool(done.any()):
                lprobs = lprobs.clone()
                lprobs[done, :, : self.eos] = float("-inf")
                lprobs[done, :, self.eos + 1:] = float("-inf")
        return self.base.step(step, lprobs, scores, prev_output_tokens, original_batch_idxs)


def own_max_lens(generator, src_lengths) -> torch.Tensor:
    """The length limit fairseq's ``generator`` applies to each sentence decoded alone:
    ``min(int(a * n + b), max_len - 1)`` with n its source length incl. EOS (its width alone)."""
    a, b, cap = generator.max_len_a, generator.max_len_b, generator.max_len - 1
    limits = [min(int(a * int(n) + b), cap) for n in src_lengths]
    short = [n for n, lim in zip(src_lengths, limits) if lim < generator.min_len]
    if short:  # fairseq alone refuses it (assert min_len <= max_len); in a batch every token would be -inf
        raise ValueError(f"a source of {int(short[0])} tokens gets a length limit of {min(limits)} "
                         f"(max_len_a {a}, max_len_b {b}), below min_len {generator.min_len}: "
                         "raise the limit or lower min_len")
    return torch.tensor(limits, dtype=torch.long)


def limit_each_sentence(generator):
    """``generator`` (in place) with its search wrapped in ``SentenceMaxLen``, when it is a
    SequenceGenerator that caps by a * source + b (not a scorer, not ``match_source_len``)."""
    from fairseq.sequence_generator import SequenceGenerator

    if isinstance(generator, SequenceGenerator) and not generator.match_source_len \
            and not isinstance(generator.search, SentenceMaxLen):
        generator.search = SentenceMaxLen(generator.search, generator.tgt_dict)
    return generator


@contextmanager
def sentence_limits(generator, sample: Dict, prefix_tokens: Optional[torch.Tensor] = None):
    """While generating ``sample``: each sentence's own limit on a ``limit_each_sentence`` generator
    (nothing on another). The source lengths are ``net_input["src_lengths"]`` (else the non-pad
    tokens of ``src_tokens``); rows are looked up by ``sample["id"]``, as SequenceGenerator does."""
    strategy = getattr(generator, "search", None)
    if not isinstance(strategy, SentenceMaxLen):
        yield
        return
    net_input = sample["net_input"]
    lengths = net_input.get("src_lengths")
    if lengths is None:
        lengths = net_input["src_tokens"].ne(generator.pad).sum(1)
    limits = own_max_lens(generator, lengths.view(-1).tolist())
    if prefix_tokens is not None and prefix_tokens.size(1) > int(limits.min()):
        raise ValueError(f"--prefix-size {prefix_tokens.size(1)} is longer than a sentence's own length limit "
                         f"({int(limits.min())} tokens): lower --prefix-size or raise --max-len-a/--max-len-b")
    ids = sample.get("id")
    strategy.set_limits(limits, ids if isinstance(ids, torch.Tensor) else None)
    try:
        yield
    finally:
        strategy.set_limits(None)


def teacher_forcing_targets(log_probs: torch.Tensor, gold: torch.Tensor, pad: int, eos: int,
                            special: List[int]) -> List[torch.Tensor]:
    """Argmax of the teacher's next-token distribution given the gold prefix (one forward pass).

    ``log_probs``: B x T x V for the gold ``prev_output_tokens``; ``gold``: B x T (right
    padded, EOS last). Output i has the gold length: the argmax at every position but the
    last, where the gold sentence continues so special symbols (``special``: pad, bos, eos)
    are excluded, then EOS.
    """
    lp = log_probs.detach().float().clone()  # B x T x V
    lp[..., special] = float("-inf")
    best = lp.argmax(-1)  # B x T
    out = []
    for i in range(gold.size(0)):
        n = int(gold[i].ne(pad).sum())  # gold length incl. EOS
        out.append(torch.cat([best[i, : n - 1], best.new_tensor([eos])]).cpu())
    return out


class TeacherDecoder:
    """Decode fairseq batches with a teacher (list of models + target dictionary)."""

    def __init__(self, models, tgt_dict, cfg: DecodingConfig):
        self.models, self.tgt_dict, self.cfg = list(models), tgt_dict, cfg
        self.search = None if cfg.decoding == "teacher_forcing" else SentenceMaxLen(base_search(tgt_dict, cfg), tgt_dict)
        self.generator = None if self.search is None else build_generator(self.models, tgt_dict, cfg, self.search)
        self.special = sorted({tgt_dict.pad(), tgt_dict.bos(), tgt_dict.eos()})
        self.pad = tgt_dict.pad()

    def own_max_len(self, src_len: int) -> int:
        """The length limit fairseq applies to a sentence decoded alone (``src_len`` incl. EOS)."""
        return int(own_max_lens(self.generator, [src_len])[0])

    @torch.inference_mode()
    def __call__(self, sample: Dict, net_input: Optional[Dict] = None) -> List[List[Dict]]:
        """Per sentence (batch order): ``[{"tokens": LongTensor (ends in EOS), "score": float}, ...]``.

        ``net_input`` overrides ``sample["net_input"]`` (e.g. the teacher's clean source).
        """
        net_input = net_input or sample["net_input"]
        if self.cfg.decoding == "teacher_forcing":
            return self._teacher_forcing(sample, net_input)
        lengths = net_input["src_tokens"].ne(self.pad).sum(1).tolist()  # incl. EOS
        self.search.set_limits(own_max_lens(self.generator, lengths))
        try:
            hypos = self.generator.generate(self.models, {"net_input": net_input})
        finally:
            self.search.set_limits(None)
        out = []
        for sent in hypos:
            out.append([{"tokens": h["tokens"].cpu(), "score": float(h["score"])} for h in sent[: self.cfg.nbest]])
        return out

    def _teacher_forcing(self, sample: Dict, net_input: Dict) -> List[List[Dict]]:
        if sample.get("target") is None:
            raise ValueError("teacher forcing needs the gold target (the split has no target side)")
        tf_input = dict(net_input)
        tf_input["prev_output_tokens"] = sample["net_input"]["prev_output_tokens"]
        log_probs = averaged_log_probs(self.models, tf_input)  # B x T x V
        targets = teacher_forcing_targets(log_probs, sample["target"], self.tgt_dict.pad(),
                                          self.tgt_dict.eos(), self.special)
        scores = log_probs.gather(-1, _pad_right(targets, self.tgt_dict.pad(), log_probs.size(1)).to(
            log_probs.device).unsqueeze(-1)).squeeze(-1)  # B x T
        out = []
        for i, t in enumerate(targets):
            out.append([{"tokens": t, "score": float(scores[i, : t.numel()].mean())}])
        return out


def averaged_log_probs(models, net_input: Dict) -> torch.Tensor:
    """fp32 log of the models' averaged probabilities.  # B x T x V"""
    lps = [torch.log_softmax(m(**net_input)[0].float(), dim=-1) for m in models]
    if len(lps) == 1:
        return lps[0]
    return torch.logsumexp(torch.stack(lps), dim=0) - torch.log(torch.tensor(float(len(lps))))


def _pad_right(seqs: List[torch.Tensor], pad: int, length: int) -> torch.Tensor:
    out = torch.full((len(seqs), length), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : s.numel()] = s
    return out


def is_empty(tokens: torch.Tensor, eos: int) -> bool:
    """A hypothesis with no token before its EOS."""
    return tokens.numel() == 0 or (tokens.numel() == 1 and int(tokens[0]) == eos)


def collate_targets(targets: List[torch.Tensor], pad: int, eos: int, device=None):
    """Right-padded targets and their ``prev_output_tokens`` (EOS moved to the front).

    As fairseq's ``LanguagePairDataset`` collates them.  # B x T, B x T
    """
    from fairseq.data import data_utils

    target = data_utils.collate_tokens(targets, pad, eos, left_pad=False)
    prev = data_utils.collate_tokens(targets, pad, eos, left_pad=False, move_eos_to_beginning=True)
    if device is not None:
        target, prev = target.to(device), prev.to(device)
    return target, prev
