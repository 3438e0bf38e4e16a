"""Decoding through ``--task kd_translation`` stops every sentence at its own length limit.

fairseq's SequenceGenerator caps a whole batch at ``a * (padded source width) + b``, so with
``--task translation`` a sentence that runs into the limit (a looping model) gets an output that
depends on the sentences batched with it, i.e. on ``--max-tokens``. ``kd_translation`` gives every
sentence ``min(int(a * its source length + b), max_len - 1)`` (``distill.decoding.SentenceMaxLen``, as
the distillation backend does): fairseq-generate, the study's test decoding and ``--eval-bleu`` then
give each sentence the output it gets alone (``--batch-size 1``), which is also CTranslate2's.

The model is a tiny transformer trained for one epoch at lr 1e-7 (random): it never chooses EOS, so
every hypothesis runs into its limit, and the test split has 24 sources of 3 to 8 tokens.
"""
from pathlib import Path

import pytest

from tests import helpers

MAXLEN = ["--max-len-a", "1.2", "--max-len-b", "10"]
N_TEST = 24


@pytest.fixture(scope="module")
def looping(tmp_path_factory):
    root = tmp_path_factory.mktemp("looping")
    raw = helpers.make_synthetic_corpus(root / "raw", n_train=100, n_valid=20, n_test=N_TEST)
    data_bin = helpers.preprocess(raw, root / "bin")
    ckpt = helpers.train(data_bin, root / "model", max_epoch=1, lr=1e-7, max_tokens=2000)
    return helpers.TinyTeacher(raw=raw, data_bin=data_bin, checkpoint=ckpt)


def own_limits(tt) -> list:
    """Each test sentence's own limit: int(1.2 * (words + EOS) + 10)."""
    return [int(1.2 * (len(s.split()) + 1) + 10) for s in (tt.raw / "test.src").read_text().splitlines()]


_DECODED = {}  # a run the tests share is decoded once


def generate(tt, *extra, beam=5):
    key = (str(tt.checkpoint), extra, beam)
    if key not in _DECODED:
        _DECODED[key] = helpers.generate(tt.data_bin, tt.checkpoint, beam=beam, extra=[*MAXLEN, *extra])
    return list(_DECODED[key])


def assert_within_own_limits(hyps, limits):
    lengths = [len(h.split()) for h in hyps]
    assert all(n <= lim for n, lim in zip(lengths, limits)), list(zip(lengths, limits))
    hit = sum(n == lim for n, lim in zip(lengths, limits))
    assert hit >= len(hyps) // 2, f"only {hit} of {len(hyps)} hypotheses reached their own limit"
    assert len(set(limits)) >= 4  # and those limits differ: the batches mix lengths


@pytest.mark.integration
@pytest.mark.parametrize("beam", [5, 1], ids=["beam5", "greedy"])
def test_generate_gives_each_sentence_its_own_limit_whatever_the_batch(looping, beam):
    batched = generate(looping, "--task", "kd_translation", "--max-tokens", "40", beam=beam)
    alone = generate(looping, "--task", "kd_translation", "--batch-size", "1", beam=beam)
    assert len(batched) == N_TEST
    assert batched == alone
    assert_within_own_limits(batched, own_limits(looping))
    if beam == 1:  # the control: fairseq's translation task caps the padded batch, and that shows here
        assert generate(looping, "--max-tokens", "40", beam=beam) != alone


@pytest.mark.integration
def test_sampling_alignment_prefix_and_refusals(looping):
    from fairseq_kd.errors import KDInputError

    limits = own_limits(looping)
    sampled = generate(looping, "--task", "kd_translation", "--max-tokens", "40", "--sampling", "--beam", "2",
                       "--sampling-topk", "3", beam=2)
    assert len(sampled) == N_TEST
    assert_within_own_limits(sampled, limits)
    aligned = generate(looping, "--task", "kd_translation", "--max-tokens", "40", "--print-alignment")
    assert aligned == generate(looping, "--task", "kd_translation", "--batch-size", "1")  # decoded once (above)
    # a prefix longer than a sentence's own limit: alone, fairseq stops forcing it there; refused here
    with pytest.raises(ValueError, match="--prefix-size 2 is longer"):
        generate(looping, "--task", "kd_translation", "--prefix-size", "2", "--max-len-a", "0", "--max-len-b", "1")
    # fairseq's constrained search ranks constraint tokens ahead of the forced EOS: refused by name
    with pytest.raises(KDInputError, match="--constraints.*--task translation"):
        generate(looping, "--task", "kd_translation", "--constraints", "ordered")


@pytest.mark.integration
def test_study_test_decoding_does_not_depend_on_max_tokens(looping, tmp_path):
    """The study's own fairseq-generate command, run as the study runs it (in process), gives the same
    hypotheses with the whole test split in one batch as with batches of a few sentences."""
    from fairseq_kd import study as S
    from fairseq_kd.study.processes import run_inprocess

    def decode(max_tokens, gen_args=""):
        cfg = S.StudyConfig(data=str(looping.data_bin), out_dir=str(tmp_path / "o"), test_ref="r",
                            source_lang="src", target_lang="tgt", device="cpu", bpe="none",
                            max_tokens=max_tokens, gen_args=gen_args)
        cmd = S.generate_command(cfg, cfg.data, str(looping.checkpoint), beam=5)
        log = tmp_path / f"generate.{max_tokens}.{len(gen_args)}.log"
        run_inprocess(cmd, str(log))
        return S.parse_generate(log.read_text(encoding="utf-8"))

    one_batch = decode(4096)  # 24 sentences of 3 to 8 tokens: one batch
    assert one_batch == decode(24)
    assert_within_own_limits(one_batch, own_limits(looping))
    assert decode(4096, "--task translation") != one_batch  # the control: fairseq's task caps the padded batch
    cmd = S.generate_command(S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="de", target_lang="en"),
                             "d", "c.pt")
    assert cmd[cmd.index("--task") + 1] == "kd_translation"


@pytest.mark.integration
def test_ctranslate2_float32_greedy_equals_generate_on_a_looping_model(looping, tmp_path):
    ct2 = pytest.importorskip("ctranslate2")  # noqa: F841
    from fairseq_kd.distill.data import SplitData
    from fairseq_kd.export.convert import export_model
    from fairseq_kd.teacher import load_teacher
    from tests.test_export import ct2_outputs

    teacher = load_teacher(str(looping.checkpoint))
    model = teacher.models[0].eval()
    export_model(model, teacher.src_dict, teacher.tgt_dict, str(tmp_path / "ct2"))
    data = SplitData(str(looping.data_bin), "test", "src", "tgt")
    sources = [data.src_ds[i].long() for i in range(len(data))]
    ct2_hyps, _ = ct2_outputs(Path(tmp_path / "ct2"), teacher.tgt_dict, sources)  # batches of 40 tokens
    fairseq_hyps = generate(looping, "--task", "kd_translation", "--max-tokens", "4096", beam=1)  # one batch
    assert ct2_hyps == fairseq_hyps
    assert_within_own_limits(fairseq_hyps, own_limits(looping))


@pytest.mark.integration
def test_validation_bleu_decodes_each_sentence_under_its_own_limit(looping):
    """--eval-bleu builds its generator through the task (TranslationTask.build_model) and decodes each
    validation batch with ``task.inference_step``: the same per-sentence limit as fairseq-generate."""
    import json

    import torch

    from fairseq_kd.distill.decoding import SentenceMaxLen

    task, model, _ = helpers.build_components(looping.data_bin, extra=[
        "--eval-bleu", "--eval-bleu-args", json.dumps({"beam": 1, "max_len_a": 1.2, "max_len_b": 10}),
        "--eval-bleu-detok", "space"], seed=3)
    model.eval()
    generator = task.sequence_generator
    task.load_dataset("valid")
    ds = task.dataset("valid")
    order = sorted(range(len(ds)), key=lambda i: int(ds.src_sizes[i]))
    batch = ds.collater([ds[i] for i in order[:3] + order[-3:]])  # the shortest and longest sources together
    with torch.no_grad():
        got = [h[0]["tokens"].tolist() for h in task.inference_step(generator, [model], batch)]
        alone = [task.inference_step(generator, [model], ds.collater([ds[i]]))[0][0]["tokens"].tolist()
                 for i in batch["id"].tolist()]
    assert got == alone
    limits = [int(1.2 * int(ds.src_sizes[i]) + 10) for i in batch["id"].tolist()]
    assert [len(t) - 1 for t in got] == limits  # every one runs into its own limit (tokens without EOS)
    assert len(set(limits)) > 1
    assert isinstance(generator.search, SentenceMaxLen)
