"""Word-level input noise: deletion, substitution and swap (arXiv 2312.08585).

Pure functions over a list of *words*, where a word is a tuple of units: one unit for
plain text, several pieces for sentencepiece (pieces joined at ``▁`` boundaries) or
subword-nmt BPE (``@@`` continuations), token ids for binarized data. The same code
therefore serves the offline tool (``fairseq-kd-noise``) and the on-the-fly dataset
(``fairseq_kd.data.noisy_dataset``).

Determinism: every line gets its own ``random.Random`` seeded from
``(seed, side, epoch, line index)``, so any line can be regenerated alone.

Operations, applied in this order, each with its own per-word rate:

* deletion ``p_del``: each word is dropped with probability ``p_del``; a line never
  becomes empty (if every word was drawn for deletion, one of them is kept).
* substitution ``p_sub``: each surviving word is replaced, with probability ``p_sub``,
  by a *different* word drawn from a unigram distribution (the corpus's own counts or
  a vocabulary file).
* swap ``p_swap`` within window ``k``: at each position, with probability ``p_swap``,
  the word there is exchanged with another word at most ``k`` positions away, chosen
  among those exchanges that keep *both* words within ``k`` positions of where they
  started. So no word ever ends farther than ``k`` from its original position.

Realized rates (``NoiseStats.rates``) are per word the operation was applied to:
deletion over input words, substitution and swap over the words left after deletion.
"""
import bisect
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

from fairseq_kd import fileio
from fairseq_kd.errors import KDInputError

WORD_START = "\u2581"  # sentencepiece's word-boundary marker "▁"
BPE_CONT = "@@"  # subword-nmt continuation suffix
UNITS = ("auto", "word", "sentencepiece", "bpe")
SIDES = ("source", "target", "both")
MAX_SUBSTITUTE_DRAWS = 16  # redraws when the unigram draw equals the original word

Word = Tuple[Hashable, ...]


@dataclass
class NoiseConfig:
    """Per-word rates of each operation and the swap window."""

    deletion: float = 0.0
    substitution: float = 0.0
    swap: float = 0.0
    swap_window: int = 3

    def __post_init__(self):
        for name in ("deletion", "substitution", "swap"):
            p = getattr(self, name)
            if not 0.0 <= float(p) <= 1.0:
                raise KDInputError(f"noise {name} rate {p} is not a probability: pass a value in [0, 1]")
        if int(self.swap_window) < 1:
            raise KDInputError(f"swap window {self.swap_window} must be >= 1 (words may move at most k positions)")

    @property
    def active(self) -> bool:
        return self.deletion > 0 or self.substitution > 0 or self.swap > 0


@dataclass
class NoiseStats:
    """Counts of what was done; ``rates()`` gives the realized rate of each operation."""

    lines: int = 0
    empty_input_lines: int = 0  # passed through unchanged (nothing to noise)
    words: int = 0  # input words
    deleted: int = 0
    kept_to_avoid_empty: int = 0  # lines where a word drawn for deletion was kept
    substituted: int = 0
    swaps: int = 0  # exchange operations
    displaced: int = 0  # words not at their original position in the output

    def add(self, other: "NoiseStats") -> "NoiseStats":
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)
        return self

    def rates(self) -> Dict[str, float]:
        after_del = max(self.words - self.deleted, 0)
        return {
            "deletion": self.deleted / self.words if self.words else 0.0,
            "substitution": self.substituted / after_del if after_del else 0.0,
            "swap": self.swaps / after_del if after_del else 0.0,
            "displaced": self.displaced / after_del if after_del else 0.0,
        }

    def to_dict(self) -> Dict:
        return {**asdict(self), "rates": self.rates()}


class UnigramSampler:
    """Draws words in proportion to their counts (bisect over cumulative counts)."""

    def __init__(self, counts: Dict[Word, float]):
        items = [(w, float(c)) for w, c in counts.items() if c > 0]
        if not items:
            raise KDInputError("the unigram vocabulary for substitution is empty: give a non-empty corpus or --vocab file")
        items.sort(key=lambda wc: (-wc[1], repr(wc[0])))  # stable order -> reproducible draws
        self.words: List[Word] = [w for w, _ in items]
        self.cum: List[float] = []
        total = 0.0
        for _, c in items:
            total += c
            self.cum.append(total)
        self.total = total

    def __len__(self) -> int:
        return len(self.words)

    def sample(self, rng: random.Random) -> Word:
        i = bisect.bisect_right(self.cum, rng.random() * self.total)
        return self.words[min(i, len(self.words) - 1)]

    @classmethod
    def from_corpus(cls, lines_of_words: Iterable[Sequence[Word]]) -> "UnigramSampler":
        counts: Counter = Counter()
        for words in lines_of_words:
            counts.update(words)
        return cls(counts)


# ---------------------------------------------------------------- words <-> units


def group_words(units: Sequence[Hashable], starts_word: Callable[[int], bool]) -> List[Word]:
    """Group units into words; ``starts_word(i)`` says whether unit ``i`` opens a new word."""
    words: List[list] = []
    for i, u in enumerate(units):
        if not words or starts_word(i):
            words.append([u])
        else:
            words[-1].append(u)
    return [tuple(w) for w in words]


def split_words(tokens: Sequence[str], unit: str) -> List[Word]:
    """Whitespace tokens -> words for ``unit`` in word / sentencepiece / bpe."""
    if unit == "word":
        return [(t,) for t in tokens]
    if unit == "sentencepiece":
        return group_words(tokens, lambda i: tokens[i].startswith(WORD_START))
    if unit == "bpe":
        return group_words(tokens, lambda i: i == 0 or not tokens[i - 1].endswith(BPE_CONT))
    raise KDInputError(f"unknown unit {unit!r}: choose one of {UNITS[1:]}")


def join_words(words: Sequence[Word]) -> str:
    return " ".join(" ".join(w) for w in words)


def detect_unit(lines: Iterable[str], max_lines: int = 1000) -> str:
    """``sentencepiece`` if pieces carry ``▁``, ``bpe`` if tokens end in ``@@``, else ``word``."""
    bpe = False
    for n, line in enumerate(lines):
        if n >= max_lines:
            break
        if WORD_START in line:
            return "sentencepiece"
        bpe = bpe or any(t.endswith(BPE_CONT) for t in line.split())
    return "bpe" if bpe else "word"


# ---------------------------------------------------------------- the operations


def line_rng(seed: int, index: int, side: str = "source", epoch: Optional[int] = None) -> random.Random:
    """The random stream of one line: a function of (seed, side, epoch, index) only."""
    return random.Random(f"fairseq-kd-noise|{int(seed)}|{side}|{epoch}|{int(index)}")


def delete_words(words: List[Word], p: float, rng: random.Random, stats: NoiseStats) -> List[Word]:
    """Drop each word with probability ``p``; keep one drawn word if all were drawn."""
    if p <= 0 or not words:
        return list(words)
    drop = [rng.random() < p for _ in words]
    kept = [w for w, d in zip(words, drop) if not d]
    if not kept:
        keep = rng.randrange(len(words))
        kept = [words[keep]]
        stats.kept_to_avoid_empty += 1
    stats.deleted += len(words) - len(kept)
    return kept


def substitute_words(words: List[Word], p: float, rng: random.Random, sampler: Optional[UnigramSampler],
                     stats: NoiseStats) -> List[Word]:
    """Replace each word with probability ``p`` by a different unigram draw."""
    if p <= 0 or sampler is None:
        return list(words)
    out = list(words)
    for i, w in enumerate(words):
        if rng.random() >= p:
            continue
        for _ in range(MAX_SUBSTITUTE_DRAWS):
            new = sampler.sample(rng)
            if new != w:
                out[i] = new
                stats.substituted += 1
                break
    return out


def swap_words(words: List[Word], p: float, window: int, rng: random.Random, stats: NoiseStats) -> List[Word]:
    """At each position, with probability ``p``, exchange with a word <= ``window`` away.

    Only exchanges that leave both words within ``window`` of their original
    positions are candidates, so displacement is bounded by the window.
    """
    n = len(words)
    if p <= 0 or n < 2:
        return list(words)
    out = list(words)
    origin = list(range(n))  # origin[slot] = original position of the word now in slot
    for i in range(n):
        if rng.random() >= p:
            continue
        cands = [j for j in range(max(0, i - window), min(n, i + window + 1))
                 if j != i and abs(origin[i] - j) <= window and abs(origin[j] - i) <= window]
        if not cands:
            continue
        j = cands[rng.randrange(len(cands))]
        out[i], out[j] = out[j], out[i]
        origin[i], origin[j] = origin[j], origin[i]
        stats.swaps += 1
    stats.displaced += sum(1 for slot, o in enumerate(origin) if slot != o)
    return out


def noise_words(words: Sequence[Word], cfg: NoiseConfig, rng: random.Random,
                sampler: Optional[UnigramSampler] = None) -> Tuple[List[Word], NoiseStats]:
    """Apply deletion, substitution and swap to one line of words."""
    stats = NoiseStats(lines=1, words=len(words))
    if not words:
        stats.empty_input_lines = 1
        return [], stats
    out = delete_words(list(words), cfg.deletion, rng, stats)
    out = substitute_words(out, cfg.substitution, rng, sampler, stats)
    out = swap_words(out, cfg.swap, cfg.swap_window, rng, stats)
    return out, stats


def noise_line(line: str, cfg: NoiseConfig, seed: int, index: int, side: str = "source",
               unit: str = "word", sampler: Optional[UnigramSampler] = None) -> Tuple[str, NoiseStats]:
    """Noise one text line (its ``index`` in the file seeds it); returns text and counts."""
    words = split_words(line.split(), unit)
    out, stats = noise_words(words, cfg, line_rng(seed, index, side), sampler)
    return join_words(out), stats


# ---------------------------------------------------------------- vocabulary files


def read_vocab(path: str, unit: str) -> UnigramSampler:
    """Vocabulary for substitution: one word per line, optional ``<TAB>count`` (default 1).

    A word may hold several space-separated pieces (sentencepiece / BPE). A line with no
    tab but a trailing integer (fairseq ``dict.txt`` style ``word count``) also works
    for single-unit words.
    """
    counts: Dict[Word, float] = {}
    for n, line in enumerate(fileio.read_lines(path, "vocabulary file"), 1):
        if not line.strip():
            continue
        if "\t" in line:
            text, count = line.rsplit("\t", 1)
        else:
            parts = line.split()
            text, count = (parts[0], parts[1]) if len(parts) == 2 and _is_number(parts[1]) else (line, "1")
        if not _is_number(count):
            raise KDInputError(f"{path}:{n}: count {count!r} is not a number; write 'word<TAB>count' per line")
        if not 0 <= float(count) < math.inf:  # NaN, inf and negatives would be dropped or skew every draw
            raise KDInputError(f"{path}:{n}: count {count!r} is not a finite number >= 0; fix that line "
                               f"(counts are occurrences)")
        words = split_words(text.split(), unit)
        if len(words) != 1:
            raise KDInputError(f"{path}:{n}: {text!r} is {len(words)} words for unit={unit}; write one word per line")
        counts[words[0]] = counts.get(words[0], 0.0) + float(count)
    return UnigramSampler(counts)


def write_vocab(sampler: UnigramSampler, path: str) -> None:
    """Write counts in the format ``read_vocab`` reads (to regenerate single lines later)."""
    lines, prev = [], 0.0
    for w, c in zip(sampler.words, sampler.cum):
        count = c - prev
        prev = c
        lines.append(f"{' '.join(map(str, w))}\t{int(count) if count == int(count) else count}")
    fileio.atomic_write_lines(path, lines)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
