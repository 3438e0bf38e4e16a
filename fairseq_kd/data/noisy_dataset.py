"""On-the-fly word noise for a ``LanguagePairDataset`` (the ``kd_translation`` train split).

Each item's source and/or target token ids are grouped into whole words (sentencepiece
``▁`` boundaries, ``@@`` BPE continuations, or one token per word), then noised with
``fairseq_kd.noise`` using a random stream seeded by ``(seed, side, epoch, index)``: the
same item gets the same noise within an epoch and fresh noise in the next one
(``set_epoch``), whatever the batching or the number of workers.

When the source is noised and the teacher should read clean input
(``teacher_input="clean"``), each batch also carries ``teacher_net_input``: the clean
source tokens in the batch's (noisy-length) sort order, with the student's
``prev_output_tokens``, so the teacher's distributions line up with the student's
target positions.
"""
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, data_utils

from fairseq_kd import noise as N

logger = logging.getLogger(__name__)


@dataclass
class NoisyDatasetConfig:
    """What noise to apply, to which side, and what the teacher reads."""

    noise: N.NoiseConfig
    side: str = "source"  # source | target | both
    teacher_input: str = "clean"  # clean | noisy
    seed: int = 1


def word_starts(dictionary) -> np.ndarray:
    """``starts[id]``: does this token open a new word? (sentencepiece / word units)."""
    symbols = dictionary.symbols
    special = set(range(dictionary.nspecial))
    if any(s.startswith(N.WORD_START) for s in symbols):
        return np.array([i in special or s.startswith(N.WORD_START) for i, s in enumerate(symbols)])
    return np.ones(len(symbols), dtype=bool)


def bpe_continues(dictionary) -> Optional[np.ndarray]:
    """``cont[id]``: does this BPE token continue into the next one (``@@``)? None if no BPE."""
    cont = np.array([s.endswith(N.BPE_CONT) for s in dictionary.symbols])
    return cont if cont.any() and not any(s.startswith(N.WORD_START) for s in dictionary.symbols) else None


def ids_to_words(ids: List[int], starts: np.ndarray, cont: Optional[np.ndarray]) -> List[N.Word]:
    """Group token ids into whole words."""
    if cont is not None:
        return N.group_words(ids, lambda i: i == 0 or not cont[ids[i - 1]])
    return N.group_words(ids, lambda i: bool(starts[ids[i]]))


class NoisyLanguagePairDataset(BaseWrapperDataset):
    """Wraps a ``LanguagePairDataset``; items come out noised, batches may carry the clean source."""

    def __init__(self, dataset, cfg: NoisyDatasetConfig):
        super().__init__(dataset)
        if cfg.side not in N.SIDES:
            raise ValueError(f"noise side must be one of {N.SIDES}, got {cfg.side!r}")
        self.cfg = cfg
        self.epoch = 1
        self.sides = ["source", "target"] if cfg.side == "both" else [cfg.side]
        if "target" in self.sides and getattr(dataset, "tgt", None) is None:
            raise ValueError("target-side noise needs a dataset with targets")
        self._units = {}
        self.samplers: Dict[str, Optional[N.UnigramSampler]] = {}
        for side in self.sides:
            d = dataset.src_dict if side == "source" else dataset.tgt_dict
            self._units[side] = (word_starts(d), bpe_continues(d), d.eos(), d.bos())
            self.samplers[side] = self._build_sampler(side) if cfg.noise.substitution > 0 else None

    # --- noise ---------------------------------------------------------------
    def _build_sampler(self, side: str) -> N.UnigramSampler:
        """Unigram distribution over whole words of this side of the wrapped corpus."""
        data = self.dataset.src if side == "source" else self.dataset.tgt
        starts, cont, eos, bos = self._units[side]
        counts: Dict[N.Word, int] = {}
        for i in range(len(data)):
            body = self._strip(data[i].tolist(), eos, bos)[1]
            for w in ids_to_words(body, starts, cont):
                counts[w] = counts.get(w, 0) + 1
        logger.info("noise: %d distinct %s words for substitution", len(counts), side)
        return N.UnigramSampler(counts)

    @staticmethod
    def _strip(ids: List[int], eos: int, bos: int):
        """Split off a leading bos and a trailing eos, which are never noised."""
        head = [ids[0]] if ids and ids[0] == bos else []
        tail = [ids[-1]] if len(ids) > len(head) and ids[-1] == eos else []
        return head, ids[len(head):len(ids) - len(tail)], tail

    def noise_tokens(self, tokens: torch.Tensor, index: int, side: str) -> torch.Tensor:
        """Noise one item's token ids (deterministic in seed, side, epoch, index)."""
        starts, cont, eos, bos = self._units[side]
        head, body, tail = self._strip(tokens.tolist(), eos, bos)
        rng = N.line_rng(self.cfg.seed, index, side, epoch=self.epoch)
        words, _ = N.noise_words(ids_to_words(body, starts, cont), self.cfg.noise, rng, self.samplers[side])
        out = head + [t for w in words for t in w] + tail
        return torch.tensor(out, dtype=tokens.dtype)

    def __getitem__(self, index):
        item = dict(self.dataset[index])
        if "source" in self.sides:
            item["clean_source"] = item["source"]
            item["source"] = self.noise_tokens(item["source"], index, "source")
        if "target" in self.sides and item.get("target") is not None:
            item["target"] = self.noise_tokens(item["target"], index, "target")
        return item

    # --- batching --------------------------------------------------------------
    @property
    def gives_clean_teacher_input(self) -> bool:
        return "source" in self.sides and self.cfg.teacher_input == "clean"

    def collater(self, samples, pad_to_length=None):
        batch = self.dataset.collater(samples, pad_to_length=pad_to_length)
        if not batch or not self.gives_clean_teacher_input:
            return batch
        clean = {s["id"]: s["clean_source"] for s in samples}
        ordered = [clean[i] for i in batch["id"].tolist()]  # the batch's sort order
        d = self.dataset
        pad = d.src_dict.pad()
        src_tokens = data_utils.collate_tokens(  # B x S_clean
            ordered, pad, d.eos, d.left_pad_source, pad_to_multiple=getattr(d, "pad_to_multiple", 1))
        teacher_input = {
            "src_tokens": src_tokens,
            "src_lengths": torch.LongTensor([t.ne(pad).long().sum() for t in ordered]),  # B
        }
        if "prev_output_tokens" in batch["net_input"]:
            teacher_input["prev_output_tokens"] = batch["net_input"]["prev_output_tokens"]  # B x T
        batch["teacher_net_input"] = teacher_input
        return batch

    # --- epochs ----------------------------------------------------------------
    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False  # noise changes every epoch: workers must see the new epoch number

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        self.epoch = epoch

    def __getattr__(self, name):
        # Delegate LanguagePairDataset attributes (src_dict, tgt, left_pad_source, ...).
        if name.startswith("__") or "dataset" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)


def wrap_with_noise(dataset, noise: N.NoiseConfig, side: str, teacher_input: str, seed: int):
    """What ``KDTranslationTask.wrap_noise`` calls: the dataset itself when no rate is > 0."""
    if not noise.active:
        return dataset
    return NoisyLanguagePairDataset(dataset, NoisyDatasetConfig(noise, side, teacher_input, seed))
