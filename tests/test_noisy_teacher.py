"""A teacher that reads the student's noisy source: K fixed noisy copies of a binarized split
(``fairseq-kd-noise --data-bin``) and the study's ``word_tnoisy`` / ``seq_tnoisy`` methods."""
import csv
import os
from pathlib import Path

import pytest

from fairseq_kd import study as S
from fairseq_kd.cli import noise as noise_cli
from fairseq_kd.errors import KDInputError
from tests import helpers
from tests.test_study import TINY_TRAIN_ARGS, resolved_train_settings


def load_split(folder: Path, lang: str, split: str = "train"):
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(str(folder / f"dict.{lang}.txt"))
    return data_utils.load_indexed_dataset(str(folder / f"{split}.src-tgt.{lang}"), d, "mmap")


def copies_argv(data, out, copies="3", seed="4", sub="0.3"):
    return ["--substitution", sub, "--deletion", "0.2", "--data-bin", str(data), "-s", "src", "-t", "tgt",
            "--copies", copies, "--seed", seed, "--output-dir", str(out), "--quiet"]


def test_noisy_copies_are_the_training_noise_of_epochs_1_to_k(tiny_teacher, tmp_path, capsys):
    data, out = tiny_teacher.data_bin, tmp_path / "noisy"
    assert noise_cli.cli_main(copies_argv(data, out)) == 0
    # the truth: kd_translation's own training split with the same noise and seed, epoch by epoch
    task, _, _ = helpers.build_components(data, ["--noise-substitution", "0.3", "--noise-deletion", "0.2"], seed=4)
    task.load_dataset("train")
    train = task.dataset("train")
    clean_src, clean_tgt = load_split(data, "src"), load_split(data, "tgt")
    src, tgt = load_split(out, "src"), load_split(out, "tgt")
    n = len(clean_src)
    assert len(src) == len(tgt) == 3 * n
    per_copy = []
    for c in (1, 2, 3):
        train.set_epoch(c)
        got = [src[(c - 1) * n + i].tolist() for i in range(n)]
        assert got == [train[i]["source"].tolist() for i in range(n)], f"copy {c} is not epoch {c}'s noise"
        assert [tgt[(c - 1) * n + i].tolist() for i in range(n)] == [clean_tgt[i].tolist() for i in range(n)]
        per_copy.append(got)
    assert per_copy[0] != per_copy[1] != per_copy[2]  # fresh noise per copy
    assert sum(a != clean_src[i].tolist() for i, a in enumerate(per_copy[0])) > n // 4  # and noise at all
    for split in ("valid", "test"):  # the other splits are the clean ones
        for lang in ("src", "tgt"):
            assert [t.tolist() for t in load_split(out, lang, split)] == [t.tolist() for t in load_split(data, lang, split)]
    assert (out / "dict.src.txt").read_text() == (data / "dict.src.txt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noisy"]  # no temporary dir left

    before = (out / "train.src-tgt.src.bin").stat().st_mtime_ns
    assert noise_cli.cli_main(copies_argv(data, out)) == 0  # same settings: kept, not rebuilt
    assert (out / "train.src-tgt.src.bin").stat().st_mtime_ns == before
    capsys.readouterr()
    assert noise_cli.cli_main(copies_argv(data, out, seed="5")) == 2  # other settings: refused, named
    assert "other settings (seed differ)" in capsys.readouterr().err
    assert noise_cli.cli_main(["--data-bin", str(data), "--output-dir", str(tmp_path / "x"), "--quiet"]) == 2
    assert "noise rate > 0" in capsys.readouterr().err


def noisy_grid_cfg(**kw):
    base = dict(data="d", out_dir="o", test_ref="r", source_lang="de", target_lang="en", teacher="t.pt",
                methods=["none", "word", "word_tnoisy", "seq", "seq_tnoisy"], noise=[0.0, 0.3],
                noise_ops=["substitution"], decodings=["beam"])
    return S.StudyConfig(**{**base, **kw})


def test_tnoisy_methods_have_no_clean_cell_and_train_with_the_teachers_noisy_input():
    cfg = noisy_grid_cfg()
    cells = {(c.method, c.noise) for c in S.build_grid(cfg)}
    assert cells == {("none", 0.0), ("word", 0.0), ("seq", 0.0), ("none", 0.3), ("word", 0.3), ("seq", 0.3),
                     ("word_tnoisy", 0.3), ("seq_tnoisy", 0.3)}
    word = resolved_train_settings(cfg, S.Cell("word", 0.3, "transformer", S.NO_DECODING, 1e-3, 1))
    word_t = resolved_train_settings(cfg, S.Cell("word_tnoisy", 0.3, "transformer", S.NO_DECODING, 1e-3, 1))
    assert word["noise_substitution"] == word_t["noise_substitution"] == 0.3
    assert (word["noise_teacher_input"], word_t["noise_teacher_input"]) == ("clean", "noisy")
    assert sorted(k for k in word if word[k] != word_t[k]) == ["noise_teacher_input"]
    seq = resolved_train_settings(cfg, S.Cell("seq", 0.3, "transformer", "beam", 1e-3, 1))
    seq_t = resolved_train_settings(cfg, S.Cell("seq_tnoisy", 0.3, "transformer", "beam", 1e-3, 1))
    assert seq["noise_substitution"] == 0.3 and seq_t["noise_substitution"] == 0  # its source is noised already
    cmd = S.commands.noise_copies_command(cfg, 0.3, "out")
    assert cmd[1:] == ["--data-bin", "d", "--source-lang", "de", "--target-lang", "en", "--copies", "8", "--seed", "1",
                       "--swap-window", "3", "--output-dir", "out", "--quiet", "--substitution", "0.3"]
    assert "noise_copies" not in cfg.settings_fingerprint()  # default: old studies resume
    assert noisy_grid_cfg(noise_copies=4).settings_fingerprint()["noise_copies"] == 4


def test_tnoisy_methods_refuse_target_noise(tiny_teacher, tmp_path):
    cfg = S.StudyConfig(data=str(tiny_teacher.data_bin), out_dir=str(tmp_path / "o"),
                        test_ref=str(tiny_teacher.raw / "test.tgt"), source_lang="src", target_lang="tgt",
                        teacher=str(tiny_teacher.checkpoint), methods=["word_tnoisy"], noise=[0.3],
                        noise_side="target")
    with pytest.raises(KDInputError, match="--noise-side source"):
        cfg.validate()


@pytest.mark.integration
def test_seq_tnoisy_distils_the_noisy_copies_once_and_trains_on_them(tiny_teacher, tmp_path):
    cfg = S.StudyConfig(data=str(tiny_teacher.data_bin), out_dir=str(tmp_path / "kd"),
                        test_ref=str(tiny_teacher.raw / "test.tgt"), source_lang="src", target_lang="tgt",
                        teacher=str(tiny_teacher.checkpoint), methods=["seq_tnoisy", "word_tnoisy"], noise=[0.3],
                        noise_ops=["substitution"], noise_copies=2, decodings=["greedy"], lrs=[0.005], seeds=[1, 2],
                        max_update=6, warmup_updates=2, validate_interval_updates=3, max_tokens=1000, beam=1,
                        bpe="none", train_args=TINY_TRAIN_ARGS)
    study = S.Study(cfg, runner=S.run_inprocess)
    summary = helpers.run_study_one_thread(study)
    assert summary["ran"] == 4 and not summary["failed"]
    assert study.launched.count("fairseq-kd-noise") == 1 and study.launched.count("fairseq-kd-distill") == 1
    noisy = Path(cfg.out_dir) / "noisy" / "sub0.3_k2"
    distilled = Path(cfg.out_dir) / "distilled" / "greedy" / "noisy-sub0.3_k2" / "bin"
    # the student reads exactly the noisy source the teacher translated, with no noise on top
    assert [t.tolist() for t in load_split(distilled, "src")] == [t.tolist() for t in load_split(noisy, "src")]
    assert len(load_split(distilled, "tgt")) == 2 * len(load_split(tiny_teacher.data_bin, "src"))
    rows = {r["method"] + r["seed"]: r for r in csv.DictReader(open(summary["results"]))}
    assert sorted(rows) == ["seq_tnoisy1", "seq_tnoisy2", "word_tnoisy1", "word_tnoisy2"]
    seq_log = (Path(cfg.out_dir) / "cells" / rows["seq_tnoisy1"]["cell"] / "train.log").read_text()
    assert str(distilled) in seq_log and "on-the-fly noise" not in seq_log
    word_log = (Path(cfg.out_dir) / "cells" / rows["word_tnoisy1"]["cell"] / "train.log").read_text()
    assert "--noise-teacher-input noisy" in word_log and "teacher reads noisy input" in word_log
    again = S.Study(cfg, runner=S.run_inprocess)
    assert again.run(progress=False)["skipped"] == 4 and again.launched == []
    assert not [p for p in (Path(cfg.out_dir) / "noisy").iterdir() if ".tmp" in p.name]
    assert os.path.isfile(str(noisy) + ".log")


@pytest.fixture(scope="module")
def small_bin(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_bin")
    return helpers.preprocess(helpers.make_synthetic_corpus(root / "raw", n_train=24, n_valid=4, n_test=4), root / "bin")


def test_data_bin_mode_writes_its_summary_json(small_bin, tmp_path, capsys):
    """--summary-json was accepted and ignored in --data-bin mode: it now holds the copies' metadata."""
    import json

    out, summary = tmp_path / "noisy", tmp_path / "summary.json"
    assert noise_cli.cli_main(copies_argv(small_bin, out, copies="2") + ["--summary-json", str(summary)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(summary.read_text()) == printed == json.loads((out / "noisy_copies.json").read_text())
    assert printed["copies"] == 2


@pytest.mark.parametrize("extra, needle", [
    (["--write-vocab", "VOCAB"], "drop --write-vocab"),
    (["--input", "in.txt"], "drop --input"),
    (["--source", "a", "--output-source", "b"], "drop --source, --output-source"),
])
def test_data_bin_mode_refuses_the_flags_it_would_ignore(small_bin, tmp_path, capsys, extra, needle):
    """--write-vocab (and the text modes' files) were accepted and silently ignored in --data-bin mode."""
    out = tmp_path / "noisy"
    extra = [str(tmp_path / e) if e.isupper() else e for e in extra]
    assert noise_cli.cli_main(copies_argv(small_bin, out, copies="2") + extra) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "VOCAB").exists()  # refused before anything was written
