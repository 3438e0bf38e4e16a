"""Teacher decoding for sequence-level KD: beam, greedy, sampling and teacher forcing.

All modes return, per sentence of a fairseq batch, a list of hypotheses (best first),
each a 1-D LongTensor of target ids ending in EOS, in the teacher's target dictionary.
The same function serves the offline tool (``fairseq-kd-distill``) and the online
criteria (``seq_kd``, ``hybrid_kd``), so both produce the same targets.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

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
        if self.decoding == "sampling":
            parts += [f"topk{self.sampling_topk}", f"topp{self.sampling_topp}", f"temp{self.temperature}"]
        if self.decoding != "teacher_forcing":
            parts += [f"maxlen{self.max_len_a}x+{self.max_len_b}", f"minlen{self.min_len}"]
        return "-".join(parts)


def build_generator(models, tgt_dict, cfg: DecodingConfig):
    """fairseq's ``SequenceGenerator`` over the teacher model(s) for ``cfg``."""
    from fairseq import search
    from fairseq.sequence_generator import SequenceGenerator

    strategy = None
    if cfg.decoding == "sampling":
        strategy = search.Sampling(tgt_dict, cfg.sampling_topk, cfg.sampling_topp)
    return SequenceGenerator(
        list(models), tgt_dict, beam_size=cfg.beam, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b,
        min_len=cfg.min_len, len_penalty=cfg.lenpen, temperature=cfg.temperature, search_strategy=strategy,
    )


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
        self.generator = None if cfg.decoding == "teacher_forcing" else build_generator(self.models, tgt_dict, cfg)
        self.special = sorted({tgt_dict.pad(), tgt_dict.bos(), tgt_dict.eos()})
        self.pad = tgt_dict.pad()
        self.redecoded = 0  # sentences decoded a second time, alone (see ``overrun_rows``)

    def own_max_len(self, src_len: int) -> int:
        """The length limit fairseq applies to a sentence decoded alone (``src_len`` incl. EOS)."""
        return min(int(self.cfg.max_len_a * src_len + self.cfg.max_len_b), self.generator.max_len - 1)

    def overrun_rows(self, net_input: Dict, hypos: List[List[Dict]]) -> List[int]:
        """Rows whose search ran past the limit they would have had alone.

        fairseq's limit is a * (padded source width) + b for the whole batch, so in a
        batch of mixed lengths a short sentence may search longer than alone. Up to its
        own limit m the search is the same, so the outputs can only differ when the search
        reached step m, which shows as a finished hypothesis of more than m tokens (EOS
        included). Those rows are redone alone (conservatively: some would have come out
        the same), which makes every output independent of its batch mates.
        """
        src = net_input["src_tokens"]  # B x S, left-padded
        lengths = src.ne(self.pad).sum(1).tolist()
        if min(lengths) == src.size(1):  # no padding: every row has the batch's limit
            return []
        rows = []
        for j, (n, sent) in enumerate(zip(lengths, hypos)):
            m = self.own_max_len(n)
            if any(h["tokens"].numel() > m for h in sent):
                rows.append(j)
        self.redecoded += len(rows)
        return rows

    @torch.inference_mode()
    def __call__(self, sample: Dict, net_input: Optional[Dict] = None) -> List[List[Dict]]:
        """Per sentence (batch order): ``[{"tokens": LongTensor (ends in EOS), "score": float}, ...]``.

        ``net_input`` overrides ``sample["net_input"]`` (e.g. the teacher's clean source).
        """
        net_input = net_input or sample["net_input"]
        if self.cfg.decoding == "teacher_forcing":
            return self._teacher_forcing(sample, net_input)
        hypos = self.generator.generate(self.models, {"net_input": net_input})
        for j in self.overrun_rows(net_input, hypos):  # decoded past their own length limit: redo alone
            hypos[j] = self.generator.generate(self.models, {"net_input": single_row(net_input, j, self.pad)})[0]
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


def single_row(net_input: Dict, j: int, pad: int) -> Dict:
    """Row ``j`` of a (left-padded) fairseq ``net_input`` as a batch of one, padding removed."""
    out = {k: (v[j: j + 1] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in net_input.items()}
    src = out["src_tokens"]
    out["src_tokens"] = src[src.ne(pad)].view(1, -1)
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
