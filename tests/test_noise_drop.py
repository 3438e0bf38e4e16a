"""docs/results/tools/noise_drop.py: each method's loss to source noise and the difference of two methods'
losses, against sacrebleu scores computed here from the same hypothesis files."""
import csv
import json
import random
import statistics

import pytest
import sacrebleu

from fairseq_kd.errors import KDInputError
from fairseq_kd.study.config import RESULT_FIELDS
from tests.helpers import load_results_tool

drop = load_results_tool("noise_drop")
check = load_results_tool("check_significance")
SIG = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
WORDS = "the a cat dog sat on mat red big small ran over under blue".split()


def _corpus(n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) for _ in range(n)]


REFS = _corpus(80, 1)


def _system(seed, keep):
    """REFS with each line, at rate 1 - keep, replaced by a random one (seeded)."""
    rng = random.Random(seed)
    other = _corpus(len(REFS), 100 + seed)
    return [r if rng.random() < keep else o for r, o in zip(REFS, other)]


def bleu(hyps):
    return sacrebleu.corpus_bleu(hyps, [REFS]).score


def _study(root, name, cells):
    """cells: {(method, noise, seed): hypotheses}; writes results.csv, the hyp files, study.json."""
    d = root / name
    rows = []
    for (method, noise, seed), hyps in cells.items():
        cell = f"{method}_noise{noise:g}_a_nodec_lr0.1_seed{seed}"
        (d / "cells" / cell).mkdir(parents=True)
        (d / "cells" / cell / "hyp.beam5.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
        rows.append({"method": method, "noise": f"{noise:g}", "arch": "a", "decoding": "-", "lr": "0.1",
                     "seed": str(seed), "teacher": "-", "search": "beam5", "parameters": "10",
                     "bleu": f"{bleu(hyps):.2f}", "chrf": "1.0", "tok_bleu": "1.0", "signature": SIG,
                     "train_time": "1.0", "updates": "4", "best_update": "4", "stop": "patience", "cell": cell,
                     "hyp": f"cells/{cell}/hyp.beam5.txt"})
    with open(d / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
        w.writeheader()
        w.writerows(rows)
    (root / "ref.txt").write_text("\n".join(REFS) + "\n", encoding="utf-8")
    (d / "study.json").write_text(json.dumps({"test_ref": str(root / "ref.txt")}))
    return d


# word degrades (its noisy students keep fewer reference lines), seq does not (the same outputs), and
# word_tnoisy (a teacher reading the noisy source) degrades less than word; seq's seed 3 has no clean run
SYSTEMS = {("word", 0, 1): _system(1, 0.8), ("word", 0, 2): _system(2, 0.7),
           ("seq", 0, 1): _system(3, 0.75), ("seq", 0, 2): _system(4, 0.8)}
NOISY = {("word", 0.3, 1): _system(5, 0.3), ("word", 0.3, 2): _system(6, 0.35),
         ("word_tnoisy", 0.3, 1): _system(7, 0.6), ("word_tnoisy", 0.3, 2): _system(8, 0.55),
         ("seq", 0.3, 1): SYSTEMS["seq", 0, 1], ("seq", 0.3, 2): SYSTEMS["seq", 0, 2], ("seq", 0.3, 3): _system(9, 0.1)}


@pytest.fixture
def studies(tmp_path):
    return _study(tmp_path, "clean", SYSTEMS), _study(tmp_path, "noisy", NOISY)


def _run(clean, noisy, *args, tmp_json=None):
    argv = ["--clean", str(clean), "--noisy", str(noisy), "--noise", "0.3", *args]
    return drop.main(argv + (["--json", str(tmp_json)] if tmp_json else []))


def test_drops_and_their_differences_are_the_sacrebleu_scores_combined(studies, tmp_path, capsys):
    clean, noisy = studies
    _run(clean, noisy, tmp_json=tmp_path / "out.json")
    got = json.loads((tmp_path / "out.json").read_text())
    methods = {e["method"]: e for e in got["methods"]}
    assert list(methods) == ["word", "word_tnoisy", "seq"]  # the report's method order

    def seed_mean(cells, m, noise, seeds=(1, 2)):
        return statistics.mean(bleu(cells[m, noise, s]) for s in seeds)

    word = methods["word"]
    assert word["drop_per_seed"] == pytest.approx([bleu(NOISY["word", 0.3, s]) - bleu(SYSTEMS["word", 0, s])
                                                   for s in (1, 2)], abs=0.01)  # the bleu column, 2 decimals
    assert word["drop"]["delta"] == pytest.approx(seed_mean(NOISY, "word", 0.3) - seed_mean(SYSTEMS, "word", 0))
    assert methods["word_tnoisy"]["clean_method"] == "word"  # its clean counterpart by default
    seq = methods["seq"]
    assert seq["seeds"] == [1, 2]  # seed 3 has no clean run: left out, not paired with another
    assert (seq["drop"]["delta"], seq["drop"]["ci_low"], seq["drop"]["ci_high"], seq["drop"]["p_value"]) == (0, 0, 0, 1)

    pairs = {(q["a"], q["b"]): q for q in got["pairs"]}
    assert set(pairs) == {("word", "word_tnoisy"), ("word", "seq"), ("word_tnoisy", "seq")}
    ws = pairs["word", "seq"]["b_minus_a"]
    assert ws["delta"] == pytest.approx((seed_mean(NOISY, "seq", 0.3) - seed_mean(SYSTEMS, "seq", 0))
                                        - (seed_mean(NOISY, "word", 0.3) - seed_mean(SYSTEMS, "word", 0)))
    assert ws["delta"] > 0 and ws["ci_low"] > 0  # seq loses nothing, word loses a lot: it shows
    table = tmp_path / "table.md"
    table.write_text(capsys.readouterr().out)
    findings, _, checked = check.check_file(table)
    assert checked >= 6 and findings == []  # every '*' agrees with its interval


def test_pairs_can_be_chosen(studies, tmp_path):
    clean, noisy = studies
    _run(clean, noisy, "--pairs", "seq:word_tnoisy", tmp_json=tmp_path / "out.json")
    pairs = json.loads((tmp_path / "out.json").read_text())["pairs"]
    assert [(q["a"], q["b"]) for q in pairs] == [("seq", "word_tnoisy")]
    assert pairs[0]["b_minus_a"]["delta"] == pytest.approx(pairs[0]["drop_b"] - pairs[0]["drop_a"])


def test_a_method_without_clean_cells_is_refused_until_mapped(tmp_path):
    clean = _study(tmp_path, "clean", SYSTEMS)
    noisy = _study(tmp_path, "noisy", {("hybrid", 0.3, 1): _system(5, 0.3)})
    with pytest.raises(KDInputError, match="hybrid at noise 0.3 .* no hybrid cell at noise 0 in --clean.*--clean-of"):
        _run(clean, noisy)
    _run(clean, noisy, "--clean-of", "hybrid=seq", tmp_json=tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text())["methods"][0]["clean_method"] == "seq"


def test_one_seed_in_two_studies_is_refused(tmp_path):
    clean = _study(tmp_path, "clean", SYSTEMS)
    again = _study(tmp_path, "again", {("word", 0, 1): SYSTEMS["word", 0, 1]})
    noisy = _study(tmp_path, "noisy", NOISY)
    with pytest.raises(KDInputError, match="word seed 1 at noise 0.*also in"):
        drop.main(["--clean", str(clean), str(again), "--noisy", str(noisy), "--noise", "0.3"])


def test_another_split_needs_its_reference(studies):
    clean, noisy = studies
    with pytest.raises(KDInputError, match="--split test1: pass --test-ref"):
        _run(clean, noisy, "--split", "test1")


def test_a_pair_is_compared_on_the_seeds_both_methods_have(tmp_path, capsys):
    """word at seeds 1-3, seq at 1-2: word's own drop is over its three seeds, but the pair's difference (and
    the drops beside it) is over seeds 1, 2 only (a seed is one initialisation for every method), so word's
    third seed, which loses far more, does not enter seq - word. The markdown says so: 'drop A' of the pair
    table is not the drop of the methods table above it."""
    clean = {**SYSTEMS, ("word", 0, 3): _system(10, 0.8)}
    noisy = {**{k: v for k, v in NOISY.items() if k[0] in ("word", "seq") and k[2] < 3}, ("word", 0.3, 3): ["x"] * 80}
    c, n = _study(tmp_path, "clean", clean), _study(tmp_path, "noisy", noisy)
    _run(c, n, "--pairs", "word:seq", tmp_json=tmp_path / "out.json")
    got = json.loads((tmp_path / "out.json").read_text())
    word = next(e for e in got["methods"] if e["method"] == "word")
    assert word["seeds"] == [1, 2, 3]

    def drop_on(m, seeds):
        return statistics.mean(bleu(noisy[m, 0.3, s]) for s in seeds) - statistics.mean(bleu(clean[m, 0, s])
                                                                                        for s in seeds)

    pair = got["pairs"][0]
    assert pair["seeds"] == [1, 2]
    assert pair["drop_a"] == pytest.approx(drop_on("word", (1, 2))) and pair["drop_b"] == pytest.approx(drop_on("seq", (1, 2)))
    assert pair["b_minus_a"]["delta"] == pytest.approx(drop_on("seq", (1, 2)) - drop_on("word", (1, 2)))
    assert ("The methods table takes each method on its own seeds, the pair table word:seq on the seeds both "
            "have (1, 2): word has 3, seq 2.") in capsys.readouterr().out.splitlines()


def test_no_seeds_note_where_the_pair_has_every_seed_of_both(studies, capsys):
    _run(*studies, "--pairs", "word:seq")
    assert "seeds both have" not in capsys.readouterr().out


def test_the_table_states_the_bootstrap_samples_it_used(studies, capsys):
    """The footer used to say "1,000 resamples" whatever --bootstrap-samples was."""
    clean, noisy = studies
    _run(clean, noisy, "--bootstrap-samples", "200", "--pairs", "word:seq")
    out = capsys.readouterr().out
    assert "(200 resamples" in out and "1,000" not in out
    _run(clean, noisy, "--pairs", "word:seq")
    assert "(1,000 resamples" in capsys.readouterr().out  # the default


def test_a_reference_that_is_not_the_rows_is_refused(studies, tmp_path):
    """Another reference of the same length (test_2016 and test_2017 both have 1,000 lines): the hypotheses'
    BLEU against it is not their rows' bleu, so the drops would be computed against the wrong text."""
    clean, noisy = studies
    other = tmp_path / "other.txt"
    other.write_text("\n".join(_corpus(len(REFS), 77)) + "\n", encoding="utf-8")
    with pytest.raises(KDInputError, match=r"at noise 0 \(beam5\): its hypotheses score .* the reference is not"):
        _run(clean, noisy, "--test-ref", str(other))
