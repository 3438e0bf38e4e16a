"""On-the-fly noise in kd_translation: per-epoch reseeding, whole words, clean teacher input."""
import numpy as np
import pytest
import torch
from fairseq.data import Dictionary, LanguagePairDataset

from fairseq_kd import noise as N
from fairseq_kd.data.noisy_dataset import NoisyDatasetConfig, NoisyLanguagePairDataset, ids_to_words, word_starts

PIECES = ["▁the", "▁sun", "fl", "ower", "s", "▁are", "▁bright", "ly", "▁yellow", "▁a", "▁cat", "."]


def make_dataset(n=40, seed=0):
    d = Dictionary()
    for p in PIECES:
        d.add_symbol(p)
    rng = np.random.RandomState(seed)
    sents = []
    for _ in range(n):
        words = [["▁the"], ["▁sun", "fl", "ower", "s"], ["▁are"], ["▁bright", "ly"], ["▁yellow", "."], ["▁a"], ["▁cat"]]
        order = rng.permutation(len(words))[: rng.randint(2, len(words) + 1)]
        pieces = [p for i in order for p in words[i]]
        sents.append(torch.tensor([d.index(p) for p in pieces] + [d.eos()]))
    tgts = [s.clone() for s in sents]
    sizes = np.array([len(s) for s in sents])
    return LanguagePairDataset(sents, sizes, d, tgts, sizes.copy(), d, shuffle=False), d


def words_of(tokens, d):
    body = [t for t in tokens.tolist() if t != d.eos()]
    return ids_to_words(body, word_starts(d), None)


def test_items_are_whole_word_noise_deterministic_per_epoch():
    ds, d = make_dataset()
    cfg = NoisyDatasetConfig(N.NoiseConfig(0.3, 0.3, 0.5, 2), side="source", seed=5)
    noisy = NoisyLanguagePairDataset(ds, cfg)
    all_words = {w for i in range(len(ds)) for w in words_of(ds[i]["source"], d)}
    epoch1 = [noisy[i]["source"].tolist() for i in range(len(ds))]
    assert epoch1 == [noisy[i]["source"].tolist() for i in range(len(ds))]  # same epoch, same noise
    assert any(a != ds[i]["source"].tolist() for i, a in enumerate(epoch1))
    for i, toks in enumerate(epoch1):
        assert toks[-1] == d.eos() and len(toks) >= 2  # eos kept, never empty
        assert set(words_of(torch.tensor(toks), d)) <= all_words  # whole words only
        assert noisy[i]["target"].tolist() == ds[i]["target"].tolist()  # target untouched
    noisy.set_epoch(2)
    epoch2 = [noisy[i]["source"].tolist() for i in range(len(ds))]
    assert epoch2 != epoch1  # reseeded per epoch
    noisy.set_epoch(1)
    assert [noisy[i]["source"].tolist() for i in range(len(ds))] == epoch1


def test_item_noise_equals_the_pure_function():
    """The dataset applies exactly fairseq_kd.noise with the (seed, side, epoch, index) stream."""
    ds, d = make_dataset()
    cfg = NoisyDatasetConfig(N.NoiseConfig(0.2, 0.0, 0.3, 3), side="both", seed=2)
    noisy = NoisyLanguagePairDataset(ds, cfg)
    noisy.set_epoch(3)
    for i in (0, 7, 31):
        for side, key in (("source", "source"), ("target", "target")):
            words = words_of(ds[i][key], d)
            want, _ = N.noise_words(words, cfg.noise, N.line_rng(2, i, side, epoch=3))
            got = noisy[i][key].tolist()
            assert got == [t for w in want for t in w] + [d.eos()]


def test_batch_carries_clean_teacher_source_in_the_same_order():
    ds, d = make_dataset()
    noisy = NoisyLanguagePairDataset(ds, NoisyDatasetConfig(N.NoiseConfig(0.4, 0.0, 0.0), "source", "clean", 1))
    batch = noisy.collater([noisy[i] for i in range(16)])
    tin, sin = batch["teacher_net_input"], batch["net_input"]
    assert torch.equal(tin["prev_output_tokens"], sin["prev_output_tokens"])
    for row, idx in enumerate(batch["id"].tolist()):
        clean = ds[idx]["source"]
        assert tin["src_tokens"][row][-len(clean):].tolist() == clean.tolist()  # left-padded
        assert tin["src_lengths"][row] == len(clean)
        assert sin["src_lengths"][row] == len(noisy[idx]["source"])
    assert (sin["src_lengths"] < tin["src_lengths"]).any()
    # the teacher reads the noisy source when configured so: no separate input
    same = NoisyLanguagePairDataset(ds, NoisyDatasetConfig(N.NoiseConfig(0.4, 0.0, 0.0), "source", "noisy", 1))
    assert "teacher_net_input" not in same.collater([same[i] for i in range(4)])


def test_substitution_uses_corpus_words():
    ds, d = make_dataset()
    noisy = NoisyLanguagePairDataset(ds, NoisyDatasetConfig(N.NoiseConfig(0.0, 0.5, 0.0), "target", seed=1))
    vocab = set(noisy.samplers["target"].words)
    assert ("▁sun", ) not in vocab and tuple(d.index(p) for p in ["▁sun", "fl", "ower", "s"]) in vocab
    changed = 0
    for i in range(len(ds)):
        out = words_of(noisy[i]["target"], d)
        assert set(out) <= vocab
        changed += out != words_of(ds[i]["target"], d)
    assert changed > 0


@pytest.mark.integration
def test_kd_translation_trains_with_noise_and_clean_teacher(tiny_teacher, tmp_path):
    """Real fairseq training with noise: the task's noisy train set and clean valid/test sets (what the
    teacher reads is checked by test_teacher_reads_the_source_noise_teacher_input_names)."""
    from tests import helpers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest, and robust to a busy machine
    try:
        ckpt = helpers.train(tiny_teacher.data_bin, tmp_path / "student", task="kd_translation", max_epoch=2,
                             extra=["--criterion", "word_kd", "--teacher-path", str(tiny_teacher.checkpoint),
                                    "--noise-deletion", "0.2", "--noise-substitution", "0.1", "--noise-swap", "0.2",
                                    "--noise-side", "source", "--noise-teacher-input", "clean"])
    finally:
        torch.set_num_threads(threads)
    assert ckpt.exists()
    from fairseq import checkpoint_utils, tasks

    state = checkpoint_utils.load_checkpoint_to_cpu(str(ckpt))
    assert state["cfg"]["task"]["noise_deletion"] == 0.2
    task = tasks.setup_task(state["cfg"]["task"])
    task.load_dataset("train")
    task.load_dataset("valid")
    assert isinstance(task.datasets["train"], NoisyLanguagePairDataset)
    assert not isinstance(task.datasets["valid"], NoisyLanguagePairDataset)  # valid/test stay clean


@pytest.mark.integration
@pytest.mark.parametrize("teacher_input", ["noisy", "clean"])
def test_teacher_reads_the_source_noise_teacher_input_names(tiny_teacher, teacher_input, monkeypatch):
    """One training step of word_kd with source noise: every teacher forward reads the student's noisy
    source (``--noise-teacher-input noisy``) or the clean source of the same sentences (``clean``).
    The teacher's input is captured at its encoder (any encoder but the student's)."""
    from fairseq.models.transformer import TransformerEncoderBase

    from tests import helpers

    task, model, criterion = helpers.build_components(tiny_teacher.data_bin, extra=[
        "--criterion", "word_kd", "--teacher-path", str(tiny_teacher.checkpoint), "--noise-deletion", "0.3",
        "--noise-swap", "0.3", "--noise-side", "source", "--noise-teacher-input", teacher_input])
    seen, forward = [], TransformerEncoderBase.forward

    def recording(self, src_tokens, *args, **kwargs):
        if self is not model.encoder:
            seen.append(src_tokens.clone())
        return forward(self, src_tokens, *args, **kwargs)

    monkeypatch.setattr(TransformerEncoderBase, "forward", recording)
    sample = helpers.first_batch(task, n=16)
    clean_task, _, _ = helpers.build_components(tiny_teacher.data_bin, extra=[
        "--criterion", "word_kd", "--teacher-path", str(tiny_teacher.checkpoint)])
    clean_task.load_dataset("train")
    pad = task.source_dictionary.pad()
    student = [row[row.ne(pad)].tolist() for row in sample["net_input"]["src_tokens"]]
    clean = [clean_task.dataset("train")[i]["source"].tolist() for i in sample["id"].tolist()]
    assert student != clean  # the noise changed some sources: the two cases differ

    class Backward:  # the part of fairseq's optimizer train_step uses
        def backward(self, loss):
            loss.backward()

    task.train_step(sample, model, criterion, Backward(), update_num=0)
    assert seen, "the teacher never ran"
    for src_tokens in seen:
        got = [row[row.ne(pad)].tolist() for row in src_tokens]
        assert got == (student if teacher_input == "noisy" else clean)
