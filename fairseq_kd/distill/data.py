"""The data side of ``fairseq-kd-distill``: a binarized split with its dictionaries,
length-sorted batches, and pieces <-> text (sentencepiece)."""
import os
from typing import List, Optional

import numpy as np
import torch

from fairseq_kd.errors import KDInputError
from fairseq_kd.langpair import split_prefix


def infer_langs(data: str, split: str, src: Optional[str], tgt: Optional[str]):
    """Language pair from ``{split}.{src}-{tgt}.{src}.idx`` when not given."""
    if src and tgt:
        return src, tgt
    for fname in sorted(os.listdir(data)):
        parts = fname.split(".")
        if fname.startswith(split + ".") and fname.endswith(".idx") and len(parts) == 4 and "-" in parts[1]:
            a, b = parts[1].split("-", 1)
            if parts[2] == a:
                return src or a, tgt or b
    raise KDInputError(f"no binarized split '{split}' in {data} (expected {split}.SRC-TGT.SRC.idx): run "
                       f"fairseq-preprocess with the teacher's dictionaries, or pass --source-lang/--target-lang")


class SplitData:
    """The binarized split (source, optional gold target) and its dictionaries."""

    def __init__(self, data: str, split: str, src: str, tgt: str):
        from fairseq.data import Dictionary, LanguagePairDataset, data_utils

        self.data, self.split, self.src, self.tgt = data, split, src, tgt
        self.src_dict_file = os.path.join(data, f"dict.{src}.txt")
        self.tgt_dict_file = os.path.join(data, f"dict.{tgt}.txt")
        for f in (self.src_dict_file, self.tgt_dict_file):
            if not os.path.isfile(f):
                raise KDInputError(f"dictionary {f} not found: --data must be a fairseq-preprocess output dir")
        self.src_dict, self.tgt_dict = Dictionary.load(self.src_dict_file), Dictionary.load(self.tgt_dict_file)
        self.src_prefix = split_prefix(data, split, src, tgt, src)
        if self.src_prefix is None:
            raise KDInputError(f"no binarized source for split '{split}' ({src}-{tgt}) in {data}: "
                               f"check --data/--split/--source-lang")
        self.tgt_prefix = split_prefix(data, split, src, tgt, tgt)
        self.src_ds = data_utils.load_indexed_dataset(self.src_prefix, self.src_dict, "mmap")
        self.tgt_ds = data_utils.load_indexed_dataset(self.tgt_prefix, self.tgt_dict, "mmap") if self.tgt_prefix else None
        if self.tgt_ds is not None and len(self.tgt_ds) != len(self.src_ds):
            raise KDInputError(f"{self.src_prefix} has {len(self.src_ds)} sentences but {self.tgt_prefix} has "
                               f"{len(self.tgt_ds)}: re-binarize the split")
        self.pairs = LanguagePairDataset(
            self.src_ds, self.src_ds.sizes, self.src_dict, self.tgt_ds,
            None if self.tgt_ds is None else self.tgt_ds.sizes, self.tgt_dict, left_pad_source=True,
            left_pad_target=False, shuffle=False)

    def __len__(self):
        return len(self.src_ds)

    def fingerprint(self) -> str:
        """Token content of both sides and the dictionaries' symbols (what the ids mean)."""
        from fairseq_kd import fingerprint as fp

        parts = [fp.prefix_fingerprint(p) for p in (self.src_prefix, self.tgt_prefix) if p]
        parts += [fp.dictionary_fingerprint(self.src_dict), fp.dictionary_fingerprint(self.tgt_dict)]
        return ":".join(p[:16] for p in parts)

    def gold(self, i: int) -> Optional[torch.Tensor]:
        return None if self.tgt_ds is None else self.tgt_ds[i]

    def batches(self, ids: range, max_tokens: int, batch_size: int) -> List[List[int]]:
        """Length-sorted batches of ``ids`` (padded size <= ``max_tokens``), as fairseq-generate makes them.

        Mixed source lengths: every backend gives each sentence its own length limit, so an
        output does not depend on its batch mates.
        """
        ids = np.asarray(list(ids))
        order = ids[np.lexsort((ids, self.src_ds.sizes[ids]))]  # by source length, then id
        batches, cur = [], []
        for i in order.tolist():
            n = int(self.src_ds.sizes[i])  # the longest so far: ids are sorted by length
            if cur and (len(cur) + 1 > batch_size or n * (len(cur) + 1) > max_tokens):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        return batches


class Detokenizer:
    """Pieces -> text with sentencepiece (identity without a model)."""

    def __init__(self, model: Optional[str]):
        self.sp = None
        if model:
            import sentencepiece as spm

            if not os.path.isfile(model):
                raise KDInputError(f"sentencepiece model not found: {model} (fix --spm-model)")
            self.sp = spm.SentencePieceProcessor(model_file=model)

    def __call__(self, pieces: str) -> str:
        return pieces if self.sp is None else self.sp.decode(pieces.split())


def to_pieces(dictionary, tokens) -> str:
    """Ids -> space-joined dictionary symbols, EOS and BOS dropped: ``dictionary.string(tokens)``'s
    text, without its per-element tensor iteration (a third of a 1,000-sentence CTranslate2 run)."""
    ids = tokens.tolist() if torch.is_tensor(tokens) else list(tokens)
    skip, symbols = (dictionary.eos(), dictionary.bos()), dictionary.symbols
    return " ".join(symbols[i] for i in ids if i != skip[0] and i != skip[1])
