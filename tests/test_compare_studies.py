"""docs/results/tools/compare_studies.py: B - A per cell and seed, and the seeds-pooled bootstrap.

Truths: sacrebleu's corpus BLEU of the hypothesis files; the bootstrap's observed difference is the
difference of seed-averaged BLEU."""
import json
from pathlib import Path

import pytest
import sacrebleu

from fairseq_kd.errors import KDInputError
from tests.helpers import load_results_tool

FIELDS = "method,noise,arch,decoding,lr,seed,teacher,search,parameters,bleu,chrf,cell,hyp"


def _tool():
    return load_results_tool("compare_studies")


def _study(root: Path, name: str, systems, refs):
    """A study out-dir with one seq cell per seed whose hypotheses are ``systems[seed]``."""
    d = root / name
    rows = []
    for seed, lines in systems.items():
        cell = f"seq_noise0_tiny_beam_lr0.003_seed{seed}"
        hyp = d / "cells" / cell / "hyp.beam5.txt"
        hyp.parent.mkdir(parents=True)
        hyp.write_text("\n".join(lines) + "\n")
        bleu = round(sacrebleu.corpus_bleu(lines, [refs]).score, 2)
        rows.append(f"seq,0,tiny,beam,0.003,{seed},-,beam5,10,{bleu},50,{cell},{hyp.relative_to(d)}")
    (d / "results.csv").write_text(FIELDS + "\n" + "\n".join(rows) + "\n")
    return d


def test_b_minus_a_per_seed_and_pooled(tmp_path, capsys):
    refs = [f"a small red dog number {i} sat on the mat today" for i in range(40)]
    cut = lambda k, every: [" ".join(r.split()[:-k]) if i % every == 0 else r for i, r in enumerate(refs)]  # noqa: E731
    a = _study(tmp_path, "a", {1: cut(2, 2), 2: cut(1, 3)}, refs)
    b = _study(tmp_path, "b", {1: cut(1, 4), 2: refs, 3: refs}, refs)  # seed 3 has no partner in A
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n")
    tool = _tool()
    assert tool.main([str(a), str(b), "--test-ref", str(tmp_path / "ref.txt"),
                      "--json", str(tmp_path / "out.json")]) == 0
    (row,) = json.loads((tmp_path / "out.json").read_text())
    bleu = lambda lines: sacrebleu.corpus_bleu(lines, [refs]).score  # noqa: E731
    assert row["seeds"] == ["1", "2"]
    assert row["delta_per_seed"] == [round(round(bleu(cut(1, 4)), 2) - round(bleu(cut(2, 2)), 2), 2),
                                     round(100.0 - round(bleu(cut(1, 3)), 2), 2)]
    expected = (bleu(cut(1, 4)) + 100.0) / 2 - (bleu(cut(2, 2)) + bleu(cut(1, 3))) / 2
    assert row["bootstrap"]["delta"] == pytest.approx(expected, abs=1e-9)
    assert row["bootstrap"]["ci_low"] > 0  # B is better on every resample's sentences
    assert "| seq | tiny | beam5 | 2 |" in capsys.readouterr().out


def test_no_common_cell_or_missing_split_is_one_line(tmp_path):
    refs = ["x y z"]
    a = _study(tmp_path, "a", {1: refs}, refs)
    b = _study(tmp_path, "b", {2: refs}, refs)
    (tmp_path / "ref.txt").write_text("x y z\n")
    tool = _tool()
    with pytest.raises(KDInputError, match="share no cell with a common seed"):
        tool.main([str(a), str(b), "--test-ref", str(tmp_path / "ref.txt")])
    with pytest.raises(KDInputError, match="results.test1.csv: not found"):
        tool.main([str(a), str(b), "--test-ref", str(tmp_path / "ref.txt"), "--split", "test1"])
