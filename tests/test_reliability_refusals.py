"""Silent wrong results, tracebacks and weak messages: a BOM kept as text, impossible vocabulary
counts, a reordered dictionary at decoding; one long line, unsupported compute types, files that
are directories (and the reverse), a cache that cannot serve the asked top-k.

Truths: the same file without the BOM, translating the other lines alone, the first differing
dictionary id, exit codes and one-line messages.
"""
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.reliability_helpers import run_cli
from tests.test_reliability_defects import checkpoint_with_task, export
from tests.test_translate import exported  # noqa: F401  (fixture: spm model, random model, its export)



def test_a_bom_is_not_text(tmp_path, capsys):
    from fairseq_kd import fileio
    from fairseq_kd.cli import noise, score

    ref = tmp_path / "ref.txt"
    ref.write_text("a small house by the river\nthe cat sleeps\n", encoding="utf-8")
    hyp = tmp_path / "hyp.txt"
    hyp.write_bytes(b"\xef\xbb\xbf" + ref.read_bytes())  # Notepad's UTF-8
    assert fileio.read_lines(hyp) == fileio.read_lines(ref) == list(fileio.iter_lines(hyp))
    rc = run_cli(score.__name__, ["-r", str(ref), "-i", str(hyp), "--metrics", "bleu"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["bleu"]["score"] == 100.0
    out = tmp_path / "noisy.txt"
    assert run_cli(noise.__name__, ["-i", str(hyp), "-o", str(out), "--swap", "1", "--seed", "3"]) == 0
    assert "\ufeff" not in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("count", ["-3", "nan", "inf"])
def test_noise_vocab_counts_must_be_finite_and_not_negative(count, tmp_path):
    from fairseq_kd.errors import KDInputError
    from fairseq_kd.noise import read_vocab

    vocab = tmp_path / "vocab.txt"
    vocab.write_text(f"Haus\t5\nKatze\t{count}\n", encoding="utf-8")
    with pytest.raises(KDInputError, match=rf"vocab.txt:2: count '{count}' is not a finite number >= 0"):
        read_vocab(str(vocab), "word")


@pytest.mark.integration
def test_decode_sh_refuses_a_reordered_dictionary_of_the_same_size(tiny_teacher, tmp_path):
    import subprocess
    import sys

    from tests.test_reliability_silent import swap_dictionary_symbols

    data = tmp_path / "bin"
    shutil.copytree(tiny_teacher.data_bin, data)
    swap_dictionary_symbols(data)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(["bash", str(root / "scripts/decode.sh"), "--data-bin", str(data), "--checkpoint",
                        str(tiny_teacher.checkpoint), "--out", str(tmp_path / "hyp"), "--src", "src", "--tgt", "tgt",
                        "--spm-model", "none", "--subset", "valid"], capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "is not the source dictionary" in r.stderr and "first difference at id 4" in r.stderr, \
        r.stderr[-2000:]
    assert not (tmp_path / "hyp").exists()
    from fairseq_kd.prep.dicts import check_checkpoint_dicts  # the checkpoint's own data-bin passes

    assert check_checkpoint_dicts(str(tiny_teacher.checkpoint), str(tiny_teacher.data_bin), "src", "tgt")["checked"] \
        == ["source", "target"]


# ---------------------------------------------------------------- 6. one line instead of a traceback



@pytest.mark.integration
def test_translate_cuts_a_line_longer_than_the_model_and_translates_the_rest(exported, tmp_path, caplog):
    from fairseq_kd.cli import translate

    root, sp, d, model, lines = exported
    lines = [x for x in lines if x][:6]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run_cli(translate.__name__, [str(root / "ct2"), "-i", str(tmp_path / "in.txt"), "-o",
                                        str(tmp_path / "ref.txt"), "--beam", "1", "--no-progress"]) == 0
    long_line = " ".join(["ein hund läuft über die wiese"] * 350)  # ~10,000 characters, > 1024 positions
    (tmp_path / "in2.txt").write_text("\n".join(lines[:3] + [long_line] + lines[3:]) + "\n", encoding="utf-8")
    rc = run_cli(translate.__name__, [str(root / "ct2"), "-i", str(tmp_path / "in2.txt"), "-o",
                                      str(tmp_path / "out.txt"), "--beam", "1", "--no-progress"])
    assert rc == 0 and "line 4: 3850 pieces, more than the model's 1024 source positions" in caplog.text
    out = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")[:-1]
    ref = (tmp_path / "ref.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(out) == 7 and out[:3] + out[4:] == ref


@pytest.mark.integration
def test_translate_refusals_are_one_line(exported, tmp_path, capsys):
    from fairseq_kd.cli import translate

    root = exported[0]
    (tmp_path / "in.txt").write_text("ein hund\n", encoding="utf-8")
    (tmp_path / "not.model").write_text("not a sentencepiece model\n")
    (tmp_path / "file").write_text("x")
    base = [str(root / "ct2"), "-i", str(tmp_path / "in.txt"), "--no-progress"]
    for extra, says in ((["--compute-type", "float16"], "--compute-type float16 is not supported on cpu"),
                        (["--spm-model", str(tmp_path / "not.model")], "is not a sentencepiece model"),
                        (["-o", str(tmp_path / "file" / "out.txt")], "is a file, not a directory"),
                        (["--spm-model", str(tmp_path)], "is a directory where a file (sentencepiece model) is expected")):
        rc, err = run_cli(translate.__name__, base + extra, capsys)
        assert rc == 2 and says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (extra, err)
    rc, err = run_cli(translate.__name__, [str(root / "ct2"), "-i", str(tmp_path)], capsys)
    assert rc == 2 and "is a directory where a file (input file) is expected" in err, err


@pytest.mark.integration
def test_cache_refuses_small_max_tokens_missing_split_and_file_out_dir(tiny_teacher, tmp_path, capsys):
    from fairseq_kd.cli import cache

    def run(out, *extra):
        return run_cli(cache.__name__, [str(tiny_teacher.data_bin), "--teacher-path", str(tiny_teacher.checkpoint),
                                        "--out-dir", str(out), "--topk", "4", "--no-progress", *extra], capsys)

    rc, err = run(tmp_path / "c", "--split", "valid", "--max-tokens", "3")
    assert rc == 2 and "--max-tokens 3 is below the longest sentence" in err, err
    rc, err = run(tmp_path / "c", "--split", "tset")
    assert rc == 2 and "--split tset: no binarized tset split" in err and "test" in err, err
    (tmp_path / "file").write_text("x")
    rc, err = run(tmp_path / "file", "--split", "valid")
    assert rc == 2 and "is a file, not a directory" in err, err
    assert not [p for p in (tmp_path / "c").rglob("*") if p.name != ".fairseq-kd.lock"]


# ---------------------------------------------------------------- 7. messages that name the fix


def test_directory_for_a_file_and_part_range_hint(tmp_path, capsys):
    from fairseq_kd.cli import cache, noise, score

    (tmp_path / "d").mkdir()
    rc, err = run_cli(noise.__name__, ["-i", str(tmp_path / "d"), "-o", str(tmp_path / "o.txt")], capsys)
    assert rc == 2 and "is a directory where a file" in err and "no such file" not in err, err
    rc, err = run_cli(noise.__name__, ["-i", str(tmp_path / "d"), "-o", str(tmp_path / "d" / "o.txt")], capsys)
    assert rc == 2 and err.count("fairseq-kd-noise") == 1, err  # the tool named once, not twice
    rc, err = run_cli(score.__name__, ["-r", str(tmp_path / "d"), "-i", str(tmp_path / "d")], capsys)
    assert rc == 2 and "is a directory where a file" in err, err
    rc, err = export([tmp_path / "d", tmp_path / "out"], capsys)
    assert rc == 2 and "is a directory where a file (checkpoint) is expected" in err, err
    rc, err = run_cli(noise.__name__, ["-i", "-", "--substitution", "0.1", "--vocab", str(tmp_path / "d")], capsys)
    assert rc == 2 and "is a directory where a file (vocabulary file)" in err, err
    rc, err = run_cli(cache.__name__, ["data", "--teacher-path", "t.pt", "--out-dir", "c", "--part", "2/2"], capsys)
    assert rc == 2 and "I counts from 0, so with N = 2 the parts are 0/2, 1/2" in err, err


@pytest.mark.integration
def test_teacher_dictionary_refusal_names_real_files_and_topk_above_cache_is_refused(tiny_teacher, tmp_path, capsys):
    from fairseq_kd.cli import cache
    from fairseq_kd.errors import KDInputError
    from tests import helpers
    from tests.test_reliability_silent import swap_dictionary_symbols

    data = tmp_path / "bin"
    shutil.copytree(tiny_teacher.data_bin, data)
    swap_dictionary_symbols(data)
    unnamed = checkpoint_with_task(tiny_teacher.checkpoint, tmp_path / "t.pt", source_lang=None, target_lang=None)
    with pytest.raises(KDInputError, match=r"teacher dictionary \S+/dict\.src\.txt") as err:
        helpers.build_components(data, ["--criterion", "label_smoothed_cross_entropy", "--teacher-path", str(unnamed)])
    assert "dict.None.txt" not in str(err.value)
    out = tmp_path / "cache"
    assert run_cli(cache.__name__, [str(tiny_teacher.data_bin), "--teacher-path", str(tiny_teacher.checkpoint),
                                    "--out-dir", str(out), "--split", "train", "--topk", "4", "--no-progress"]) == 0
    extra = ["--teacher-cache", str(out), "--criterion", "word_kd", "--kd-alpha", "0.5", "--kd-topk", "6",
             "--max-update", "1"]
    with pytest.raises(KDInputError, match="--kd-topk 6 exceeds the 4 tokens per position"):
        helpers.train(tiny_teacher.data_bin, tmp_path / "student", task="kd_translation", max_epoch=1, extra=extra)
