"""fairseq-kd-study: grid, parsing, preflight errors, atomic results, resume (fake and real runs)."""
import csv
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import sacrebleu
import torch

from fairseq_kd import study as S
from fairseq_kd.errors import KDInputError
from tests import helpers

TINY_TRAIN_ARGS = ("--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 --decoder-embed-dim 32 "
                   "--encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 "
                   "--decoder-attention-heads 2 --share-all-embeddings --dropout 0")

TRAIN_LOG = """2026-01-01 | INFO | fairseq_cli.train | num. shared model params: 21,888 (num. trained: 21,888)
2026-01-01 | INFO | train_inner | {"epoch": 1, "update": 0.333, "loss": "5.1", "num_updates": "10", "lr": "0.001"}
2026-01-01 | INFO | valid | {"epoch": 1, "valid_loss": "5.9", "valid_nll_loss": "5.9", "valid_bleu": "1.5", "valid_num_updates": "10"}
2026-01-01 | INFO | train | {"epoch": 1, "train_loss": "6.3", "train_num_updates": "12", "train_lr": "0.0015"}
2026-01-01 | INFO | valid | {"epoch": 2, "valid_loss": "4.6", "valid_bleu": "7.25", "valid_num_updates": "20", "valid_best_loss": "4.6"}
2026-01-01 | INFO | train_inner | {"epoch": 2, "update": 1.6, "loss": "4.9", "num_updates": "20", "lr": "0.003"}
2026-01-01 | INFO | train_inner | {"epoch": 2, "update": 1.6, "loss": "4.9", "num_upd
"""


def test_parse_train_log_and_generate():
    info = S.parse_train_log(TRAIN_LOG)  # fairseq's --log-format json records; a truncated last line is skipped
    assert info == {"parameters": 21888, "updates": 20, "losses": [[10, 5.1], [20, 4.9]],
                    "curve": [[10, {"valid_loss": 5.9, "valid_bleu": 1.5}], [20, {"valid_loss": 4.6, "valid_bleu": 7.25}]]}
    gen = "S-1\tb\nH-1\t-0.1\thyp one\nH-0\t-0.2\thyp zero\nD-0\t-0.2\tx\nH-2\t-0.3\t\n"
    assert S.parse_generate(gen) == ["hyp zero", "hyp one", ""]
    with pytest.raises(KDInputError, match="missing"):
        S.parse_generate("H-0\t0\ta\nH-2\t0\tc\n")


def test_grid_decoding_only_for_distilled_methods_and_stable_keys():
    cfg = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="s", target_lang="t",
                        methods=["none", "word", "seq"], noise=[0, 0.1], archs=["a", "b"],
                        decodings=["beam", "greedy"], lrs=[5e-4], seeds=[1, 2])
    cells = S.build_grid(cfg)
    assert len(cells) == (1 + 1 + 2) * 2 * 2 * 2
    assert {c.decoding for c in cells if c.method != "seq"} == {S.NO_DECODING}
    assert len({c.key() for c in cells}) == len(cells) and len({c.slug() for c in cells}) == len(cells)
    cell = S.Cell("seq", 0.1, "a", "beam", 5e-4, 2)
    row = dict(zip(S.KEY_FIELDS, cell.key()))
    row.update(noise="0.10", lr="0.00050", seed="2.0")  # numbers written differently still match
    assert S.row_key(row) == cell.key() == ("seq", "0.1", "a", "beam", "0.0005", "2", "-")
    del row["teacher"]  # a results.csv written before the teacher axis existed
    assert S.row_key(row) == cell.key()


def test_teachers_axis_repeats_kd_cells_not_the_baseline():
    cfg = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="s", target_lang="t",
                        methods=["none", "word", "seq"], teachers=["big/checkpoint_best.pt", "small/checkpoint_best.pt"],
                        decodings=["beam"])
    cells = S.build_grid(cfg)
    assert [(c.method, c.key()[-1]) for c in cells] == [
        ("none", "-"), ("word", "big/checkpoint_best.pt"), ("word", "small/checkpoint_best.pt"),
        ("seq", "big/checkpoint_best.pt"), ("seq", "small/checkpoint_best.pt")]
    word_small = " ".join(S.train_command(cfg, cells[2], "d", "s"))
    assert "--teacher-path small/checkpoint_best.pt" in word_small
    assert "--teacher small/checkpoint_best.pt" in " ".join(S.distill_command(cfg, "beam", "o", cells[4].teacher))


@pytest.mark.parametrize("axis, message", [
    (dict(seeds=[1, 2, 1]), r"--seeds: 1 is listed twice"),
    (dict(lrs=[1.234567e-4, 1.234568e-4]), r"--lrs: 0.0001234568 and 0.0001234567 are both 0.000123457 in the rows"),
    (dict(noise=[0.1, 0.10]), r"--noise: 0.1 is listed twice"),
    (dict(methods=["none", "word", "none"]), r"--methods: none is listed twice"),
    (dict(searches=["beam", "greedy", "beam"]), r"--searches: beam is listed twice"),
    (dict(extra_tests=[("test1", "a"), ("test1", "b")]), r"--extra-test: test1 is listed twice"),
    (dict(methods=["word"], teachers=["t/a.pt", "t/a.pt"]), r"--teachers: t/a.pt is listed twice"),
])
def test_a_grid_value_recorded_twice_is_refused(axis, message):
    """Two values of an axis recorded alike would be one cell dir and one row (trained over each other by
    --jobs 2): refused before anything runs; distinct values pass."""
    cfg = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="s", target_lang="t", **axis)
    with pytest.raises(KDInputError, match=message + r": list each"):
        S.build_grid(cfg)
    cells = S.build_grid(S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="s", target_lang="t",
                                       seeds=[1, 2], lrs=[1.23456e-4, 1.23457e-4], noise=[0, 0.1]))
    assert len({c.key() for c in cells}) == len({c.slug() for c in cells}) == len(cells) == 8


def test_teachers_of_one_name_are_refused_and_named_teachers_are_their_names():
    """fairseq's layout (RUN/checkpoints/checkpoint_best.pt) gives two teachers one default name: refused before
    anything runs (they would share one cell dir and one row); NAME=PATH names them in keys, dirs and rows,
    while every command gets the path."""
    from fairseq_kd.cli.study import config_from_args, get_parser

    big, small = "exp/big/checkpoints/checkpoint_best.pt", "exp/small/checkpoints/checkpoint_best.pt"
    same = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="s", target_lang="t",
                         methods=["word"], teachers=[big, small])
    with pytest.raises(KDInputError, match=rf"--teachers {big} and {small} are both named "
                                           r"'checkpoints/checkpoint_best.pt'.*--teachers big=exp/big/checkpoints"):
        S.build_grid(same)
    with pytest.raises(KDInputError, match="both named"):  # names that differ only where a dir name cannot
        S.build_grid(dataclasses.replace(same, teachers=["a/b.pt", "a-b.pt=x.pt"]))
    args = get_parser().parse_args(["--data", "d", "-s", "s", "-t", "t", "--test-ref", "r", "--out-dir", "o",
                                    "--methods", "word", "seq", "--decodings", "beam",
                                    "--teachers", f"big={big}", f"small={small}"])
    cfg = config_from_args(args)
    assert cfg.teacher == big  # the study's teacher is the first one's path
    cells = S.build_grid(cfg)
    assert [(c.method, c.key()[-1]) for c in cells] == [("word", "big"), ("word", "small"), ("seq", "big"),
                                                        ("seq", "small")]
    assert [c.slug().split("_t-")[1] for c in cells] == ["big", "small", "big", "small"]
    assert f"--teacher-path {small} " in " ".join(S.train_command(cfg, cells[1], "d", "s")) + " "
    from fairseq_kd.study.commands import cell_teacher
    from fairseq_kd.study.teachers import split_spec

    assert cell_teacher(cfg, cells[3]) == small and split_spec("./run=1/c.pt") == ("run=1/c.pt", "./run=1/c.pt")
    assert split_spec("t.pt") == ("t.pt", "t.pt") and split_spec("a=b=c.pt") == ("a", "b=c.pt")


@pytest.mark.parametrize("option, value, says", [
    ("train_args", "--dropout 0.1 --seed 7", "--train-args sets --seed, .* use --seeds instead"),
    ("train_args", "--lr=0.01", "--train-args sets --lr, .* use --lrs instead"),
    ("train_args", "--max-update 99", "--train-args sets --max-update, .* use --max-update instead"),
    ("gen_args", "--beam 10", "--gen-args sets --beam, .* use --beam / --searches instead"),
    ("method_args", {"word": "--kd-alpha 0.7 --arch transformer"}, "--method-args word= sets --arch, .* --archs"),
])
def test_flags_the_study_records_are_refused_in_free_form_args(option, value, says):
    """A grid coordinate or recorded setting given again as a raw flag would win in fairseq (the last flag
    counts) while the rows record the study's value: every seed trained with --seed 7, a 'greedy' row decoded
    with --beam 10. Refused before anything runs; the flags the study does not own pass."""
    base = dict(data="d", out_dir="o", test_ref="r", source_lang="s", target_lang="t", methods=["word"])
    with pytest.raises(KDInputError, match=says):
        S.StudyConfig(**base, **{option: value}).validate()
    fine = S.StudyConfig(**base, train_args="--dropout 0.1 --encoder-layers 3", gen_args="--lenpen 1.0",
                         method_args={"word": "--kd-alpha 0.7"})
    with pytest.raises(KDInputError, match="--data d: not a directory"):  # past the flags, to the next check
        fine.validate()


def test_online_methods_decode_and_cache_like_the_offline_ones():
    """--beam and --max-len-a/b reach the online teacher decodes (seq_online / hybrid_online: the task's own
    defaults were beam 4 and 1.2x+10 whatever the study said) and the on-policy student's outputs, as they
    reach fairseq-kd-distill for offline seq; sampling is one sample on both paths. Under --precision bf16 the
    distillation and the top-k cache compute in bf16, as an online teacher does."""
    cfg = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="s", target_lang="t", teacher="/t.pt",
                        beam=6, max_len_a=2.0, max_len_b=3)

    def value(cmd, flag):
        return cmd[len(cmd) - 1 - cmd[::-1].index(flag) + 1]  # the last one: fairseq's

    for method, dec, beam in (("seq_online", "beam", "6"), ("hybrid_online", "sampling", "1")):
        online = S.train_command(cfg, S.Cell(method, 0.0, "a", dec, 1e-3, 1), "d", "s")
        offline = S.distill_command(cfg, dec, "o")
        assert value(online, "--seq-kd-beam") == value(offline, "--beam") == beam
        assert (value(online, "--seq-kd-max-len-a"), value(online, "--seq-kd-max-len-b")) == \
               (value(offline, "--max-len-a"), value(offline, "--max-len-b")) == ("2", "3")
    onp = S.train_command(cfg, S.Cell("onpolicy", 0.0, "a", S.NO_DECODING, 1e-3, 1), "d", "s")
    assert (value(onp, "--onpolicy-max-len-a"), value(onp, "--onpolicy-max-len-b")) == ("2", "3")
    from fairseq_kd.study.commands import cache_command

    bf16 = dataclasses.replace(cfg, precision="bf16", device="cuda")
    assert "--bf16" in S.distill_command(bf16, "beam", "o") and value(cache_command(bf16, "d", "/t.pt", "c"), "--dtype") == "bf16"
    assert value(cache_command(cfg, "d", "/t.pt", "c"), "--dtype") == "fp32"


def test_several_gpus_train_through_fairseqs_entry_point_even_in_process(monkeypatch, tmp_path):
    """--in-process with --nprocs 2 on cuda: the training runs as a subprocess (fairseq spawns its workers from
    its entry point only; called in process it trained on one GPU, its log saying two); one GPU stays in
    process."""
    from fairseq_kd.study import runner as R

    calls = []
    monkeypatch.setattr(R, "run_logged", lambda cmd, log: calls.append(("subprocess", cmd)))
    monkeypatch.setattr(R, "run_inprocess", lambda cmd, log: calls.append(("in process", cmd)))
    for nprocs, expected in ((2, "subprocess"), (1, "in process")):
        cfg = S.StudyConfig(data="d", out_dir=str(tmp_path), test_ref="r", source_lang="s", target_lang="t",
                            device="cuda", nprocs=nprocs)
        calls.clear()
        R.Study(cfg, runner=R.run_inprocess).train(S.Cell("none", 0.0, "a", S.NO_DECODING, 1e-3, 1), "d", "s", "log")
        assert [c[0] for c in calls] == [expected] and "fairseq-train" in calls[0][1][0]


def test_train_command_per_method():
    cfg = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="de", target_lang="en", teacher="t.pt",
                        noise_ops=["deletion", "swap"], method_args={"word": "--kd-alpha 0.7"})
    cmd = S.train_command(cfg, S.Cell("word", 0.2, "transformer_relu_3m", S.NO_DECODING, 1e-3, 3), "d", "save")
    text = " ".join(cmd)
    assert "--criterion word_kd" in text and "--teacher-path t.pt" in text and "--kd-alpha 0.7" in text
    assert "--noise-deletion 0.2" in text and "--noise-swap 0.2" in text and "--noise-substitution" not in text
    assert "--arch transformer_relu_3m" in text and "--seed 3" in text and "--lr 0.001" in text
    clean = " ".join(S.train_command(cfg, S.Cell("none", 0.0, "a", S.NO_DECODING, 1e-3, 1), "d", "s"))
    assert "--noise-" not in clean and "--teacher-path" not in clean and "label_smoothed_cross_entropy" in clean
    hybrid = " ".join(S.train_command(cfg, S.Cell("hybrid", 0.0, "a", "greedy", 1e-3, 1), "distilled", "s"))
    assert "--criterion hybrid_kd --seq-kd-targets data" in hybrid and "--seq-kd-decoding" not in hybrid
    online = " ".join(S.train_command(cfg, S.Cell("hybrid_online", 0.0, "a", "greedy", 1e-3, 1), "d", "s"))
    assert "--criterion hybrid_kd" in online and "--seq-kd-decoding greedy" in online


def test_one_output_length_limit_for_test_validation_and_distillation():
    """A looping student must not emit 200 tokens at test time while the teacher's decode
    (scripts/decode.sh) and the distilled data are capped at 1.2 x source + 10."""
    cfg = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="de", target_lang="en", teacher="t.pt",
                        max_len_a=1.5, max_len_b=7)
    gen = S.generate_command(cfg, "d", "ckpt.pt")
    assert gen[gen.index("--max-len-a") + 1] == "1.5" and gen[gen.index("--max-len-b") + 1] == "7"
    dist = S.distill_command(cfg, "beam", "out")
    assert dist[dist.index("--max-len-a") + 1] == "1.5" and dist[dist.index("--max-len-b") + 1] == "7"
    train = S.train_command(cfg, S.Cell("none", 0.0, "a", S.NO_DECODING, 1e-3, 1), "d", "s")
    assert json.loads(train[train.index("--eval-bleu-args") + 1]) == {"beam": 1, "max_len_a": 1.5, "max_len_b": 7}
    defaults = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="de", target_lang="en")
    assert (defaults.max_len_a, defaults.max_len_b) == (1.2, 10)  # = scripts/decode.sh's defaults


def test_teacher_forcing_distils_with_fairseq_when_the_study_uses_ctranslate2():
    """CTranslate2 has no teacher forcing: that decoding alone goes through the fairseq backend, the
    others keep the study's backend (a study over all four decodings must not stop at the third)."""
    from fairseq_kd.cli import distill as distill_cli

    cfg = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="de", target_lang="en", teacher="t.pt",
                        distill_args="--backend ctranslate2 --threads 2")
    parser = distill_cli.get_parser()
    for decoding, backend in (("beam", "ctranslate2"), ("greedy", "ctranslate2"), ("sampling", "ctranslate2"),
                              ("teacher_forcing", "fairseq")):
        args = parser.parse_args(S.distill_command(cfg, decoding, "out")[1:])
        assert (args.decoding, args.backend, args.threads) == (decoding, backend, 2)
    cfg.distill_args = "--backend=ctranslate2"
    assert parser.parse_args(S.distill_command(cfg, "teacher_forcing", "out")[1:]).backend == "fairseq"


def test_missing_tool_and_criterion_are_clear_errors(monkeypatch):
    with pytest.raises(KDInputError, match="fairseq-kd-no-such-tool"):
        S.find_tool("fairseq-kd-no-such-tool")
    monkeypatch.setitem(S.METHOD_SPECS, "ghost", {"criterion": "ghost_kd", "data": "corpus", "teacher": False,
                                                  "decoding": False})
    cfg = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="s", target_lang="t", methods=["ghost"])
    with pytest.raises(KDInputError, match="criterion 'ghost_kd'.*not registered"):
        S.check_criteria(cfg)


@pytest.fixture
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("study_corpus")
    raw = helpers.make_synthetic_corpus(root / "raw", n_train=200, n_valid=20, n_test=30)
    return raw, helpers.preprocess(raw, root / "bin")


def fake_runner(log):
    """Writes what the real tools would (a train log, a checkpoint, shuffled H- lines = the reference)."""
    def run(cmd, log_path):
        tool = os.path.basename(cmd[0])
        log.append(tool)
        if tool == "fairseq-train":
            save = Path(cmd[cmd.index("--save-dir") + 1])
            save.mkdir(parents=True, exist_ok=True)
            (save / "checkpoint_last.pt").write_bytes(b"x")
            Path(log_path).write_text(TRAIN_LOG)
        elif tool == "fairseq-generate":
            ref = Path(run.ref).read_text().splitlines()
            assert cmd[cmd.index("--beam") + 1] == "1"
            Path(log_path).write_text("".join(f"H-{i}\t-0.5\t{ref[i]}\n" for i in reversed(range(len(ref)))))
    return run


def make_cfg(corpus, out, **kw):
    raw, data = corpus
    base = dict(data=str(data), out_dir=str(out), test_ref=str(raw / "test.tgt"), source_lang="src",
                target_lang="tgt", methods=["none"], noise=[0.0, 0.3], archs=["transformer"], lrs=[0.005],
                seeds=[1], max_update=20, warmup_updates=5, validate_interval_updates=10, max_tokens=1000,
                beam=1, bpe="none", train_args=TINY_TRAIN_ARGS)
    base.update(kw)
    return S.StudyConfig(**base)


def test_train_time_of_a_resumed_cell_adds_the_segments_fairseq_timed_before(corpus, tmp_path):
    """A cell resumed from a checkpoint_last.pt that says 5,000 s of training went into it records 5,000 s
    plus this segment (at most the study's own wall time); a fresh cell records this segment only."""
    cfg = make_cfg(corpus, tmp_path / "study")
    resumed, fresh = (Path(cfg.out_dir) / "cells" / c.slug() for c in S.build_grid(cfg))
    (resumed / "checkpoints").mkdir(parents=True)
    torch.save({"extra_state": {"previous_training_time": 5000.0}}, resumed / "checkpoints" / "checkpoint_last.pt")
    runner = fake_runner([])
    runner.ref = cfg.test_ref
    t0 = time.time()
    summary = S.Study(cfg, runner=runner).run(progress=False)
    wall = time.time() - t0
    times = {r["cell"]: float(r["train_time"]) for r in csv.DictReader(open(summary["results"]))}
    assert 5000 <= times[resumed.name] <= 5000 + wall and 0 <= times[fresh.name] <= wall
    assert json.loads((resumed / "train.json").read_text())["earlier_segments_s"] == 5000
    assert json.loads((fresh / "train.json").read_text())["earlier_segments_s"] == 0


def test_a_student_init_cells_own_time_leaves_out_the_initial_checkpoints(tmp_path):
    """fairseq's --finetune-from-model restores the initial checkpoint's previous_training_time into the
    student's: 5,000 s in the cell's checkpoint of which 1,200 s are the CE model's it started from."""
    from fairseq_kd.study.runner import own_seconds

    for name, t in (("last.pt", 5000.0), ("init.pt", 1200.0)):
        torch.save({"extra_state": {"previous_training_time": t}}, tmp_path / name)
    assert own_seconds(tmp_path / "last.pt", str(tmp_path / "init.pt")) == 3800.0
    assert own_seconds(tmp_path / "last.pt") == 5000.0
    assert own_seconds(tmp_path / "none.pt", str(tmp_path / "init.pt")) == 0.0


def test_resume_skips_finished_cells_and_steps(corpus, tmp_path):
    cfg = make_cfg(corpus, tmp_path / "study")
    launched = []
    runner = fake_runner(launched)
    runner.ref = cfg.test_ref
    summary = S.Study(cfg, runner=runner).run(progress=False)
    assert summary["ran"] == 2 and summary["skipped"] == 0 and launched == ["fairseq-train", "fairseq-generate"] * 2
    rows = list(csv.DictReader(open(summary["results"])))
    assert [r["noise"] for r in rows] == ["0", "0.3"] and all(r["bleu"] == "100.0" for r in rows)
    assert rows[0]["parameters"] == "21888" and rows[0]["updates"] == "20"
    curves = list(csv.DictReader(open(summary["curves"])))
    assert [(c["noise"], c["updates"], c["valid_bleu"]) for c in curves] == [
        ("0", "10", "1.5"), ("0", "20", "7.25"), ("0.3", "10", "1.5"), ("0.3", "20", "7.25")]

    launched.clear()  # second run: nothing to do
    again = S.Study(cfg, runner=runner).run(progress=False)
    assert again["skipped"] == 2 and again["ran"] == 0 and launched == []

    # a run killed after training the second cell: its row is missing, its train.json is there
    with open(summary["results"]) as f:
        lines = f.readlines()
    Path(summary["results"]).write_text("".join(lines[:-1]))
    (Path(cfg.out_dir) / rows[1]["hyp"]).unlink()
    launched.clear()
    resumed = S.Study(cfg, runner=runner).run(progress=False)
    assert resumed["skipped"] == 1 and launched == ["fairseq-generate"]
    assert Path(summary["results"]).read_text() == "".join(lines)
    assert len(list(csv.DictReader(open(summary["curves"])))) == 4  # curve rows replaced, not duplicated

    # a cell trained again (killed before its row, its train.json deleted): the earlier hypotheses are not reused
    cell = Path(cfg.out_dir) / rows[1]["hyp"]
    cell.write_text("stale\n" * 30)
    (cell.parent / "train.json").unlink()
    Path(summary["results"]).write_text("".join(lines[:-1]))
    launched.clear()
    S.Study(cfg, runner=runner).run(progress=False)
    assert launched == ["fairseq-train", "fairseq-generate"] and "stale" not in cell.read_text()
    assert Path(summary["results"]).read_text() == "".join(lines)

    # a bigger grid on the same out dir runs only the new cells
    launched.clear()
    bigger = make_cfg(corpus, tmp_path / "study", seeds=[1, 2])
    assert S.Study(bigger, runner=runner).run(progress=False)["ran"] == 2 and len(launched) == 4
    # changed non-grid settings are refused rather than mixed into the same table
    with pytest.raises(KDInputError, match="max_update"):
        S.Study(make_cfg(corpus, tmp_path / "study", max_update=99), runner=runner).run(progress=False)
    with pytest.raises(KDInputError, match="train_args"):
        S.Study(make_cfg(corpus, tmp_path / "study", train_args=TINY_TRAIN_ARGS + " --dropout 0.3"),
                runner=runner).run(progress=False)
    # the same flags wrapped over lines (a shell continuation's spaces) are the same settings
    launched.clear()
    rewrapped = make_cfg(corpus, tmp_path / "study", seeds=[1, 2], train_args="  " + TINY_TRAIN_ARGS.replace(" ", "\n   "))
    assert S.Study(rewrapped, runner=runner).run(progress=False)["skipped"] == 4 and launched == []


def test_a_teacher_joins_a_study_of_teacher_free_cells(corpus, tmp_path, monkeypatch):
    """CE cells first without a teacher, then KD cells in the same out-dir with one (a new machine trains CE
    beside its teacher); a later CE-only run keeps the recorded teacher; once a KD cell is recorded,
    another teacher is refused, as before."""
    monkeypatch.setattr(S.StudyConfig, "validate", lambda self: None)  # the teachers are names only here
    t1, t2 = str(tmp_path / "t1.pt"), str(tmp_path / "t2.pt")
    out = tmp_path / "study"
    launched = []
    runner = fake_runner(launched)
    runner.ref = make_cfg(corpus, out).test_ref
    settings = lambda: json.loads((out / "study.json").read_text())["teacher"]  # noqa: E731
    assert S.Study(make_cfg(corpus, out, noise=[0.0]), runner=runner).run(progress=False)["ran"] == 1
    assert settings() is None
    kd = S.Study(make_cfg(corpus, out, noise=[0.0], methods=["none", "word"], teacher=t1), runner=runner)
    summary = kd.run(progress=False)
    assert (summary["ran"], summary["skipped"]) == (1, 1)  # word trained, CE kept
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["method"] for r in rows] == ["none", "word"] and settings() == t1
    launched.clear()  # CE seeds added without a teacher: the study keeps t1
    assert S.Study(make_cfg(corpus, out, noise=[0.0], seeds=[1, 2]), runner=runner).run(progress=False)["ran"] == 1
    assert settings() == t1 and launched == ["fairseq-train", "fairseq-generate"]
    with pytest.raises(KDInputError, match=r"different settings \(teacher\)"):
        S.Study(make_cfg(corpus, out, noise=[0.0], methods=["word"], teacher=t2), runner=runner).run(progress=False)


def test_a_resumed_study_knows_its_teacher_by_content_not_by_path(corpus, tmp_path, monkeypatch):
    """The recorded teacher reached by another path (relative, a copy) resumes the study; another file put at
    the recorded path is refused before any work, naming both digests; a teacher-free run does not read (or
    re-record) the teacher; a study.json written before digests falls back to comparing the files' identity."""
    monkeypatch.setattr(S.StudyConfig, "validate", lambda self: None)  # the teachers are bytes only here
    t1 = tmp_path / "t" / "checkpoint_best.pt"
    t1.parent.mkdir()
    t1.write_bytes(b"teacher one")
    out = tmp_path / "study"
    launched = []
    runner = fake_runner(launched)
    runner.ref = make_cfg(corpus, out).test_ref
    run = lambda teacher, **kw: S.Study(make_cfg(corpus, out, noise=[0.0], methods=kw.pop("methods", ["word"]),  # noqa: E731
                                                 teacher=teacher, **kw), runner=runner).run(progress=False)
    recorded = lambda: json.loads((out / "study.json").read_text())  # noqa: E731
    assert run(str(t1))["ran"] == 1
    digest = recorded()["checkpoint_sha256"]["teacher"]
    assert digest == hashlib.sha256(hashlib.sha256(b"teacher one").hexdigest().encode()).hexdigest()
    # the same file by a relative path, then a byte-identical copy elsewhere: the same teacher
    assert run(os.path.relpath(t1), seeds=[1, 2])["ran"] == 1
    copy = tmp_path / "copy.pt"
    copy.write_bytes(t1.read_bytes())
    assert run(str(copy), seeds=[1, 2, 3])["ran"] == 1
    assert recorded()["teacher"] == str(copy) and recorded()["checkpoint_sha256"]["teacher"] == digest
    # another checkpoint written at the recorded path: refused before anything runs
    copy.write_bytes(b"teacher two")
    launched.clear()
    with pytest.raises(KDInputError, match=rf"--teacher {copy} is not the checkpoint .*{digest[:12]}"):
        run(str(copy), seeds=[4])
    assert launched == []
    # a CE-only run does not read the teacher: it goes on and keeps the recorded digest
    assert run(None, methods=["none"])["ran"] == 1
    assert recorded()["checkpoint_sha256"]["teacher"] == digest
    # a study.json from before digests: the same file by another path is the same teacher, another file is not
    settings = recorded()
    del settings["checkpoint_sha256"]
    settings["teacher"] = str(t1)
    (out / "study.json").write_text(json.dumps(settings))
    assert run(os.path.relpath(t1), seeds=[1, 2, 3, 4])["ran"] == 1
    assert recorded()["checkpoint_sha256"]["teacher"] == digest  # recorded from now on
    settings = recorded()
    del settings["checkpoint_sha256"]
    (out / "study.json").write_text(json.dumps(settings))
    with pytest.raises(KDInputError, match=r"different settings \(teacher\)"):
        run(str(copy), seeds=[5])
    settings["checkpoint_sha256"] = {"teacher": "abc"}  # a damaged record names the file and the fix
    (out / "study.json").write_text(json.dumps(settings))
    with pytest.raises(KDInputError, match=rf"{out / 'study.json'}: checkpoint_sha256 must map .* delete that entry"):
        run(os.path.relpath(t1), seeds=[5])


def test_the_teachers_axis_knows_its_teachers_by_content(corpus, tmp_path, monkeypatch):
    """--teachers on a resume: a teacher moved under another name is the recorded one (its cells resume, under
    its recorded name); another checkpoint under a recorded name is refused before any work, naming both digests;
    one checkpoint twice is refused; a teacher-free run keeps the record; distilled data and caches of a named
    teacher live under its name."""
    from fairseq_kd.study import teachers as T

    monkeypatch.setattr(S.StudyConfig, "validate", lambda self: None)  # the teachers are bytes only here
    a, b = tmp_path / "a" / "checkpoints" / "checkpoint_best.pt", tmp_path / "b" / "checkpoints" / "checkpoint_best.pt"
    for path, text in ((a, b"teacher a"), (b, b"teacher b")):
        path.parent.mkdir(parents=True)
        path.write_bytes(text)
    out = tmp_path / "study"
    launched = []
    runner = fake_runner(launched)
    runner.ref = make_cfg(corpus, out).test_ref
    run = lambda teachers, **kw: S.Study(make_cfg(corpus, out, noise=[0.0], methods=kw.pop("methods", ["word"]),  # noqa: E731
                                                  teachers=teachers, teacher=T.teacher_path(teachers[0]) if teachers
                                                  else None, **kw), runner=runner).run(progress=False)
    recorded = lambda: json.loads((out / "study.json").read_text()).get(T.DIGESTS)  # noqa: E731
    digest = lambda data: hashlib.sha256(hashlib.sha256(data).hexdigest().encode()).hexdigest()  # noqa: E731
    assert run([f"big={a}", f"small={b}"])["ran"] == 2
    assert recorded() == {"big": digest(b"teacher a"), "small": digest(b"teacher b")}
    assert [r["teacher"] for r in csv.DictReader(open(out / "results.csv"))] == ["big", "small"]
    # big moved (a copy, default name 'x/moved.pt'): the same teacher, its cells keep the name big and resume
    moved = tmp_path / "x" / "moved.pt"
    moved.parent.mkdir()
    moved.write_bytes(a.read_bytes())
    launched.clear()
    summary = run([str(moved), f"small={b}"])
    assert (summary["ran"], summary["skipped"], launched) == (0, 2, [])
    assert run([str(moved), f"small={b}"], seeds=[1, 2])["ran"] == 2
    assert sorted({r["teacher"] for r in csv.DictReader(open(out / "results.csv"))}) == ["big", "small"]
    # another checkpoint under a recorded name (small retrained in place): refused before anything runs
    b.write_bytes(b"teacher b, retrained")
    launched.clear()
    with pytest.raises(KDInputError, match=rf"teacher small \({b}, sha256 {digest(b'teacher b, retrained')[:12]}\) "
                                           rf"is not the checkpoint .* \(sha256 {digest(b'teacher b')[:12]}\)"):
        run([f"big={a}", f"small={b}"], seeds=[3])
    assert launched == []
    with pytest.raises(KDInputError, match=r"the same checkpoint .* pass it once"):
        run([f"big={a}", f"again={moved}"], seeds=[3])
    # the retrained one under a new name is a new teacher; a CE-only run keeps the record
    assert run([f"big={a}", f"small2={b}"])["ran"] == 1
    assert run([], methods=["none"])["ran"] == 1
    assert sorted(recorded()) == ["big", "small", "small2"]
    settings = json.loads((out / "study.json").read_text())
    settings[T.DIGESTS] = {"big": "abc"}  # a damaged record names the file and the fix
    (out / "study.json").write_text(json.dumps(settings))
    with pytest.raises(KDInputError, match=rf"{out / 'study.json'}: teachers_sha256 must map .* delete that entry"):
        run([f"big={a}"], seeds=[4])


def test_named_teachers_distil_and_cache_under_their_names(tmp_path):
    """The distilled data and top-k cache of a --teachers entry other than the study's teacher go under its name
    (two teachers never share them), and its tools get the path."""
    from fairseq_kd.study.inputs import CellInputs

    class Inputs(CellInputs):
        def __init__(self, cfg):
            self.cfg, self.out, self.launched, self.commands = cfg, tmp_path / "o", [], []
            self.runner = lambda cmd, log: self.commands.append(cmd)

    cfg = S.StudyConfig(data="d", out_dir=str(tmp_path / "o"), test_ref="r", source_lang="s", target_lang="t",
                        methods=["seq"], teachers=["big=x/ckpt.pt", "small=y/ckpt.pt"], teacher="x/ckpt.pt",
                        cache_topk=8)
    inputs = Inputs(cfg)
    assert inputs.distilled_data("beam", "big=x/ckpt.pt") == str(tmp_path / "o" / "distilled" / "beam" / "bin")
    assert inputs.distilled_data("beam", "small=y/ckpt.pt") == str(tmp_path / "o" / "distilled" / "beam" / "small" / "bin")
    assert inputs.teacher_cache("d", "small=y/ckpt.pt") == str(tmp_path / "o" / "cache" / "corpus_small_top8")
    teachers = [c[c.index("--teacher" if "--teacher" in c else "--teacher-path") + 1] for c in inputs.commands]
    assert teachers == ["x/ckpt.pt", "y/ckpt.pt", "y/ckpt.pt"]
    # hybrid's cache of each distilled corpus: one per (decoding, teacher), the study's teacher's as before
    caches = [inputs.teacher_cache(inputs.distilled_data(dec, t), t) for dec in ("beam", "greedy")
              for t in ("big=x/ckpt.pt", "small=y/ckpt.pt")]
    assert [os.path.basename(c) for c in caches] == ["beam_top8", "beam-small_small_top8", "greedy_top8",
                                                     "greedy-small_small_top8"]


def test_an_extra_split_added_later_covers_the_finished_cells_and_references_are_known_by_content(
        corpus, tmp_path, monkeypatch):
    """--extra-test added on a resume decodes the cells already finished (its table holds the same cells as the
    main one; before, they were skipped and results.test1.csv lacked them), without training them again; a
    reference replaced under its rows is refused before any work, naming both digests."""
    monkeypatch.setattr(S.StudyConfig, "validate", lambda self: None)  # test1 is a name only here
    out = tmp_path / "study"
    launched = []
    runner = fake_runner(launched)
    runner.ref = make_cfg(corpus, out).test_ref
    ref1 = tmp_path / "test1.ref"
    ref1.write_bytes(Path(runner.ref).read_bytes())
    assert S.Study(make_cfg(corpus, out, seeds=[1, 2]), runner=runner).run(progress=False)["ran"] == 4
    launched.clear()
    summary = S.Study(make_cfg(corpus, out, seeds=[1, 2], extra_tests=[("test1", str(ref1))]),
                      runner=runner).run(progress=False)
    assert summary["ran"] == 4 and launched == ["fairseq-generate"] * 4  # decoded on test1, not trained again
    rows = list(csv.DictReader(open(out / "results.test1.csv")))
    assert sorted(r["cell"] for r in rows) == sorted(r["cell"] for r in csv.DictReader(open(out / "results.csv")))
    launched.clear()
    assert S.Study(make_cfg(corpus, out, seeds=[1, 2], extra_tests=[("test1", str(ref1))]),
                   runner=runner).run(progress=False)["ran"] == 0
    ref1.write_text("x" + ref1.read_text())  # same lines, other bytes
    with pytest.raises(KDInputError, match=rf"--extra-test test1={ref1} is not the reference this study's test1 rows"):
        S.Study(make_cfg(corpus, out, seeds=[1, 2, 3], extra_tests=[("test1", str(ref1))]),
                runner=runner).run(progress=False)
    assert launched == []
    settings = json.loads((out / "study.json").read_text())
    settings["reference_sha256"] = {"test": "abc"}  # a damaged record names the file and the fix
    (out / "study.json").write_text(json.dumps(settings))
    with pytest.raises(KDInputError, match=r"reference_sha256 must map splits to sha256 .* delete that entry"):
        S.Study(make_cfg(corpus, out, seeds=[1, 2]), runner=runner).run(progress=False)


def test_data_rebuilt_in_place_is_refused_and_files_added_are_recorded(corpus, tmp_path):
    """A study knows its --data by content: a bin/ rebuilt in place under the same path (other training pairs,
    the same dictionaries) is refused before any work, naming the file; a split binarized later is added;
    a study.json written before this records none and adopts the data as it is."""
    import shutil

    raw, data = corpus
    mine = tmp_path / "bin"
    shutil.copytree(data, mine)
    out = tmp_path / "study"
    launched = []
    runner = fake_runner(launched)
    cfg = make_cfg((raw, mine), out)
    runner.ref = cfg.test_ref
    assert S.Study(cfg, runner=runner).run(progress=False)["ran"] == 2
    recorded = json.loads((out / "study.json").read_text())["data_sha256"]
    assert "dict.src.txt" in recorded and "train.src-tgt.src.bin" in recorded

    shutil.copyfile(mine / "valid.src-tgt.src.bin", mine / "test1.src-tgt.src.bin")  # a split added: recorded
    launched.clear()
    assert S.Study(make_cfg((raw, mine), out, seeds=[1, 2]), runner=runner).run(progress=False)["ran"] == 2
    assert "test1.src-tgt.src.bin" in json.loads((out / "study.json").read_text())["data_sha256"]

    settings = json.loads((out / "study.json").read_text())
    del settings["data_sha256"]  # a study recorded before data digests: adopted, not refused
    (out / "study.json").write_text(json.dumps(settings))
    assert S.Study(make_cfg((raw, mine), out, seeds=[1, 2]), runner=runner).run(progress=False)["ran"] == 0
    assert json.loads((out / "study.json").read_text())["data_sha256"]["dict.src.txt"] == recorded["dict.src.txt"]

    train = mine / "train.src-tgt.tgt.bin"
    train.write_bytes(bytes(reversed(train.read_bytes())))  # rebuilt in place: other pairs, same names
    launched.clear()
    with pytest.raises(KDInputError, match=r"--data .* is not the data this study was run on "
                                           r"\(train.src-tgt.tgt.bin changed since"):
        S.Study(make_cfg((raw, mine), out, seeds=[1, 2, 3]), runner=runner).run(progress=False)
    assert launched == []


def test_teacher_on_resume_rules():
    from fairseq_kd.study.resume import teacher_on_resume

    assert teacher_on_resume("a", "a", True, True) == (True, "a")
    assert teacher_on_resume(None, "a", True, False) == (True, "a")  # first teacher, no KD row yet
    assert teacher_on_resume("a", None, False, True) == (True, "a")  # teacher-free cells join, the study keeps a
    assert teacher_on_resume("a", "b", True, True) == (False, "b")  # another teacher after KD rows
    assert teacher_on_resume("a", "b", True, False) == (False, "b")  # another teacher, even before KD rows
    assert teacher_on_resume(None, "a", True, True) == (False, "a")  # rows that read a teacher not recorded


def test_a_resumed_study_removes_the_temporaries_of_killed_writes(corpus, tmp_path):
    import subprocess

    cfg = make_cfg(corpus, tmp_path / "study", noise=[0.0])
    runner = fake_runner([])
    runner.ref = cfg.test_ref
    S.Study(cfg, runner=runner).run(progress=False)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a finished process: its pid is free (a killed writer's)
    cell = next((tmp_path / "study" / "cells").iterdir())
    stale = [tmp_path / "study" / f".results.csv.{dead.pid}.abcd1234.tmp", cell / f".train.json.{dead.pid}.abcd1234.tmp"]
    live = cell / f".hyp.beam1.txt.{os.getpid()}.abcd1234.tmp"  # a live writer's: kept
    for p in [*stale, live]:
        p.write_text("half")
    Path(cfg.out_dir, "results.csv").unlink()  # the cell reruns its decode and record steps
    S.Study(cfg, runner=runner).run(progress=False)
    assert not any(p.exists() for p in stale) and live.exists()


def test_bad_inputs_are_refused_before_any_work(corpus, tmp_path):
    with pytest.raises(KDInputError, match="test-ref"):
        S.Study(make_cfg(corpus, tmp_path / "o", test_ref=str(tmp_path / "missing.txt"))).run(progress=False)
    with pytest.raises(KDInputError, match="need a teacher"):
        S.Study(make_cfg(corpus, tmp_path / "o", methods=["word"])).run(progress=False)
    with pytest.raises(KDInputError, match="dict.xx.txt"):
        S.Study(make_cfg(corpus, tmp_path / "o", source_lang="xx")).run(progress=False)
    assert not (tmp_path / "o").exists()


def tiny_param_count(vocab: int, d: int = 32, f: int = 64) -> int:
    """Closed form for the tiny transformer (1+1 layers, shared embeddings, sinusoidal positions)."""
    ffn = d * f + f + f * d + d
    enc = 4 * d * d + 4 * d + 2 * 2 * d + ffn
    dec = 8 * d * d + 8 * d + 3 * 2 * d + ffn
    return vocab * d + enc + dec


@pytest.mark.integration
def test_real_two_cell_grid_trains_decodes_scores_and_resumes(corpus, tmp_path, capsys):
    """Real fairseq-train / fairseq-generate (in-process) on a 2-cell grid, then a no-op resume."""
    raw, data = corpus
    cfg = make_cfg(corpus, tmp_path / "study")
    study = S.Study(cfg, runner=S.run_inprocess)
    summary = helpers.run_study_one_thread(study)
    assert summary["ran"] == 2 and not summary["failed"]
    rows = list(csv.DictReader(open(summary["results"])))
    vocab = 4 + len((data / "dict.src.txt").read_text().splitlines())
    refs = (raw / "test.tgt").read_text().splitlines()
    for row in rows:
        assert int(row["parameters"]) == tiny_param_count(vocab)
        assert int(row["updates"]) == 20
        hyps = (Path(cfg.out_dir) / row["hyp"]).read_text().splitlines()
        assert len(hyps) == len(refs)
        assert float(row["bleu"]) == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
        assert float(row["chrf"]) == round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)
    curves = list(csv.DictReader(open(summary["curves"])))
    assert sorted({int(c["updates"]) for c in curves}) == [10, 20]
    train_log = (Path(cfg.out_dir) / "cells" / rows[1]["cell"] / "train.log").read_text()
    assert "--noise-deletion 0.3" in train_log and "on-the-fly noise" in train_log
    again = S.Study(cfg, runner=S.run_inprocess)
    assert again.run(progress=False)["skipped"] == 2 and again.launched == []

    from fairseq_kd.cli import report

    assert report.cli_main([summary["results"], "--out-dir", str(tmp_path / "rep")]) == 0
    assert len(list((tmp_path / "rep").glob("*.png"))) == 3


@pytest.mark.integration
def test_kd_methods_through_their_tools(tiny_teacher, tmp_path):
    """word (word_kd + teacher) and seq (fairseq-kd-distill data, built once per decoding)."""
    cfg = S.StudyConfig(data=str(tiny_teacher.data_bin), out_dir=str(tmp_path / "kd"),
                        test_ref=str(tiny_teacher.raw / "test.tgt"), source_lang="src", target_lang="tgt",
                        teacher=str(tiny_teacher.checkpoint), methods=["word", "seq"], noise=[0.1],
                        decodings=["greedy"], lrs=[0.005], seeds=[1, 2], max_update=10, warmup_updates=4,
                        validate_interval_updates=5, max_tokens=1000, beam=1, bpe="none",
                        train_args=TINY_TRAIN_ARGS)
    study = S.Study(cfg, runner=S.run_inprocess)
    summary = helpers.run_study_one_thread(study)
    assert summary["ran"] == 4 and study.launched.count("fairseq-kd-distill") == 1
    rows = list(csv.DictReader(open(summary["results"])))
    assert sorted((r["method"], r["decoding"], r["seed"]) for r in rows) == [
        ("seq", "greedy", "1"), ("seq", "greedy", "2"), ("word", "-", "1"), ("word", "-", "2")]
    distilled = Path(cfg.out_dir) / "distilled" / "greedy"
    assert (distilled / "train.tgt").exists() and (distilled / "bin" / "dict.tgt.txt").exists()
    seq_log = (Path(cfg.out_dir) / "cells" / rows[-1]["cell"] / "train.log").read_text()
    assert str(distilled / "bin") in seq_log
    word_log = (Path(cfg.out_dir) / "cells" / rows[0]["cell"] / "train.log").read_text()
    assert "--criterion word_kd" in word_log and "--teacher-path" in word_log


def resolved_train_settings(cfg, cell):
    """Every fairseq-train setting of a cell as fairseq itself resolves it (defaults included)."""
    from fairseq import options

    argv = S.train_command(cfg, cell, "data-bin", "save")[1:]
    return vars(options.parse_args_and_arch(options.get_training_parser(), argv))


def differing_settings(cfg):
    """method -> settings (present for the baseline too) whose value differs from the CE baseline's."""
    base = resolved_train_settings(cfg, S.Cell("none", 0.0, "transformer", S.NO_DECODING, 1e-3, 1))
    out = {}
    for method in ("word", "seq", "seq_online", "hybrid", "hybrid_online"):
        dec = S.NO_DECODING if not S.METHOD_SPECS[method]["decoding"] else "greedy"
        got = resolved_train_settings(cfg, S.Cell(method, 0.0, "transformer", dec, 1e-3, 1))
        out[method] = sorted(k for k in base if k in got and got[k] != base[k])
    return out


def test_every_method_trains_with_the_baselines_settings_but_its_own():
    """Parsed by fairseq: a method may differ from CE only in its criterion, its teacher and its
    online decoding; label smoothing, dropout, budget, schedule, checkpointing are shared."""
    cfg = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="de", target_lang="en", teacher="t.pt",
                        label_smoothing=0.1, train_args="--dropout 0.2")
    own = {"criterion", "teacher_path", "seq_kd_decoding", "seq_kd_targets",  # the method's own; its teacher's
           "seq_kd_beam", "seq_kd_max_len_a", "seq_kd_max_len_b", "onpolicy_max_len_a", "onpolicy_max_len_b"}  # search
    diffs = differing_settings(cfg)
    assert all(set(d) <= own for d in diffs.values()), diffs
    assert diffs["seq_online"] == ["criterion", "seq_kd_beam", "seq_kd_decoding", "teacher_path"]  # beam 5, not 4
    assert diffs["hybrid"] == ["criterion", "seq_kd_targets", "teacher_path"]
    for method in ("none", "word", "seq", "seq_online", "hybrid"):
        dec = S.NO_DECODING if not S.METHOD_SPECS[method]["decoding"] else "greedy"
        settings = resolved_train_settings(cfg, S.Cell(method, 0.0, "transformer", dec, 1e-3, 1))
        assert settings["label_smoothing"] == 0.1 and settings["dropout"] == 0.2, method
    # the check sees a method that differs (here on purpose, through the grid's method_args)
    cfg.method_args = {"word": "--dropout 0.3"}
    assert differing_settings(cfg)["word"] == ["criterion", "dropout", "teacher_path"]
