"""scripts/decode.sh on the tiny copy-task teacher: input order restored, sentencepiece removed.

The teacher (tests/helpers.py) copies sentences over words w0..w11. A sentencepiece *word* model
over the same corpus has exactly one piece per word (``\u2581w3``); renaming the teacher's
dictionary entries ``w3`` -> ``\u2581w3`` (same indices, so the same embeddings) gives a model
that reads and writes real sentencepiece pieces, and a correct decode.sh must return the
raw input sentences in their input order. The renaming is on purpose here, so these decodes pass
``--allow-renamed-dicts true``; without it decode.sh refuses the renamed dictionaries.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_kd.prep import spm as kd_spm
from tests import helpers

REPO = Path(__file__).resolve().parents[1]


def overlap(a: str, b: str) -> float:
    """Bag-of-words F1 between two sentences."""
    from collections import Counter
    ca, cb = Counter(a.split()), Counter(b.split())
    common = sum((ca & cb).values())
    return 2 * common / max(1, sum(ca.values()) + sum(cb.values()))


RENAMED = ("--allow-renamed-dicts", "true")  # piece_teacher's dictionaries are renamed on purpose


def decode(*args, check=True):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "scripts/decode.sh"), *map(str, args)],
                          capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"decode.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def piece_teacher(tiny_teacher, tmp_path_factory):
    """The tiny teacher's data-bin with dictionaries renamed to sentencepiece word pieces."""
    root = tmp_path_factory.mktemp("piece_teacher")
    data_bin = root / "bin"
    shutil.copytree(tiny_teacher.data_bin, data_bin)
    for lang in ("src", "tgt"):
        d = data_bin / f"dict.{lang}.txt"
        d.write_text("".join(f"\u2581{line}\n" if line.startswith("w") else f"{line}\n"
                             for line in d.read_text().splitlines()))
    model = kd_spm.train_spm([tiny_teacher.raw / "train.src", tiny_teacher.raw / "train.tgt"],
                             str(root / "spm"), kd_spm.SpmConfig(vocab_size=16, model_type="word", num_threads=1))
    return tiny_teacher, data_bin, model


@pytest.mark.integration
def test_decode_binarized_split_in_input_order(piece_teacher, tmp_path):
    teacher, data_bin, model = piece_teacher
    out = tmp_path / "hyp.tgt"
    decode("--data-bin", data_bin, "--checkpoint", teacher.checkpoint, "--out", out, "--subset", "test",
           "--src", "src", "--tgt", "tgt", "--decoding", "greedy", "--spm-model", model, *RENAMED)
    src = (teacher.raw / "test.src").read_text().splitlines()
    hyp = out.read_text().splitlines()
    pieces = Path(f"{out}.pieces").read_text().splitlines()
    assert len(hyp) == len(src) == len(pieces) == 40
    assert not any("\u2581" in h for h in hyp) and all(p.startswith("\u2581") for p in pieces if p)
    # the same greedy search run in-process, ordered by sentence id, on the original dictionaries
    assert hyp == helpers.generate(teacher.data_bin, teacher.checkpoint, "test", beam=1,
                                   extra=["--max-len-a", "1.2", "--max-len-b", "10", "--task", "kd_translation"])
    # and a copy model's output resembles its own input line far more than any other line
    # (fairseq-generate emits length-sorted batches, so a wrong order would not)
    aligned = sum(overlap(h, s) for h, s in zip(hyp, src)) / len(src)
    shifted = sum(overlap(h, s) for h, s in zip(hyp, src[1:] + src[:1])) / len(src)
    assert aligned > 0.7 and aligned > shifted + 0.4, (aligned, shifted)
    assert "H-" in Path(f"{out}.log").read_text()


@pytest.mark.integration
def test_decode_split_binarized_for_the_reverse_pair(piece_teacher, tmp_path):
    """A data-bin made by fairseq-preprocess for tgt-src (test.tgt-src.*) decodes src -> tgt as fairseq reads
    it: the same hypotheses as the src-tgt naming, in input order."""
    teacher, data_bin, model = piece_teacher
    rev = tmp_path / "rev"
    rev.mkdir()
    for f in data_bin.iterdir():
        shutil.copyfile(f, rev / f.name.replace(".src-tgt.", ".tgt-src."))
    assert not list(rev.glob("*.src-tgt.*")) and (rev / "test.tgt-src.src.idx").is_file()
    args = ["--checkpoint", teacher.checkpoint, "--subset", "test", "--src", "src", "--tgt", "tgt",
            "--decoding", "greedy", "--spm-model", model, *RENAMED]
    decode("--data-bin", data_bin, "--out", tmp_path / "fwd.tgt", *args)
    decode("--data-bin", rev, "--out", tmp_path / "rev.tgt", *args)
    assert (tmp_path / "rev.tgt").read_text() == (tmp_path / "fwd.tgt").read_text()
    assert len((tmp_path / "rev.tgt").read_text().splitlines()) == 40


@pytest.mark.integration
def test_decode_raw_input_file_with_beam(piece_teacher, tmp_path):
    teacher, data_bin, model = piece_teacher
    raw = tmp_path / "input.src"
    lines = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10", "w11 w0"]
    raw.write_text("\n".join(lines) + "\n")
    out = tmp_path / "hyp.tgt"
    decode("--data-bin", data_bin, "--checkpoint", teacher.checkpoint, "--input", raw, "--out", out,
           "--src", "src", "--tgt", "tgt", "--beam", 3, "--spm-model", model, *RENAMED)
    hyp = out.read_text().splitlines()
    assert len(hyp) == 4 and not any("\u2581" in h for h in hyp)
    assert [overlap(h, s) > 0.5 for h, s in zip(hyp, lines)].count(True) >= 3, hyp


@pytest.mark.integration
def test_decode_missing_split_is_a_clear_error(piece_teacher, tmp_path):
    teacher, data_bin, model = piece_teacher
    proc = decode("--data-bin", data_bin, "--checkpoint", teacher.checkpoint, "--out", tmp_path / "h",
                  "--subset", "test7", "--src", "src", "--tgt", "tgt", *RENAMED, check=False)
    assert proc.returncode == 1 and "no binarized 'test7' split" in proc.stderr
    assert not (tmp_path / "h").exists()


@pytest.mark.integration
def test_decode_refuses_renamed_dictionaries_unless_allowed(piece_teacher, tmp_path):
    """--data-bin's dictionaries hold other symbols than the checkpoint's own (``w3`` -> ``\u2581w3``):
    an error before fairseq-generate, naming the file and the fix, unless --allow-renamed-dicts true."""
    teacher, data_bin, model = piece_teacher
    out = tmp_path / "hyp.tgt"
    args = ["--data-bin", data_bin, "--checkpoint", teacher.checkpoint, "--out", out, "--subset", "test",
            "--src", "src", "--tgt", "tgt", "--decoding", "greedy", "--spm-model", model]
    proc = decode(*args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{data_bin}/dict.src.txt " in proc.stderr and "holds other symbols than the source dictionary" in proc.stderr
    assert f"({teacher.data_bin}/dict.src.txt, " in proc.stderr and "first difference at id 4" in proc.stderr
    assert "pass --allow-renamed-dicts true" in proc.stderr and "fairseq-generate" not in proc.stderr  # before it
    assert not out.exists() and not Path(f"{out}.log").exists()
    proc = decode(*args, "--allow-renamed-dicts", "yes", check=False)
    assert proc.returncode == 2 and "--allow-renamed-dicts must be true or false, not 'yes'" in proc.stderr
    proc = decode(*args, *RENAMED)
    assert "decoding assumes they were renamed id for id" in proc.stderr
    assert len(out.read_text().splitlines()) == 40
