"""Online ``seq_kd``: memo on disk, same targets as fairseq-kd-distill, same training as offline data.

The decisive test trains two students for one epoch: (A) ``seq_kd`` with the online
teacher on a corpus whose gold targets are the distilled targets *reversed* (same
lengths, so fairseq forms the same batches, but different tokens), and (B) plain CE on
fairseq-kd-distill's offline data. They end with the same weights only if ``seq_kd``
really trains on exactly the offline targets.
"""
import json
from pathlib import Path

import pytest
import torch

from tests import helpers
from tests.test_distill import MAXLEN, lines, run_distill


N_SMALL = 120  # training sentences of the small corpus (keeps each training run to a few updates)


@pytest.fixture(scope="module")
def small(tiny_teacher, tmp_path_factory):
    """A 120-sentence train split (+ valid) binarized with the teacher's dictionary."""
    root = tmp_path_factory.mktemp("seq_kd_small")
    raw = root / "raw"
    for split, n in (("train", N_SMALL), ("valid", 40)):
        pairs = list(zip(lines(tiny_teacher.raw / f"{split}.src"), lines(tiny_teacher.raw / f"{split}.tgt")))[:n]
        helpers.write_parallel(raw, split, pairs)
    data_bin = helpers.preprocess(raw, root / "bin", splits=("train", "valid"),
                                  extra=["--srcdict", str(tiny_teacher.data_bin / "dict.src.txt")])
    return helpers.TinyTeacher(raw=raw, data_bin=data_bin, checkpoint=tiny_teacher.checkpoint)


def train_small(data_bin, save, extra, max_epoch=1):
    return helpers.train(data_bin, save, extra=list(extra), max_epoch=max_epoch,
                         max_tokens=300)


def memo_targets(save_dir: Path) -> dict:
    from fairseq_kd.distill.memo import TargetMemo

    folders = list((save_dir / "seq_kd_memo").iterdir())
    assert len(folders) == 1, folders
    return TargetMemo(str(folders[0])).targets


def seq_kd_args(tt, decoding="greedy", *extra):
    return ["--task", "kd_translation", "--teacher-path", str(tt.checkpoint), "--criterion", "seq_kd",
            "--seq-kd-decoding", decoding, "--seq-kd-max-len-a", "1.2", "--seq-kd-max-len-b", "10",
            "--seq-kd-memo-flush", "256", *extra]


# --- unit ---------------------------------------------------------------------------
@pytest.mark.unit
def test_memo_roundtrip_atomic_per_rank_segments_read_lazily(tmp_path):
    import numpy as np

    from fairseq_kd.distill.memo import TargetMemo

    m = TargetMemo(str(tmp_path), flush_every=2)
    m.put(5, [4, 5, 2])
    assert not list(tmp_path.glob("seg-*")) and m.get(5) == [4, 5, 2]  # buffered
    m.put(1, [6, 2])  # reaches flush_every: one segment
    m.put(9, [7, 2])
    assert [p.name for p in tmp_path.glob("seg-*")] == ["seg-r0-000000.npy"]
    other = TargetMemo(str(tmp_path), flush_every=1, rank=1)  # a second worker writes its own files
    other.put(3, [8, 8, 2])
    (tmp_path / ".seg-r0-000001.npy.x.tmp").write_bytes(b"\x93NUMPY")  # a write killed midway
    m.flush()
    assert sorted(p.name for p in tmp_path.glob("seg-*")) == ["seg-r0-000000.npy", "seg-r0-000001.npy",
                                                             "seg-r1-000000.npy"]
    again = TargetMemo(str(tmp_path))
    assert again.targets == {5: [4, 5, 2], 1: [6, 2], 9: [7, 2], 3: [8, 8, 2]}
    assert all(isinstance(s, np.memmap) for s in again.segments)  # mapped, read on demand
    assert 2 not in again and 9 in again and len(again) == 4
    again.put(2, [2])
    again.flush()  # numbering continues after this rank's last segment
    assert (tmp_path / "seg-r0-000002.npy").exists()


@pytest.mark.unit
def test_trim_left_pad():
    from fairseq_kd.distill.online import trim_left_pad

    src = torch.tensor([[1, 1, 7, 2], [1, 1, 8, 2]])
    assert trim_left_pad({"src_tokens": src}, pad=1)["src_tokens"].tolist() == [[7, 2], [8, 2]]


# --- integration ----------------------------------------------------------------------
@pytest.mark.integration
def test_memo_targets_equal_offline_distillation_and_survive_resume(small, tmp_path, monkeypatch):
    from fairseq.data import Dictionary, data_utils

    from fairseq_kd.distill import decoding

    save = tmp_path / "student"
    train_small(small.data_bin, save, seq_kd_args(small), max_epoch=1)
    memo = memo_targets(save)
    run_distill(small, tmp_path / "off", "--decoding", "greedy", split="train")
    d = Dictionary.load(str(tmp_path / "off" / "bin" / "dict.tgt.txt"))
    off = data_utils.load_indexed_dataset(str(tmp_path / "off" / "bin" / "train.src-tgt.tgt"), d, "mmap")
    assert sorted(memo) == list(range(len(off))) == list(range(N_SMALL))  # every sentence decoded once
    mismatched = [i for i in range(len(off)) if memo[i] != off[i].tolist()]
    assert mismatched == []

    # resume for a second epoch: every target comes from the memo, the teacher decodes nothing
    def no_decoding(*args, **kwargs):
        raise AssertionError("the teacher decoded a sentence that is in the memo")

    monkeypatch.setattr(decoding.TeacherDecoder, "__call__", no_decoding)
    train_small(small.data_bin, save, seq_kd_args(small), max_epoch=2)
    assert memo_targets(save) == memo


@pytest.mark.integration
def test_memo_of_two_shards_keeps_each_shards_targets(small, tiny_teacher, tmp_path):
    """fairseq's sharded --data a:b restarts sample indices at 0 in each shard: epoch 2 (shard b)
    must train on b's own teacher targets, not on a's memoized under the same indices."""
    from fairseq.data import Dictionary, data_utils

    from fairseq_kd.distill.memo import TargetMemo

    raw_b = tmp_path / "raw_b"
    pairs = list(zip(lines(tiny_teacher.raw / "train.src"), lines(tiny_teacher.raw / "train.tgt")))
    helpers.write_parallel(raw_b, "train", pairs[N_SMALL:2 * N_SMALL])  # other sentences than shard a
    bin_b = helpers.preprocess(raw_b, tmp_path / "bin_b", splits=("train",),
                               extra=["--srcdict", str(small.data_bin / "dict.src.txt")])
    save = tmp_path / "student"
    train_small(f"{small.data_bin}:{bin_b}", save, seq_kd_args(small), max_epoch=2)
    memos = [TargetMemo(str(f)).targets for f in (save / "seq_kd_memo").iterdir()]
    assert len(memos) == 2 and all(len(m) == N_SMALL for m in memos)  # one memo per shard content
    offline = []
    for name, data_bin in (("a", small.data_bin), ("b", bin_b)):
        tt = helpers.TinyTeacher(raw=None, data_bin=data_bin, checkpoint=small.checkpoint)
        run_distill(tt, tmp_path / f"off_{name}", "--decoding", "greedy", split="train")
        d = Dictionary.load(str(tmp_path / f"off_{name}" / "bin" / "dict.tgt.txt"))
        ds = data_utils.load_indexed_dataset(str(tmp_path / f"off_{name}" / "bin" / "train.src-tgt.tgt"), d, "mmap")
        offline.append({i: ds[i].tolist() for i in range(len(ds))})
    assert offline[0] != offline[1]
    assert sorted(memos, key=lambda m: m != offline[0]) == offline  # shard a's and shard b's own targets


@pytest.mark.integration
def test_seq_kd_trains_exactly_like_offline_distilled_data(small, tmp_path):
    from fairseq import checkpoint_utils

    off = tmp_path / "off"
    run_distill(small, off, "--decoding", "greedy", "--copy-splits", "valid", split="train")
    # corpus G: same sources, gold = distilled target reversed (same lengths, other tokens)
    raw = tmp_path / "raw"
    src, tgt = lines(off / "train.src"), lines(off / "train.tgt")
    helpers.write_parallel(raw, "train", [(s, " ".join(reversed(t.split()))) for s, t in zip(src, tgt)])
    helpers.write_parallel(raw, "valid", list(zip(lines(small.raw / "valid.src"), lines(small.raw / "valid.tgt"))))
    gold_bin = helpers.preprocess(raw, tmp_path / "gold_bin", splits=("train", "valid"),
                                  extra=["--srcdict", str(small.data_bin / "dict.src.txt")])
    assert any(" ".join(reversed(t.split())) != t for t in tgt)  # the two corpora really differ

    a = train_small(gold_bin, tmp_path / "A", seq_kd_args(small))
    b = train_small(off / "bin", tmp_path / "B", ["--criterion", "label_smoothed_cross_entropy"])
    state_a = checkpoint_utils.load_checkpoint_to_cpu(str(a))
    state_b = checkpoint_utils.load_checkpoint_to_cpu(str(b))
    assert state_a["optimizer_history"][-1]["num_updates"] == state_b["optimizer_history"][-1]["num_updates"] >= 3
    for name, pa in state_a["model"].items():
        torch.testing.assert_close(pa, state_b["model"][name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.integration
def test_gold_mix_one_gives_gold_and_teacher_forcing_online_matches_offline(small, tmp_path):
    tiny_teacher = small
    from fairseq.data import Dictionary, data_utils

    task, model, crit = helpers.build_components(
        tiny_teacher.data_bin, extra=seq_kd_args(tiny_teacher, "teacher_forcing", "--save-dir", str(tmp_path / "s")))
    batch = helpers.first_batch(task, "train", n=16)
    targets, _ = task.seq_targets.targets(batch)
    run_distill(tiny_teacher, tmp_path / "off", "--decoding", "teacher_forcing", split="train")
    d = Dictionary.load(str(tiny_teacher.data_bin / "dict.tgt.txt"))
    off = data_utils.load_indexed_dataset(str(tmp_path / "off" / "bin" / "train.src-tgt.tgt"), d, "mmap")
    for i, t in zip(batch["id"].tolist(), targets):
        assert t.tolist() == off[i].tolist(), i

    task, model, crit = helpers.build_components(
        tiny_teacher.data_bin, extra=seq_kd_args(tiny_teacher, "greedy", "--seq-kd-gold-mix", "1.0",
                                                 "--save-dir", str(tmp_path / "g")))
    model.train()
    new = task.seq_targets.distilled_sample(batch)
    assert torch.equal(new["target"], batch["target"])
    assert torch.equal(new["net_input"]["prev_output_tokens"], batch["net_input"]["prev_output_tokens"])
    assert new["seq_kd_gold"] == 16


@pytest.mark.integration
def test_online_sampling_top1_equals_greedy(small, tmp_path):
    """--seq-kd-decoding sampling reaches the decoder with its top-k: top-1 sampling of one
    sample is greedy search, sentence for sentence (a batch of mixed source lengths)."""
    targets = {}
    for name, extra in (("greedy", seq_kd_args(small, "greedy")),
                        ("sampling", seq_kd_args(small, "sampling", "--seq-kd-sampling-topk", "1",
                                                 "--seq-kd-beam", "1"))):
        task, model, crit = helpers.build_components(small.data_bin, extra=[*extra, "--save-dir", str(tmp_path / name)])
        assert task.seq_targets.cfg.decoding == name
        batch = helpers.first_batch(task, "train", n=16)
        assert batch["net_input"]["src_lengths"].unique().numel() > 1
        targets[name] = [t.tolist() for t in task.seq_targets.targets(batch)[0]]
    assert task.seq_targets.cfg.sampling_topk == 1
    assert targets["sampling"] == targets["greedy"]


@pytest.mark.integration
def test_memo_of_a_teacher_reading_noise_is_each_epochs_own(small, tmp_path):
    """``--noise-teacher-input noisy``: the student reads new noise every epoch, so the teacher's targets
    are the translations of that epoch's noisy source. fairseq loads unsharded data once, so the memo's key
    stayed at the first epoch: epochs 2 and 3 trained on epoch 1's targets, and a run resumed at epoch 2
    trained on other targets than one that ran straight through."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from fairseq_kd.distill import decoding
    from fairseq_kd.distill.memo import TargetMemo
    from fairseq_kd.distill.online import decoding_config_from_task, trim_left_pad
    from fairseq_kd.teacher import load_teacher

    noisy = ["--noise-substitution", "0.3", "--noise-side", "source", "--noise-teacher-input", "noisy"]
    args = seq_kd_args(small, "greedy", *noisy)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_small(small.data_bin, straight, args, max_epoch=3)
    train_small(small.data_bin, resumed, args, max_epoch=1)
    train_small(small.data_bin, resumed, args, max_epoch=3)

    def memos(save):
        return sorted((dict(sorted(TargetMemo(str(f)).targets.items())) for f in (save / "seq_kd_memo").iterdir()),
                      key=str)

    got = memos(straight)
    assert len(got) == 3 and all(len(m) == N_SMALL for m in got)  # one memo per epoch, every sentence
    assert memos(resumed) == got

    # the truth: the teacher's greedy translation of each epoch's noisy source, decoded here
    argv = [str(small.data_bin), "--user-dir", helpers.USER_DIR, "--task", "kd_translation", "-s", "src", "-t", "tgt",
            *helpers.TINY_ARCH_ARGS, "--cpu", "--seed", "1", *args[2:]]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    ds = task.dataset("train")
    teacher = load_teacher(str(small.checkpoint))
    decoder = decoding.TeacherDecoder(teacher.models, teacher.tgt_dict, decoding_config_from_task(task.cfg))
    expected = []
    for epoch in (1, 2, 3):
        ds.set_epoch(epoch)
        sample = ds.collater([ds[i] for i in range(len(ds))])
        hyps = decoder(sample, trim_left_pad(sample["net_input"], teacher.src_dict.pad()))
        expected.append(dict(sorted((int(i), h[0]["tokens"].tolist()) for i, h in zip(sample["id"], hyps))))
    assert expected[0] != expected[1] != expected[2]  # the noise moves, and the teacher's translations with it
    assert got == sorted(expected, key=str)


@pytest.mark.unit
def test_memo_key_holds_the_teachers_dtype(small):
    """A run resumed with another --teacher-dtype decodes other targets: another memo, not the old one's."""
    keys = []
    for dtype in ("fp32", "bf16"):
        task, _, _ = helpers.build_components(small.data_bin, seq_kd_args(small, "greedy", "--teacher-dtype", dtype))
        task.load_dataset("train")
        keys.append(task.memo_key_parts())
    assert keys[0][:2] == keys[1][:2] and keys[0] != keys[1]
    assert keys[0][2] == "teacher torch.float32 on cpu" and keys[1][2] == "teacher torch.bfloat16 on cpu"


@pytest.mark.unit
def test_online_targets_default_to_the_offline_tools_decoding(small):
    """``seq_kd`` without --seq-kd-* flags decodes as ``fairseq-kd-distill`` without flags (beam 5, length
    limit 1.2x+10): the docs' "online targets equal the offline tool's" holds for the defaults too (the
    online beam was 4)."""
    from fairseq_kd.cli import distill
    from fairseq_kd.distill.online import decoding_config_from_task

    task, _, _ = helpers.build_components(small.data_bin, ["--task", "kd_translation", "--teacher-path",
                                                            str(small.checkpoint), "--criterion", "seq_kd"])
    args = distill.get_parser().parse_args(["--data", "d", "--teacher", "t.pt", "-o", "o"])
    offline = distill.config_from_args(args).decoding
    assert decoding_config_from_task(task.cfg).signature() == offline.signature()
