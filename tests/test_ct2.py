"""CTranslate2 backend: reproduces the fairseq backend's greedy output (float32; int8: fairseq's under
CTranslate2's int8 arithmetic, fairseq_kd.quant), converts once,
refuses what it cannot convert with an error naming --backend fairseq."""
import os

import pytest
import torch

from tests.test_distill import lines, run_distill

ct2 = pytest.importorskip("ctranslate2")


@pytest.mark.integration
def test_ct2_greedy_equals_fairseq_greedy_and_converts_once(tiny_teacher, tmp_path, caplog):
    import logging

    import sacrebleu

    from fairseq_kd import quant
    from fairseq_kd.distill.ct2 import cache_dir_for
    from fairseq_kd.distill.data import SplitData
    from fairseq_kd.teacher import load_teacher, teacher_fingerprint
    from tests import int8_checks
    from tests.test_export import fairseq_outputs

    run_distill(tiny_teacher, tmp_path / "fs", "--decoding", "greedy")
    run_distill(tiny_teacher, tmp_path / "ct2", "--decoding", "greedy", "--backend", "ctranslate2",
                "--ct2-compute-type", "float32", "--threads", "2")
    assert lines(tmp_path / "ct2" / "test.tgt") == lines(tmp_path / "fs" / "test.tgt")
    teacher = load_teacher(str(tiny_teacher.checkpoint))
    cache = cache_dir_for(str(tiny_teacher.checkpoint), teacher_fingerprint([str(tiny_teacher.checkpoint)]),
                          teacher.src_dict, teacher.tgt_dict)
    model_bin = f"{cache}/model.bin"
    mtime = os.path.getmtime(model_bin)
    with caplog.at_level(logging.INFO, logger="fairseq_kd.distill.ct2"):
        summary = run_distill(tiny_teacher, tmp_path / "int8", "--decoding", "greedy", "--backend", "ctranslate2",
                              "--threads", "2")  # auto = int8 on CPU, from the same cached conversion
    assert os.path.getmtime(model_bin) == mtime
    assert any(r.getMessage().endswith("on cpu (int8)") for r in caplog.records)
    # int8 outputs: fairseq's greedy search on the teacher under CTranslate2's int8 arithmetic (fairseq_kd.quant)
    data = SplitData(str(tiny_teacher.data_bin), "test", "src", "tgt")
    sources = [data.src_ds[i].long() for i in range(len(data))]
    model = load_teacher(str(tiny_teacher.checkpoint)).models[0].eval()
    assert fairseq_outputs(model, data.tgt_dict, sources, "greedy") == lines(tmp_path / "fs" / "test.tgt")
    with quant.int8_simulation(model):
        expected8 = fairseq_outputs(model, data.tgt_dict, sources, "greedy")
    hyps8 = lines(tmp_path / "int8" / "test.tgt")
    translator = ct2.Translator(cache, device="cpu", compute_type="int8", intra_threads=1)
    records = int8_checks.compare_scores(translator, model, data.tgt_dict, sources, expected8)
    exact = int8_checks.assert_int8_arithmetic(records, min_exact=len(sources) // 4)  # off rounding boundaries
    assert [hyps8[i] for i in exact] == [expected8[i] for i in exact]
    # and its BLEU is sacrebleu's on those outputs against the gold targets
    refs = lines(tiny_teacher.raw / "test.tgt")
    assert summary["sentences"] == 40 and summary["bleu"] == round(sacrebleu.corpus_bleu(hyps8, [refs]).score, 2)


@pytest.mark.integration
def test_unconvertible_architecture_names_fairseq_backend(tiny_teacher, tmp_path):
    import fairseq_kd  # noqa: F401  (installs the allowlist: weights_only loading works)
    from fairseq_kd.errors import KDInputError

    state = torch.load(str(tiny_teacher.checkpoint), map_location="cpu", weights_only=True)
    state["cfg"]["model"].arch = "lstm"  # a model family CTranslate2's converter does not support
    (tmp_path / "t").mkdir()
    bad = tmp_path / "t" / "lstm_teacher.pt"
    torch.save(state, bad)
    from fairseq_kd.distill.ct2 import convert

    with pytest.raises(KDInputError, match="--backend fairseq"):
        convert(str(bad), str(tiny_teacher.data_bin), "src", "tgt", "0" * 64)
    ensemble = f"{tiny_teacher.checkpoint}:{tiny_teacher.checkpoint}"
    from fairseq_kd.cli import distill

    with pytest.raises(KDInputError, match="--backend fairseq"):
        distill.main(["--data", str(tiny_teacher.data_bin), "--split", "test", "--teacher", ensemble,
                      "-o", str(tmp_path / "e"), "--cpu", "--no-progress", "--backend", "ctranslate2"])


@pytest.mark.integration
def test_teacher_forcing_with_ct2_is_refused_before_anything_is_written(tiny_teacher, tmp_path):
    """A refused run leaves no shard metadata behind (which would block the fairseq backend in the same dir)."""
    from fairseq_kd.cli import distill
    from fairseq_kd.errors import KDInputError

    out = tmp_path / "tf"
    with pytest.raises(KDInputError, match="--backend fairseq"):
        distill.main(["--data", str(tiny_teacher.data_bin), "--split", "test", "--teacher", str(tiny_teacher.checkpoint),
                      "-o", str(out), "--cpu", "--no-progress", "--backend", "ctranslate2", "--decoding", "teacher_forcing"])
    assert not (out / "shards").exists()
    run_distill(tiny_teacher, out, "--decoding", "teacher_forcing")  # the same dir then works with fairseq


@pytest.mark.integration
@pytest.mark.parametrize("flags,names", [
    # fairseq draws N samples and keeps the best-scoring one; CTranslate2 drew one, silently
    (["--decoding", "sampling", "--beam", "3"], ["--beam 1", "--backend fairseq"]),
    # fairseq's beam/greedy search divides the logits by the temperature; CTranslate2 ignored it there
    (["--decoding", "beam", "--beam", "2", "--temperature", "0.5"], ["--temperature 1", "--backend fairseq"]),
    (["--decoding", "greedy", "--temperature", "2"], ["--temperature 1", "--backend fairseq"]),
])
def test_ct2_refuses_what_it_would_decode_unlike_fairseq_before_any_work(tiny_teacher, tmp_path, capsys, flags, names):
    from fairseq_kd.cli import distill

    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        distill.cli_main(["--data", str(tiny_teacher.data_bin), "--split", "test", "--teacher",
                          str(tiny_teacher.checkpoint), "-o", str(out), "--cpu", "--no-progress", "--backend",
                          "ctranslate2", *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fairseq-kd-distill: error: ") and all(n in err[-1] for n in names), err[-1]
    assert not out.exists()  # nothing written
    from fairseq_kd.distill.run import distill as run_distill_api  # the API refuses it too, before any shard
    from fairseq_kd.errors import KDInputError

    cfg = distill.config_from_args(distill.get_parser().parse_args(
        ["--data", str(tiny_teacher.data_bin), "--split", "test", "--teacher", str(tiny_teacher.checkpoint), "-o",
         str(out), "--cpu", "--no-progress", "--backend", "ctranslate2", *flags]))
    with pytest.raises(KDInputError, match="--backend fairseq"):
        run_distill_api(cfg)
    assert not out.exists()


@pytest.mark.integration
def test_ct2_sampling_one_sample_topk1_is_fairseq_greedy(tiny_teacher, tmp_path):
    """--beam 1 sampling (one draw) still runs on CTranslate2: top-1 sampling is greedy search."""
    run_distill(tiny_teacher, tmp_path / "fs", "--decoding", "greedy")
    run_distill(tiny_teacher, tmp_path / "ct", "--decoding", "sampling", "--beam", "1", "--sampling-topk", "1",
                "--temperature", "0.7", "--backend", "ctranslate2", "--ct2-compute-type", "float32", "--threads", "1")
    assert lines(tmp_path / "ct" / "test.tgt") == lines(tmp_path / "fs" / "test.tgt")


def test_glu_teacher_distils_through_ct2_mixed_batches_equal_alone(tiny_teacher, tmp_path):
    """A transformer_glu (swiglu, pre-norm) teacher goes through the project's converter. Greedy equals the
    fairseq backend; beam in mixed-length batches equals beam with every sentence in a batch of its own
    (the teacher is essentially untrained, so many sentences run into their own length limits)."""
    from tests import helpers

    ckpt = helpers.train(tiny_teacher.data_bin, tmp_path / "glu", max_epoch=1, lr=1e-7, max_tokens=2000, arch_args=[
        "--arch", "transformer_glu_tiny", "--ffn-activation", "swiglu", "--glu-match-params",
        "--encoder-normalize-before", "--decoder-normalize-before", "--share-all-embeddings"])
    glu = helpers.TinyTeacher(tiny_teacher.raw, tiny_teacher.data_bin, ckpt)
    fs = run_distill(glu, tmp_path / "fs", "--decoding", "greedy")
    ct = run_distill(glu, tmp_path / "ct", "--decoding", "greedy", "--backend", "ctranslate2",
                     "--ct2-compute-type", "float32", "--threads", "1")
    assert lines(tmp_path / "ct" / "test.tgt") == lines(tmp_path / "fs" / "test.tgt")
    assert fs["sentences"] == ct["sentences"] == 40
    limits = [int(1.2 * (len(s.split()) + 1) + 10) for s in lines(tmp_path / "ct" / "test.src")]
    hyps = [len(h.split()) for h in lines(tmp_path / "ct" / "test.tgt")]
    assert any(h == lim for h, lim in zip(hyps, limits))  # some outputs were cut at their own limit
    beam = ["--decoding", "beam", "--beam", "3", "--backend", "ctranslate2", "--ct2-compute-type", "float32",
            "--threads", "1"]
    run_distill(glu, tmp_path / "mixed", *beam)  # --max-tokens 40: batches of several lengths
    run_distill(glu, tmp_path / "alone", *beam, "--max-tokens", "1")  # one sentence per batch
    assert lines(tmp_path / "mixed" / "test.tgt") == lines(tmp_path / "alone" / "test.tgt")


@pytest.mark.unit
@pytest.mark.parametrize("decoding,beam,min_len,refused", [
    ("beam", 3, 4, True), ("beam", 3, 1, False), ("beam", 1, 4, False), ("greedy", 1, 4, False)])
def test_ct2_backend_refuses_a_min_len_it_would_rank_unlike_fairseq(decoding, beam, min_len, refused):
    """The API's DecodingConfig has min_len (the CLI has no --min-len): with a beam, CTranslate2 forbids EOS
    before its log-softmax, fairseq after it, so --backend ctranslate2 refuses it as fairseq-kd-translate does."""
    from types import SimpleNamespace

    from fairseq_kd.distill.ct2 import check_options
    from fairseq_kd.errors import KDInputError

    d = SimpleNamespace(decoding=decoding, beam=beam, min_len=min_len, nbest=1, temperature=1.0)
    cfg = SimpleNamespace(teacher_path="t.pt", decoding=d)
    if refused:
        with pytest.raises(KDInputError, match=f"--min-len {min_len} with --beam {beam}: .*--backend fairseq"):
            check_options(cfg)
    else:
        check_options(cfg)
