"""fairseq-kd-study: students trained to convergence (patience, best checkpoint), the teacher's top-k
cache for word-level students, and extra test sets."""
import csv
from pathlib import Path

import pytest
import sacrebleu
import torch

from fairseq_kd import study as S
from fairseq_kd.errors import KDInputError
from fairseq_kd.study.runner import stopping
from tests import helpers
from tests.test_study import TINY_TRAIN_ARGS


def _cfg(**kw):
    base = dict(data="d", out_dir="o", test_ref="r", source_lang="s", target_lang="t", max_update=100, patience=2)
    base.update(kw)
    return S.StudyConfig(**base)


def test_stopping_reads_the_first_best_validation_and_the_stop_rule():
    curve = [[10, {"valid_loss": 5.0, "valid_bleu": 3.0}], [20, {"valid_loss": 4.0, "valid_bleu": 7.0}],
             [30, {"valid_loss": 4.5, "valid_bleu": 7.0}], [40, {"valid_loss": 3.9, "valid_bleu": 6.0}]]
    # BLEU: 7.0 reached at 20 and again at 30 (fairseq rewrites checkpoint_best.pt on ties)
    assert stopping({"updates": 40, "curve": curve}, _cfg()) == {"best_update": 30, "stop": "patience"}
    assert stopping({"updates": 40, "curve": curve}, _cfg(best_metric="loss")) == {"best_update": 40,
                                                                                   "stop": "patience"}
    assert stopping({"updates": 100, "curve": curve}, _cfg())["stop"] == "budget"
    assert stopping({"updates": 100, "curve": curve}, _cfg(patience=0)) == {"best_update": 100, "stop": "budget"}
    with pytest.raises(RuntimeError, match="no validation bleu"):
        stopping({"updates": 40, "curve": [[10, {"valid_loss": 5.0}]]}, _cfg())


def test_convergence_flags_and_cache_route_in_the_commands():
    cfg = _cfg(teacher="t.pt", cache_topk=8, methods=["none", "word", "word.h"])
    none, word, variant = (S.Cell(m, 0.0, "transformer", S.NO_DECODING, 1e-3, 1) for m in ("none", "word", "word.h"))
    flags = S.train_command(cfg, none, "data", "save")
    i = flags.index("--patience")
    assert flags[i:i + 5] == ["--patience", "2", "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric"]
    assert cfg.uses_cache(word) and not cfg.uses_cache(variant) and not cfg.uses_cache(none)
    noisy = S.Cell("word", 0.1, "transformer", S.NO_DECODING, 1e-3, 1)
    assert cfg.uses_cache(noisy)  # source noise: word's teacher reads the clean source the cache scored
    assert not _cfg(teacher="t.pt", cache_topk=8, methods=["word"], noise_side="target").uses_cache(noisy)
    cached = S.train_command(cfg, word, "data", "save", cache="CACHE")
    assert cached[cached.index("--teacher-cache") + 1] == "CACHE" and "--teacher-path" not in cached
    # hidden-state KD from the cache: the distribution cached, the states from the teacher's encoder
    hid = _cfg(teacher="t.pt", cache_topk=8, methods=["word.hid", "word.h0"], cache_methods=["word.hid", "word.h0"],
               method_args={"word": "--kd-hidden-weight 0.5", "word.hid": "--kd-hidden-loss cosine",
                            "word.h0": "--kd-hidden-weight=0"})
    both = S.train_command(hid, S.Cell("word.hid", 0.0, "transformer", S.NO_DECODING, 1e-3, 1), "data", "save",
                           cache="CACHE")
    assert both[both.index("--teacher-cache") + 1] == "CACHE" and both[both.index("--teacher-path") + 1] == "t.pt"
    off = S.train_command(hid, S.Cell("word.h0", 0.0, "transformer", S.NO_DECODING, 1e-3, 1), "data", "save",
                          cache="CACHE")
    assert "--teacher-path" not in off  # the variant's own --kd-hidden-weight=0 wins over its base's 0.5
    assert "--patience" not in S.train_command(_cfg(patience=0), none, "data", "save")
    # a fixed-budget study keeps the fingerprint it had before these options existed (old studies resume)
    assert "patience" not in _cfg(patience=0).settings_fingerprint()
    assert {"patience", "best_metric", "cache_topk"} <= set(cfg.settings_fingerprint())


def test_bad_convergence_options_are_refused(tmp_path):
    (tmp_path / "dict.s.txt").write_text("a 1\n")
    (tmp_path / "dict.t.txt").write_text("a 1\n")
    (tmp_path / "ref").write_text("x\n")
    ok = dict(data=str(tmp_path), test_ref=str(tmp_path / "ref"))
    for kw, msg in (({"patience": -1}, "--patience"), ({"best_metric": "chrf"}, "--best-metric"),
                    ({"cache_topk": 4, "cache_methods": ["seq"]}, "--cache-methods"),
                    ({"extra_tests": [("test1", str(tmp_path / "ref"))]}, "no binarized split 'test1'")):
        with pytest.raises(KDInputError, match=msg):
            _cfg(**ok, **kw).validate()


@pytest.mark.integration
def test_patience_stops_decodes_the_best_checkpoint_and_caches_the_teacher(tiny_teacher, tmp_path):
    """A frozen student (lr 1e-9) cannot improve its validation BLEU: with patience 1 and a validation
    every 2 updates fairseq stops at update 4; the tie at update 4 rewrites checkpoint_best.pt (fairseq's
    ``a >= best``), so the decoded checkpoint is the one of update 4. The second cell must not inherit
    the first one's early-stopping state (in-process runs).
    word-KD reads the teacher's top-k cache, built once; a second test set gets its own results file."""
    raw = tiny_teacher.raw
    cfg = S.StudyConfig(data=str(tiny_teacher.data_bin), out_dir=str(tmp_path / "conv"),
                        test_ref=str(raw / "test.tgt"), source_lang="src", target_lang="tgt",
                        teacher=str(tiny_teacher.checkpoint), methods=["none", "word"], lrs=[1e-9], seeds=[1],
                        max_update=40, warmup_updates=1, validate_interval_updates=2, max_tokens=1000, beam=1,
                        bpe="none", train_args=TINY_TRAIN_ARGS, patience=1, cache_topk=4,
                        extra_tests=[("valid", str(raw / "valid.tgt"))])
    study = S.Study(cfg, runner=S.run_inprocess)
    summary = helpers.run_study_one_thread(study)
    assert summary["ran"] == 2 and study.launched.count("fairseq-kd-cache") == 1
    out = Path(cfg.out_dir)
    rows = list(csv.DictReader(open(out / "results.csv")))
    extra = list(csv.DictReader(open(out / "results.valid.csv")))
    assert [r["method"] for r in rows] == [r["method"] for r in extra] == ["none", "word"]
    refs = {"test": (raw / "test.tgt").read_text().splitlines(), "valid": (raw / "valid.tgt").read_text().splitlines()}
    for split, table in (("test", rows), ("valid", extra)):
        for row in table:
            assert (row["updates"], row["best_update"], row["stop"]) == ("4", "4", "patience")
            hyps = (out / row["hyp"]).read_text().splitlines()
            assert len(hyps) == len(refs[split])
            assert float(row["bleu"]) == round(sacrebleu.corpus_bleu(hyps, [refs[split]]).score, 2)
    for row in rows:
        best = torch.load(out / "cells" / row["cell"] / "checkpoints" / "checkpoint_best.pt", weights_only=False)
        assert best["optimizer_history"][-1]["num_updates"] == 4
        assert "checkpoint_best.pt" in (out / "cells" / row["cell"] / "generate.beam1.log").read_text()
    word_log = (out / "cells" / rows[1]["cell"] / "train.log").read_text()
    assert "--teacher-cache" in word_log and "--teacher-path" not in word_log.split("$ ")[-1].split("\n")[0]


def test_preflight_checks_reference_lines_and_teacher_direction(tiny_teacher, tmp_path):
    """Before any training: a reference of another length than its split, a teacher trained in the other
    direction, and a file that is no checkpoint are refused naming the file."""
    raw = tiny_teacher.raw
    short = tmp_path / "short.tgt"
    short.write_text("".join(l + "\n" for l in (raw / "test.tgt").read_text().splitlines()[:-1]))
    base = dict(data=str(tiny_teacher.data_bin), out_dir=str(tmp_path / "o"), test_ref=str(raw / "test.tgt"),
                source_lang="src", target_lang="tgt", teacher=str(tiny_teacher.checkpoint), methods=["word"])
    S.StudyConfig(**base).validate()  # the good setup passes
    with pytest.raises(KDInputError, match=r"short.tgt has 39 lines but the binarized split 'test'.* has 40"):
        S.StudyConfig(**{**base, "test_ref": str(short)}).validate()
    with pytest.raises(KDInputError, match="--extra-test valid=.*short.tgt has 39 lines"):
        S.StudyConfig(**base, extra_tests=[("valid", str(short))]).validate()
    state = torch.load(tiny_teacher.checkpoint, weights_only=False)
    state["cfg"]["task"]["source_lang"], state["cfg"]["task"]["target_lang"] = "tgt", "src"
    reverse = tmp_path / "reverse.pt"
    torch.save(state, reverse)
    with pytest.raises(KDInputError, match=r"reverse.pt translates tgt->src but the study is src->tgt: it was trained in the other direction"):
        S.StudyConfig(**{**base, "teacher": str(reverse)}).validate()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(KDInputError, match="junk.pt"):
        S.StudyConfig(**{**base, "teacher": str(junk)}).validate()


def test_preflight_reads_splits_binarized_for_the_reverse_pair(tiny_teacher, tmp_path):
    """A data-bin fairseq-preprocess made for tgt-src (SPLIT.tgt-src.*), which fairseq trains and decodes
    src->tgt from: the study's checks find its splits and still count their sentences."""
    import shutil

    raw, rev = tiny_teacher.raw, tmp_path / "rev"
    rev.mkdir()
    for f in Path(tiny_teacher.data_bin).iterdir():
        shutil.copyfile(f, rev / f.name.replace(".src-tgt.", ".tgt-src."))
    assert (rev / "valid.tgt-src.src.idx").is_file() and not list(rev.glob("*.src-tgt.*"))
    short = tmp_path / "short.tgt"
    short.write_text("".join(l + "\n" for l in (raw / "test.tgt").read_text().splitlines()[:-1]))
    base = dict(data=str(rev), out_dir=str(tmp_path / "o"), test_ref=str(raw / "test.tgt"),
                source_lang="src", target_lang="tgt", teacher=str(tiny_teacher.checkpoint), methods=["word"])
    S.StudyConfig(**base, extra_tests=[("valid", str(raw / "valid.tgt"))]).validate()
    with pytest.raises(KDInputError, match=r"short.tgt has 39 lines but the binarized split 'test'.* has 40"):
        S.StudyConfig(**{**base, "test_ref": str(short)}).validate()
    with pytest.raises(KDInputError, match=r"has no binarized split 'test7' \(test7.src-tgt.src.idx or "
                                           r"test7.tgt-src.src.idx\)"):
        from fairseq_kd.study.preflight import check_reference_lines
        check_reference_lines(str(rev), "test7", "src", "tgt", str(short), "--extra-test test7=")


def test_a_corrupt_train_record_is_refused_naming_the_fix(tmp_path):
    """A cell's train.json is read through the integrity checks: NaN or a negative count is one line."""
    raw = helpers.make_synthetic_corpus(tmp_path / "raw", n_train=20, n_valid=5, n_test=5)
    data = helpers.preprocess(raw, tmp_path / "bin")
    cfg = S.StudyConfig(data=str(data), out_dir=str(tmp_path / "o"), test_ref=str(raw / "test.tgt"),
                        source_lang="src", target_lang="tgt", bpe="none")
    cell = S.build_grid(cfg)[0]
    cdir = tmp_path / "o" / "cells" / cell.slug()
    cdir.mkdir(parents=True)
    for text, msg in (('{"parameters": 10, "updates": -3, "curve": []}', "updates"),
                      ('{"parameters": 10, "updates": 3, "train_time": NaN, "curve": []}', "NaN")):
        (cdir / "train.json").write_text(text)
        with pytest.raises(KDInputError, match=rf"train.json.*{msg}.*delete .*train.json to read the training again.*to train from scratch"):
            S.Study(cfg, runner=lambda *a: None).run_cell(cell)


@pytest.mark.integration
def test_student_init_starts_every_student_from_the_checkpoint(tiny_teacher, tmp_path):
    """--student-init: a student trained 2 updates at lr 1e-9 from the tiny teacher's weights keeps them
    (to 1e-6); without it the same cell starts from random weights. A checkpoint of another arch, a missing
    file and the other direction are refused before any cell trains."""
    raw = tiny_teacher.raw
    base = dict(data=str(tiny_teacher.data_bin), test_ref=str(raw / "test.tgt"), source_lang="src",
                target_lang="tgt", methods=["none"], lrs=[1e-9], seeds=[1], max_update=2, warmup_updates=1,
                validate_interval_updates=2, max_tokens=1000, beam=1, bpe="none", train_args=TINY_TRAIN_ARGS)
    init = S.StudyConfig(**base, out_dir=str(tmp_path / "init"), student_init=str(tiny_teacher.checkpoint))
    fresh = S.StudyConfig(**base, out_dir=str(tmp_path / "fresh"))
    teacher = torch.load(tiny_teacher.checkpoint, weights_only=False)["model"]
    for cfg, same in ((init, True), (fresh, False)):
        helpers.run_study_one_thread(S.Study(cfg, runner=S.run_inprocess))
        cell = next((Path(cfg.out_dir) / "cells").iterdir())
        got = torch.load(cell / "checkpoints" / "checkpoint_last.pt", weights_only=False)
        assert got["optimizer_history"][-1]["num_updates"] == 2
        close = all(torch.allclose(got["model"][k], v, rtol=0, atol=1e-6) for k, v in teacher.items())
        assert close is same
    assert "student_init" in init.settings_fingerprint() and "student_init" not in fresh.settings_fingerprint()

    with pytest.raises(KDInputError, match="--student-init .*missing.pt: no such file"):
        S.StudyConfig(**{**base, "out_dir": "o", "student_init": str(tmp_path / "missing.pt")}).validate()
    with pytest.raises(KDInputError, match="is a transformer model but the study trains transformer_glu_3m"):
        S.StudyConfig(**{**base, "out_dir": "o", "archs": ["transformer_glu_3m"],
                         "student_init": str(tiny_teacher.checkpoint)}).validate()
    state = torch.load(tiny_teacher.checkpoint, weights_only=False)
    state["cfg"]["task"]["source_lang"], state["cfg"]["task"]["target_lang"] = "tgt", "src"
    torch.save(state, tmp_path / "reverse.pt")
    with pytest.raises(KDInputError, match="reverse.pt translates tgt->src"):
        S.StudyConfig(**{**base, "out_dir": "o", "student_init": str(tmp_path / "reverse.pt")}).validate()
