"""Word noise: realized rates, determinism, whole words, window, never empty."""
import random

import pytest

from fairseq_kd import noise as N
from fairseq_kd.errors import KDInputError


def corpus(n=10000, seed=0, vocab=400, lo=3, hi=30):
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(vocab)}" for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def run_all(lines, cfg, seed=1, unit="word", sampler=None, side="source"):
    total, out = N.NoiseStats(), []
    for i, line in enumerate(lines):
        text, st = N.noise_line(line, cfg, seed, i, side, unit, sampler)
        total.add(st)
        out.append(text)
    return out, total


@pytest.mark.parametrize("rates", [(0.1, 0.0, 0.0), (0.0, 0.1, 0.0), (0.0, 0.0, 0.1), (0.1, 0.1, 0.1), (0.3, 0.2, 0.25)])
def test_realized_rates_within_10_percent_on_10k_lines(rates):
    lines = corpus()
    cfg = N.NoiseConfig(*rates, swap_window=3)
    sampler = N.UnigramSampler.from_corpus(N.split_words(l.split(), "word") for l in lines)
    _, stats = run_all(lines, cfg, sampler=sampler)
    realized = stats.rates()
    for name, want in zip(("deletion", "substitution", "swap"), rates):
        if want == 0:
            assert realized[name] == 0
        else:
            assert abs(realized[name] - want) <= 0.1 * want, (name, realized[name], want)


def test_rates_are_counts_that_match_the_output():
    """The counts are what happened: words out = words in - deleted; substituted words differ."""
    lines = corpus(2000, seed=3)
    cfg = N.NoiseConfig(0.2, 0.0, 0.0)
    out, stats = run_all(lines, cfg)
    assert sum(len(l.split()) for l in out) == stats.words - stats.deleted
    cfg = N.NoiseConfig(0.0, 0.3, 0.0)
    sampler = N.UnigramSampler.from_corpus(N.split_words(l.split(), "word") for l in lines)
    out, stats = run_all(lines, cfg, sampler=sampler)
    changed = sum(a != b for x, y in zip(lines, out) for a, b in zip(x.split(), y.split()))
    assert changed == stats.substituted > 0


def test_same_seed_same_output_and_single_line_regenerates_alone():
    lines = corpus(500, seed=5)
    cfg = N.NoiseConfig(0.15, 0.15, 0.15, 2)
    sampler = N.UnigramSampler.from_corpus(N.split_words(l.split(), "word") for l in lines)
    a, _ = run_all(lines, cfg, seed=7, sampler=sampler)
    b, _ = run_all(lines, cfg, seed=7, sampler=sampler)
    c, _ = run_all(lines, cfg, seed=8, sampler=sampler)
    assert a == b and a != c
    for i in (0, 123, 499):
        alone, _ = N.noise_line(lines[i], cfg, 7, i, "source", "word", sampler)
        assert alone == a[i]
    # the other side uses an independent stream
    t, _ = run_all(lines, cfg, seed=7, sampler=sampler, side="target")
    assert t != a


def test_never_empty_and_alignment():
    lines = ["a", "b c", "d e f"] * 300 + [""]
    out, stats = run_all(lines, N.NoiseConfig(deletion=1.0))
    assert len(out) == len(lines)
    assert all(o.split() and len(o.split()) == 1 for o in out[:-1])  # one word always survives
    assert out[-1] == "" and stats.empty_input_lines == 1  # empty input passes through
    assert stats.kept_to_avoid_empty == len(lines) - 1


def test_swap_moves_words_only_within_window():
    rng = random.Random(11)
    for window in (1, 2, 4):
        cfg = N.NoiseConfig(swap=0.9, swap_window=window)
        moved_far = 0
        for i in range(300):
            n = rng.randint(1, 25)
            words = [f"u{j}" for j in range(n)]  # unique words: position is identity
            out, stats = N.noise_line(" ".join(words), cfg, 3, i)
            toks = out.split()
            assert sorted(toks) == sorted(words)
            disp = [abs(toks.index(w) - j) for j, w in enumerate(words)]
            assert max(disp) <= window
            moved_far += max(disp) == window
            assert stats.displaced == sum(d > 0 for d in disp)
        assert moved_far > 0  # the window is actually used, not just adjacent swaps


def test_sentencepiece_pieces_move_as_whole_words():
    line = "▁The ▁sun fl ower s ▁are ▁bright ly ▁yellow ."
    words = N.split_words(line.split(), "sentencepiece")
    assert words == [("▁The",), ("▁sun", "fl", "ower", "s"), ("▁are",), ("▁bright", "ly"), ("▁yellow", ".")]
    whole = {" ".join(w) for w in words}
    for i in range(200):
        out, _ = N.noise_line(line, N.NoiseConfig(0.3, 0.0, 0.5, 2), 1, i, unit="sentencepiece")
        pieces = out.split()
        regrouped = {" ".join(w) for w in N.split_words(pieces, "sentencepiece")}
        assert regrouped <= whole and pieces[0].startswith("▁")


def test_bpe_words_and_unit_detection():
    assert N.split_words("the sun@@ fl@@ ower is".split(), "bpe") == [("the",), ("sun@@", "fl@@", "ower"), ("is",)]
    assert N.detect_unit(["▁a ▁b"]) == "sentencepiece"
    assert N.detect_unit(["a@@ b c"]) == "bpe"
    assert N.detect_unit(["a b c"]) == "word"


def test_substitution_draws_follow_the_unigram_distribution():
    sampler = N.UnigramSampler({("a",): 3, ("b",): 1})
    rng = random.Random(0)
    draws = [sampler.sample(rng) for _ in range(20000)]
    assert abs(draws.count(("a",)) / len(draws) - 0.75) < 0.02
    # a substitute always differs from the original word
    out, st = N.noise_line("a a a a b b", N.NoiseConfig(substitution=1.0), 1, 0, sampler=sampler)
    assert out == "b b b b a a" and st.substituted == 6


def test_vocab_file_round_trip(tmp_path):
    lines = corpus(300, seed=2)
    sampler = N.UnigramSampler.from_corpus(N.split_words(l.split(), "word") for l in lines)
    N.write_vocab(sampler, tmp_path / "v.txt")
    again = N.read_vocab(str(tmp_path / "v.txt"), "word")
    assert again.words == sampler.words and again.cum == sampler.cum
    (tmp_path / "bad.txt").write_text("a\tx\n")
    with pytest.raises(KDInputError, match="bad.txt:1"):
        N.read_vocab(str(tmp_path / "bad.txt"), "word")


def test_bad_rates_are_refused():
    with pytest.raises(KDInputError):
        N.NoiseConfig(deletion=1.5)
    with pytest.raises(KDInputError):
        N.NoiseConfig(swap_window=0)
