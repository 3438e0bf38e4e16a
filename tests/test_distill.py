"""fairseq-kd-distill: alignment, every decoding mode, teacher forcing, resume, seq-inter, errors.

Truths: fairseq-generate's own hypotheses (keyed by sentence id), an argmax computed
sentence by sentence without batching, sacrebleu's sentence BLEU, and byte equality of
an interrupted-then-resumed run with an uninterrupted one.
"""
import json
from pathlib import Path

import pytest
import torch

from tests import helpers

MAXLEN = ["--max-len-a", "1.2", "--max-len-b", "10"]


def run_distill(tt, out: Path, *extra, split: str = "test") -> dict:
    from fairseq_kd.cli import distill

    argv = ["--data", str(tt.data_bin), "--split", split, "--teacher", str(tt.checkpoint), "-o", str(out),
            "--cpu", "--no-progress", "--shard-size", "16", "--max-tokens", "40", *MAXLEN, *extra]
    return distill.main(argv)


def lines(path: Path):
    return path.read_text(encoding="utf-8").splitlines()


def published_files(out: Path):
    """Every final output (text and binarized), not the work dirs (shards, parts) or the timing summary."""
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name != "summary.json"
                  and not {"shards", "parts"} & set(p.relative_to(out).parts))


def assert_same_published(a: Path, b: Path):
    """Both runs published the same files, byte for byte."""
    files_a, files_b = published_files(a), published_files(b)
    assert [p.relative_to(a) for p in files_a] == [p.relative_to(b) for p in files_b]
    for x, y in zip(files_a, files_b):
        assert x.read_bytes() == y.read_bytes(), x.name


# --- unit: pure pieces --------------------------------------------------------------
@pytest.mark.unit
def test_select_index_picks_highest_sentence_bleu():
    import sacrebleu

    from fairseq_kd.distill.select import select_index

    ref = "the cat sat on the mat"
    hyps = ["a dog ran", "the cat sat on a mat", "the cat sat on the mat today", "the cat"]
    scores = [sacrebleu.sentence_bleu(h, [ref]).score for h in hyps]
    assert select_index(hyps, ref, "sentence_bleu") == max(range(4), key=lambda i: scores[i])
    assert select_index(hyps, ref, "top") == 0
    assert select_index(["x y", "x y"], "x y", "chrf") == 0  # ties keep the higher-ranked hypothesis


@pytest.mark.unit
def test_choose_falls_back_to_gold_on_empty_or_failed():
    from fairseq.data import Dictionary

    from fairseq_kd.distill.run import Detokenizer, choose

    d = Dictionary()
    a, b = d.add_symbol("a"), d.add_symbol("b")
    eos = d.eos()
    gold = torch.tensor([a, b, eos])
    empty = [{"tokens": torch.tensor([eos]), "score": -0.1}]
    rec = choose(empty, gold, "top", d, Detokenizer(None), eos)
    assert rec["tgt"] == [a, b, eos] and rec["fallback"] == "empty"
    rec = choose([], gold, "top", d, Detokenizer(None), eos)
    assert rec["tgt"] == [a, b, eos] and rec["fallback"] == "failed"
    rec = choose([{"tokens": torch.tensor([b, eos]), "score": -0.5}], gold, "top", d, Detokenizer(None), eos)
    assert rec["tgt"] == [b, eos] and rec["fallback"] is None


@pytest.mark.unit
def test_teacher_forcing_targets_by_hand():
    from fairseq_kd.distill.decoding import teacher_forcing_targets

    pad, eos, V = 1, 2, 6
    lp = torch.full((1, 4, V), -5.0)
    lp[0, 0, 4] = -0.1  # position 0 -> 4
    lp[0, 1, eos] = -0.01  # EOS is best at position 1 but the gold continues: next best is taken
    lp[0, 1, 5] = -0.2
    lp[0, 2, 3] = -0.1  # last gold position (EOS) -> forced EOS whatever the argmax
    gold = torch.tensor([[4, 5, eos, pad]])
    out = teacher_forcing_targets(lp, gold, pad, eos, special=[0, pad, eos])
    assert out[0].tolist() == [4, 5, eos]


@pytest.mark.unit
def test_shard_store_refuses_other_settings(tmp_path):
    from fairseq_kd.distill.shards import ShardStore
    from fairseq_kd.errors import KDInputError

    ShardStore(str(tmp_path), {"decoding": "greedy"})
    with pytest.raises(KDInputError, match="--overwrite"):
        ShardStore(str(tmp_path), {"decoding": "beam5"})


@pytest.mark.unit
@pytest.mark.parametrize("decoding", ["beam", "greedy"])
def test_temperature_is_a_setting_of_beam_and_greedy_shards(tmp_path, decoding):
    """fairseq's search divides every step's logits by --temperature (beam: other hypotheses, greedy: other
    scores): shards decoded at another temperature are refused on resume; the default keeps the signature
    written before temperature was recorded, so a directory distilled then still resumes."""
    from fairseq_kd.distill.decoding import DecodingConfig
    from fairseq_kd.distill.shards import ShardStore
    from fairseq_kd.errors import KDInputError

    before = {"beam": "beam-beam5-nbest1-lenpen1.0-maxlen1.2x+10-minlen1",
              "greedy": "greedy-maxlen1.2x+10-minlen1"}[decoding]  # the signature of earlier versions
    assert DecodingConfig(decoding=decoding).signature() == before
    assert DecodingConfig(decoding=decoding, temperature=1.0).signature() == before
    ShardStore(str(tmp_path), {"decoding": before})  # a directory distilled before this change
    ShardStore(str(tmp_path), {"decoding": DecodingConfig(decoding=decoding).signature()})  # resumes
    for t in (0.5, 2.0):
        with pytest.raises(KDInputError, match=r"\(decoding differ\).*--overwrite"):
            ShardStore(str(tmp_path), {"decoding": DecodingConfig(decoding=decoding, temperature=t).signature()})
    assert (DecodingConfig(decoding="teacher_forcing", temperature=0.5).signature()
            == DecodingConfig(decoding="teacher_forcing").signature())  # its argmax never reads the temperature


# --- integration: the tool on the tiny teacher ---------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("decoding,beam", [("greedy", 1), ("beam", 4)])
def test_distilled_line_i_is_generates_hypothesis_i(tiny_teacher, tmp_path, decoding, beam):
    out = tmp_path / decoding
    summary = run_distill(tiny_teacher, out, "--decoding", decoding, "--beam", str(beam))
    # fairseq's max length a * src_len + b is per batch: one sentence per batch = per sentence
    expected = helpers.generate(tiny_teacher.data_bin, tiny_teacher.checkpoint, "test", beam=beam,
                                extra=MAXLEN + ["--batch-size", "1", "--required-batch-size-multiple", "1"])
    src = lines(tiny_teacher.raw / "test.src")
    assert lines(out / "test.src") == src  # source side aligned with the raw corpus
    assert lines(out / "test.tgt") == expected  # line i = fairseq-generate's hypothesis for id i
    assert summary["sentences"] == len(src) == 40
    # the copy teacher: distilled line i is the copy of source i wherever the teacher is right
    assert sum(h == s for h, s in zip(lines(out / "test.tgt"), src)) == sum(h == s for h, s in zip(expected, src))


@pytest.mark.integration
def test_binarized_output_trains_and_matches_text(tiny_teacher, tmp_path):
    from fairseq.data import Dictionary, data_utils

    out = tmp_path / "d"
    run_distill(tiny_teacher, out, "--decoding", "greedy", "--copy-splits", "valid")
    d = Dictionary.load(str(out / "bin" / "dict.tgt.txt"))
    ds = data_utils.load_indexed_dataset(str(out / "bin" / "test.src-tgt.tgt"), d, "mmap")
    assert [d.string(ds[i]) for i in range(len(ds))] == lines(out / "test.tgt")
    assert (out / "bin" / "dict.tgt.txt").read_bytes() == (tiny_teacher.data_bin / "dict.tgt.txt").read_bytes()
    assert (out / "bin" / "valid.src-tgt.src.bin").exists()


@pytest.mark.integration
def test_sampling_topk1_is_greedy_and_seeded_sampling_reproduces(tiny_teacher, tmp_path):
    run_distill(tiny_teacher, tmp_path / "g", "--decoding", "greedy")
    run_distill(tiny_teacher, tmp_path / "s1", "--decoding", "sampling", "--beam", "1", "--sampling-topk", "1")
    assert lines(tmp_path / "s1" / "test.tgt") == lines(tmp_path / "g" / "test.tgt")
    a = run_distill(tiny_teacher, tmp_path / "sa", "--decoding", "sampling", "--beam", "1", "--seed", "3")
    run_distill(tiny_teacher, tmp_path / "sb", "--decoding", "sampling", "--beam", "1", "--seed", "3")
    assert (tmp_path / "sa" / "test.tgt").read_bytes() == (tmp_path / "sb" / "test.tgt").read_bytes()
    assert a["sentences"] == 40


@pytest.mark.integration
def test_teacher_forcing_equals_direct_argmax(tiny_teacher, tmp_path):
    from fairseq import checkpoint_utils
    from fairseq.data import Dictionary, data_utils

    import fairseq_kd  # noqa: F401

    out = tmp_path / "tf"
    run_distill(tiny_teacher, out, "--decoding", "teacher_forcing")
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(tiny_teacher.checkpoint)])
    model = models[0].eval()
    d = task.target_dictionary
    src_ds = data_utils.load_indexed_dataset(str(tiny_teacher.data_bin / "test.src-tgt.src"), d, "mmap")
    tgt_ds = data_utils.load_indexed_dataset(str(tiny_teacher.data_bin / "test.src-tgt.tgt"), d, "mmap")
    got = lines(out / "test.tgt")
    for i in range(len(src_ds)):  # one sentence at a time: no batching, no padding
        src, gold = src_ds[i].long()[None], tgt_ds[i].long()
        prev = torch.cat([gold.new_tensor([d.eos()]), gold[:-1]])[None]
        with torch.no_grad():
            logits = model(src, torch.tensor([src.size(1)]), prev)[0][0]  # T x V
        logits[:, [d.pad(), d.bos(), d.eos()]] = float("-inf")
        expected = logits.argmax(-1)[:-1]  # the last position is the gold EOS
        assert got[i] == d.string(expected), i
        assert len(got[i].split()) == gold.numel() - 1  # same length as the reference


@pytest.mark.integration
def test_interrupted_run_resumes_byte_identical(tiny_teacher, tmp_path, monkeypatch):
    from fairseq_kd.distill import run as run_mod
    from tests.reliability_helpers import killed_atomic_write

    full = tmp_path / "full"
    run_distill(tiny_teacher, full, "--decoding", "beam", "--beam", "2")

    part = tmp_path / "part"
    real = run_mod.decode_shard
    calls = {"n": 0}

    def crash_on_third_shard(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(run_mod, "decode_shard", crash_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        run_distill(tiny_teacher, part, "--decoding", "beam", "--beam", "2")
    monkeypatch.setattr(run_mod, "decode_shard", real)
    done = sorted(p.name for p in (part / "shards").glob("shard-*.jsonl"))
    assert done == ["shard-000000.jsonl", "shard-000001.jsonl"]  # 40 lines / 16: shard 2 was lost
    assert not (part / "test.tgt").exists()  # nothing published before all shards are done
    (part / "shards" / "shard-000002.jsonl.tmp.4242").write_text('{"id": 32, "tgt": [4')  # a killed write
    stale = killed_atomic_write(part / "shards" / "shard-000002.jsonl", '{"id": 32, "tgt": [4')  # fileio's own
    calls["n"] = 0
    monkeypatch.setattr(run_mod, "decode_shard", lambda *a, **k: (calls.__setitem__("n", calls["n"] + 1), real(*a, **k))[1])
    from fairseq_kd.errors import KDInputError

    for other in (["--beam", "3"], ["--temperature", "0.5"]):  # resuming with another setting mixes two corpora
        with pytest.raises(KDInputError, match=r"\(decoding differ\)"):
            run_distill(tiny_teacher, part, "--decoding", "beam", "--beam", "2", *other)
    assert calls["n"] == 0 and not (part / "test.tgt").exists()
    run_distill(tiny_teacher, part, "--decoding", "beam", "--beam", "2")
    assert calls["n"] == 1  # only the missing shard was decoded again
    assert not stale.exists()  # the killed write's temporary is gone
    assert_same_published(full, part)


@pytest.mark.integration
def test_rerun_removes_the_temporaries_of_killed_writes(tiny_teacher, tmp_path):
    """A run killed mid-write leaves its temporary (never read) beside the target, in the shard work dir
    or in the output dir (while publishing); the next run over the directory deletes it, same bytes."""
    from tests.reliability_helpers import killed_atomic_write

    out = tmp_path / "out"
    run_distill(tiny_teacher, out, "--decoding", "greedy")
    before = {p.relative_to(out): p.read_bytes() for p in published_files(out)}
    shard = out / "shards" / "shard-000001.jsonl"
    shard_bytes = shard.read_bytes()
    stale = [killed_atomic_write(shard), killed_atomic_write(out / "shards" / "timing.json"),
             killed_atomic_write(out / "test.tgt"), killed_atomic_write(out / "bin" / "dict.tgt.txt")]
    run_distill(tiny_teacher, out, "--decoding", "greedy")  # nothing to decode: publishes again
    assert [p.name for p in stale if p.exists()] == []
    assert {p.relative_to(out): p.read_bytes() for p in published_files(out)} == before
    assert shard.read_bytes() == shard_bytes


@pytest.mark.integration
def test_seq_inter_keeps_the_closest_hypothesis(tiny_teacher, tmp_path):
    import sacrebleu

    out = tmp_path / "si"
    summary = run_distill(tiny_teacher, out, "--decoding", "beam", "--beam", "4", "--nbest", "4",
                          "--select", "sentence_bleu")
    top = run_distill(tiny_teacher, tmp_path / "top", "--decoding", "beam", "--beam", "4")
    refs = lines(tiny_teacher.raw / "test.tgt")
    got = lines(out / "test.tgt")
    recs = [json.loads(x) for p in sorted((out / "shards").glob("shard-*.jsonl")) for x in p.read_text().splitlines()]
    for i, rec in enumerate(recs):
        assert rec["id"] == i
    # the chosen line scores at least as high as the teacher's top hypothesis, line by line
    top_lines = lines(tmp_path / "top" / "test.tgt")
    for g, t, r in zip(got, top_lines, refs):
        assert sacrebleu.sentence_bleu(g, [r]).score >= sacrebleu.sentence_bleu(t, [r]).score
    assert summary["bleu"] >= top["bleu"]
    # a lower-ranked hypothesis is kept exactly when it scores strictly higher (ties keep the top one),
    # and on this test set that happens: the selection does leave the top hypothesis
    for g, t, r, rec in zip(got, top_lines, refs, recs):
        if rec["rank"] == 0:
            assert g == t
        else:
            assert g != t and sacrebleu.sentence_bleu(g, [r]).score > sacrebleu.sentence_bleu(t, [r]).score
    assert any(rec["rank"] > 0 for rec in recs)


@pytest.mark.integration
def test_bad_inputs_are_clear_errors(tiny_teacher, tmp_path):
    from fairseq_kd.errors import KDInputError

    with pytest.raises(KDInputError, match="no binarized"):
        run_distill(tiny_teacher, tmp_path / "x", split="nosuchsplit")
    with pytest.raises(KDInputError, match="--nbest"):
        run_distill(tiny_teacher, tmp_path / "y", "--select", "chrf")
    # a data dir whose dictionary differs from the teacher's
    other = tmp_path / "other"
    other.mkdir()
    for f in tiny_teacher.data_bin.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    dict_lines = lines(other / "dict.tgt.txt")
    (other / "dict.tgt.txt").write_text("\n".join(reversed(dict_lines)) + "\n")
    from fairseq_kd.cli import distill

    with pytest.raises(KDInputError, match="vocabulary mismatch"):
        distill.main(["--data", str(other), "--split", "test", "--teacher", str(tiny_teacher.checkpoint),
                      "-o", str(tmp_path / "z"), "--cpu", "--no-progress"])


@pytest.mark.integration
def test_sigkill_then_rerun_is_byte_identical(tiny_teacher, tmp_path):
    """A real SIGKILL of the tool mid-run (always: the tool pauses once its first shard is written, and is
    killed there), then a re-run: same files as an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["--decoding", "greedy", "--shard-size", "40", "--max-tokens", "30"]
    run_distill(tiny_teacher, tmp_path / "full", *args, split="train")
    out, paused = tmp_path / "killed", tmp_path / "paused"
    cmd = [sys.executable, "-c", PAUSE_BEFORE_SECOND_SHARD, str(paused), "--data", str(tiny_teacher.data_bin),
           "--split", "train", "--teacher", str(tiny_teacher.checkpoint), "-o", str(out), "--cpu", "--no-progress",
           *MAXLEN, *args]
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=str(helpers.REPO), stdout=log, stderr=log)
        try:
            deadline = time.time() + 300
            while not paused.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            alive = proc.poll() is None
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            code = proc.wait()
    assert paused.exists() and alive and code == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert sorted(p.name for p in (out / "shards").glob("shard-*.jsonl")) == ["shard-000000.jsonl"]
    assert not (out / "train.tgt").exists()  # nothing published by the killed run
    run_distill(tiny_teacher, out, *args, split="train")
    assert_same_published(tmp_path / "full", out)


# fairseq-kd-distill whose second shard never starts: it writes argv[1] once the first shard is on disk,
# then sleeps until it is killed
PAUSE_BEFORE_SECOND_SHARD = """
import pathlib, sys, time
from fairseq_kd.cli import distill
from fairseq_kd.distill import run
real, marker, calls = run.decode_shard, pathlib.Path(sys.argv[1]), []
def pausing(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        marker.write_text("first shard written")
        time.sleep(3600)
    return real(*args, **kwargs)
run.decode_shard = pausing
distill.cli_main(sys.argv[2:])
"""


@pytest.mark.integration
def test_mixed_length_batch_decodes_each_sentence_as_alone(tiny_teacher):
    """A model that never chooses EOS loops until the length limit, so in a mixed-length
    batch every short sentence searches past the limit it has alone (a * own length + b).
    The decoder's per-sentence limit must give the whole n-best list each sentence gets
    alone; fairseq's generator on the same batch must not (the control: the check has
    something to catch)."""
    from fairseq_kd.distill import decoding as dec

    task, model, _ = helpers.build_components(tiny_teacher.data_bin, seed=3)
    model.eval()
    eos, output_layer = task.target_dictionary.eos(), model.decoder.output_layer

    def never_eos(features):  # a model that loops: EOS only when the length limit forces it
        logits = output_layer(features)
        logits[..., eos] -= 1e4
        return logits

    model.decoder.output_layer = never_eos
    task.load_dataset("test")
    ds = task.dataset("test")
    order = sorted(range(len(ds)), key=lambda i: int(ds.src_sizes[i]))
    ids = order[:4] + order[-4:]  # shortest and longest sources in one batch
    assert int(ds.src_sizes[ids[0]]) < int(ds.src_sizes[ids[-1]])
    sample = ds.collater([ds[i] for i in ids])
    cfg = dec.DecodingConfig(decoding="beam", beam=3, nbest=3, max_len_a=1.2, max_len_b=4)
    decoder = dec.TeacherDecoder([model], task.target_dictionary, cfg)
    plain = dec.build_generator([model], task.target_dictionary, cfg)  # fairseq's own, one limit per batch

    def tokens(hyps):  # the whole n-best list of one sentence
        return [h["tokens"].tolist() for h in hyps]

    def alone(i):
        one = ds.collater([ds[i]])
        with torch.inference_mode():
            return tokens(plain.generate([model], {"net_input": one["net_input"]})[0])

    got = decoder(sample)
    expected = [alone(i) for i in sample["id"].tolist()]
    assert [tokens(h) for h in got] == expected
    with torch.inference_mode():
        raw = plain.generate([model], {"net_input": sample["net_input"]})
    assert [tokens(h) for h in raw] != expected
    for row, i in enumerate(sample["id"].tolist()):  # each row stops at its own limit
        assert len(got[row][0]["tokens"]) <= decoder.own_max_len(int(ds.src_sizes[i])) + 1


# --- parallel workers: --part I/N and --merge ----------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("decoding", [["--decoding", "greedy"], ["--decoding", "beam", "--beam", "3"]])
def test_two_parts_and_merge_are_byte_identical_to_one_worker(tiny_teacher, tmp_path, decoding):
    one = tmp_path / "one"
    run_distill(tiny_teacher, one, *decoding)
    out = tmp_path / "workers"
    p1 = run_distill(tiny_teacher, out, *decoding, "--part", "1/2")  # in any order
    p0 = run_distill(tiny_teacher, out, *decoding, "--part", "0/2")
    assert (p0["shards"], p1["shards"]) == ([0, 1], [1, 3])  # 3 shards of 16 (40 lines), contiguous blocks
    assert p0["sentences"] + p1["sentences"] == 40 and not (out / "test.tgt").exists()
    summary = run_distill(tiny_teacher, out, *decoding, "--merge")
    assert summary["merged_parts"] == 2 and summary["sentences"] == 40
    assert_same_published(one, out)


@pytest.mark.integration
def test_merge_refuses_missing_foreign_and_tampered_parts(tiny_teacher, tmp_path):
    from fairseq_kd.errors import KDInputError

    out = tmp_path / "o"
    greedy = ["--decoding", "greedy"]
    with pytest.raises(KDInputError, match="no parts"):
        run_distill(tiny_teacher, out, *greedy, "--merge")
    run_distill(tiny_teacher, out, *greedy, "--part", "0/2")
    with pytest.raises(KDInputError, match=r"part 1/2 is missing.*--part 1/2"):
        run_distill(tiny_teacher, out, *greedy, "--merge")
    run_distill(tiny_teacher, out, "--decoding", "beam", "--beam", "2", "--part", "1/2")  # other settings
    with pytest.raises(KDInputError, match=r"part 1/2 .* is foreign.*decoding"):
        run_distill(tiny_teacher, out, *greedy, "--merge")
    run_distill(tiny_teacher, out, *greedy, "--part", "1/2", "--overwrite")
    (out / "parts" / "0-of-3").mkdir()  # a part of another split
    with pytest.raises(KDInputError, match="different splits"):
        run_distill(tiny_teacher, out, *greedy, "--merge")
    (out / "parts" / "0-of-3").rmdir()
    shard = out / "parts" / "1-of-2" / "shard-000002.jsonl"
    good = shard.read_text()
    shard.write_text("\n".join(good.splitlines()[:-1]) + "\n")  # a sentence lost
    with pytest.raises(KDInputError, match="misaligned"):
        run_distill(tiny_teacher, out, *greedy, "--merge")
    shard.write_text(good)
    assert run_distill(tiny_teacher, out, *greedy, "--merge")["sentences"] == 40
    with pytest.raises(SystemExit):  # usage error (exit 2): I must be < N
        run_distill(tiny_teacher, out, *greedy, "--part", "2/2")


@pytest.mark.unit
def test_to_pieces_is_dictionary_string():
    from fairseq.data import Dictionary

    from fairseq_kd.distill.data import to_pieces

    d = Dictionary()
    for i in range(20):
        d.add_symbol(f"▁w{i}")
    g = torch.Generator().manual_seed(0)
    for _ in range(300):  # every id, specials (bos, pad, eos, unk) included
        t = torch.randint(0, len(d), (int(torch.randint(0, 12, (1,), generator=g)),), generator=g)
        assert to_pieces(d, t) == d.string(t) == to_pieces(d, t.tolist())


# --- --copy-splits: gold splits copied into bin/ never replace the distilled one -------------
def _cli_args(split: str, copy_splits: str, out: Path):
    """Flags with paths that do not exist: a refusal must come before anything is loaded or checked."""
    return ["--data", str(out / "no-data"), "--split", split, "--teacher", str(out / "no-teacher.pt"),
            "-o", str(out / "o"), "--cpu", "--copy-splits", copy_splits]


@pytest.mark.unit
@pytest.mark.parametrize("split,copy_splits,message", [
    ("valid", "valid,test", "--copy-splits names valid, the --split being distilled: its gold binarized files would "
                            "replace the distilled ones in bin/; drop valid from --copy-splits"),
    ("train", "valid,test,valid", "--copy-splits lists valid twice: name each split once"),
])
def test_copy_splits_naming_the_split_or_a_split_twice_is_refused_before_any_work(tmp_path, split, copy_splits,
                                                                                   message):
    from fairseq_kd.cli import distill
    from fairseq_kd.errors import KDInputError

    with pytest.raises(KDInputError) as err:
        distill.main(_cli_args(split, copy_splits, tmp_path))
    assert str(err.value) == message
    assert not (tmp_path / "o").exists()  # refused before the output dir (its lock) was made


@pytest.mark.unit
def test_copy_splits_of_other_splits_are_kept_in_order(tmp_path):
    from fairseq_kd.cli import distill

    args = distill.get_parser().parse_args(_cli_args("train", "valid,test", tmp_path))
    assert distill.config_from_args(args).copy_splits == ["valid", "test"]
    args = distill.get_parser().parse_args(_cli_args("valid", "", tmp_path))
    assert distill.config_from_args(args).copy_splits == []


@pytest.mark.unit
def test_publish_refuses_copying_over_the_distilled_split_before_touching_the_output(tmp_path):
    """The API path (a DistillConfig built by hand, or a merge) is refused too, before the previous
    summary.json is removed: a finished output stays finished."""
    from types import SimpleNamespace

    from fairseq_kd.distill.publish import publish
    from fairseq_kd.errors import KDInputError

    (tmp_path / "summary.json").write_text("{}\n")
    cfg = SimpleNamespace(output_dir=str(tmp_path), split="valid", copy_splits=["test", "valid"])
    with pytest.raises(KDInputError, match="drop valid from --copy-splits"):
        publish(cfg, None, None, [], {}, None, None)
    assert (tmp_path / "summary.json").read_text() == "{}\n"


@pytest.mark.unit
@pytest.mark.parametrize("split,expected", [("valid", "test"), ("test", "valid"), ("train", "valid,test")])
def test_distill_script_leaves_the_distilled_split_out_of_its_default_copy_splits(tmp_path, split, expected):
    """scripts/distill.sh defaults to --copy-splits valid,test: with --split valid it must still run, and
    the command it runs must pass the tool's check."""
    import shlex
    import subprocess

    from fairseq_kd.cli import distill

    out = subprocess.run(["bash", str(helpers.REPO / "scripts" / "distill.sh"), "--teacher", "t.pt", "--data-bin",
                          "d", "--out-dir", str(tmp_path / "d"), "--split", split, "--device", "cpu",
                          "--dry-run", "true"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cmds = [shlex.split(line)[2:] for line in out.stdout.splitlines() if line.startswith("+ fairseq-kd-distill")]
    assert len(cmds) == 1
    args = distill.get_parser().parse_args(cmds[0])
    assert (args.split, args.copy_splits) == (split, expected)
    assert distill.config_from_args(args).copy_splits == expected.split(",")


def _distill_script(*args, **kwargs):
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", str(helpers.REPO / "scripts" / "distill.sh"), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600, **kwargs)


@pytest.mark.unit
def test_distill_script_rerun_on_a_finished_output_without_recorded_settings_reaches_the_tool(tmp_path):
    """A finished OUT (summary.json, bin/SPLIT.idx.done) used to be skipped whatever --beam / --teacher said:
    without settings recorded as these, the rerun goes to fairseq-kd-distill (one call: the shards are in
    OUT/shards, no worker decodes a part first), which checks its shards' settings."""
    out = tmp_path / "d"
    (out / "bin").mkdir(parents=True)
    (out / "summary.json").write_text("{}\n")
    (out / "bin" / "train.idx.done").touch()
    (out / ".distill_settings").write_text("fairseq-kd-distill --beam 5 (another run)\n")
    proc = _distill_script("--teacher", "t.pt", "--data-bin", "d", "--out-dir", out, "--beam", "4", "--device", "cpu",
                           "--nprocs", "2", "--dry-run", "true")
    assert proc.returncode == 0, proc.stderr
    assert "already distilled" not in proc.stdout and "checks them against its shards" in proc.stdout
    cmds = [line for line in proc.stdout.splitlines() if line.startswith("+ fairseq-kd-distill")]
    assert len(cmds) == 1 and "--beam 4" in cmds[0] and "--part" not in cmds[0] and "--merge" not in cmds[0]


@pytest.mark.integration
def test_distill_script_skips_only_an_identical_rerun_and_the_tool_refuses_a_changed_one(tiny_teacher, tmp_path):
    teacher, data_bin = tiny_teacher.checkpoint, tiny_teacher.data_bin  # read only here
    out = tmp_path / "distilled"
    base = ["--teacher", teacher, "--data-bin", data_bin, "--out-dir", out, "--split", "test", "--device", "cpu",
            "--beam", "3", "--threads", "1", "--stop-stage", "1", "--extra", "--no-progress"]
    first = _distill_script(*base)
    assert first.returncode == 0, first.stderr[-3000:]
    published = {p: p.read_bytes() for p in published_files(out)}
    assert out / ".distill_settings" in published  # recorded when the tool finished
    summary = (out / "summary.json").read_bytes()
    stamp = out / "bin" / "test.idx.done"

    again = _distill_script(*base, "--threads", "2")  # threads change nothing in the outputs: skipped
    assert again.returncode == 0 and "already distilled with these settings, skipping" in again.stdout, again.stderr
    assert (out / "summary.json").read_bytes() == summary and stamp.exists()

    changed = _distill_script(*base, "--beam", "2")  # used to print "already distilled, skipping"
    assert changed.returncode == 2, changed.stdout + changed.stderr[-3000:]
    assert "already distilled" not in changed.stdout
    assert "written with other settings (decoding differ)" in changed.stderr and "--overwrite" in changed.stderr
    assert {p: p.read_bytes() for p in published_files(out)} == published  # the finished corpus is untouched
    assert (out / "summary.json").read_bytes() == summary
    back = _distill_script(*base)  # still recorded as the corpus of the original settings: skipped
    assert back.returncode == 0 and "already distilled with these settings" in back.stdout, back.stderr[-3000:]

    (out / ".distill_settings").unlink()  # an output distilled before settings were recorded
    old = _distill_script(*base)  # reaches the tool: same shards, published again without decoding
    assert old.returncode == 0 and "checks them against its shards" in old.stdout, old.stderr[-3000:]
    assert {p: p.read_bytes() for p in published_files(out)} == published
    assert "already distilled with these settings" in _distill_script(*base).stdout


@pytest.mark.integration
def test_shards_record_the_resolved_dtype_and_device(tiny_teacher, tmp_path, monkeypatch):
    """``--ct2-compute-type auto`` is int8 on CPU and float16 on GPU: the shards record the resolved one,
    so a run resumed on the other device is refused (it recorded ``ctranslate2:auto`` for both and mixed
    int8 and float16 targets in one corpus). Parts compare it among themselves, not with the merger's."""
    pytest.importorskip("ctranslate2")
    from fairseq_kd.cli import distill
    from fairseq_kd.errors import KDInputError

    def on_gpu_machine(out, *extra):  # the same flags, no --cpu, on a machine that has a GPU
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        try:
            return distill.main(["--data", str(tiny_teacher.data_bin), "--split", "test", "--teacher",
                                 str(tiny_teacher.checkpoint), "-o", str(out), "--no-progress", "--shard-size", "16",
                                 "--max-tokens", "40", *MAXLEN, *ct2, *extra])
        finally:
            monkeypatch.undo()

    ct2 = ["--decoding", "greedy", "--backend", "ctranslate2", "--threads", "1"]
    out = tmp_path / "one"
    run_distill(tiny_teacher, out, *ct2, "--part", "0/3")  # stands for a run killed after its first shards
    assert json.loads((out / "parts" / "0-of-3" / "meta.json").read_text())["numerics"] == "int8 on cpu"
    with pytest.raises(KDInputError, match=r"numerics differ"):
        on_gpu_machine(out, "--part", "0/3")

    # parts decoded on CPU merge on a GPU machine; a part of other numerics is refused, naming both
    run_distill(tiny_teacher, out, *ct2, "--part", "1/3")
    run_distill(tiny_teacher, out, *ct2, "--part", "2/3")
    manifest = out / "parts" / "2-of-3" / "PART.json"
    good = manifest.read_text()
    manifest.write_text(good.replace('"int8 on cpu"', '"float16 on cuda"'))
    with pytest.raises(KDInputError, match=r"part 2/3 .*numerics: float16 on cuda here, int8 on cpu in part 0"):
        on_gpu_machine(out, "--merge")
    manifest.write_text(good)
    merged = on_gpu_machine(out, "--merge")
    assert merged["sentences"] == 40 and merged["merged_parts"] == 3
    assert json.loads((out / "shards" / "meta.json").read_text())["numerics"] == "int8 on cpu"
    single = run_distill(tiny_teacher, tmp_path / "single", *ct2)
    assert lines(out / "test.tgt") == lines(tmp_path / "single" / "test.tgt") and single["sentences"] == 40
