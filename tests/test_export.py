"""fairseq-kd-export: a CTranslate2 export computes the fairseq model's function and decodes to
fairseq's own outputs, token for token.

Truths: fairseq's SequenceGenerator on the same model (greedy on every activation variant
and a pruned model with a layer pruned to zero units, beam on a trained model), fairseq's
teacher-forced log-probabilities, and the refusals' named fixes. int8 exports: what quantization
guarantees (tests/int8_checks.py): each weight within half a quantization step of fairseq's, and
fairseq's model under CTranslate2's int8 arithmetic (fairseq_kd.quant) computes the same scores and
outputs wherever no int8 input sits on a rounding boundary.
"""
import json

import pytest
import torch

ct2 = pytest.importorskip("ctranslate2")

import fairseq_kd  # noqa: E402,F401  (registrations, checkpoint allowlist)
from fairseq_kd import quant  # noqa: E402
from tests import int8_checks  # noqa: E402

V = 30  # joint vocabulary of the random models (4 specials + w0..w25)
LAYERS = ["--encoder-layers", "2", "--decoder-layers", "2"]
VARIANTS = {
    "relu": ["--ffn-activation", "relu", "--share-all-embeddings"],
    "gelu": ["--ffn-activation", "gelu"],
    "glu": ["--ffn-activation", "glu", "--share-all-embeddings"],
    "swiglu_match": ["--ffn-activation", "swiglu", "--glu-match-params", "--share-all-embeddings"],
    "geglu_prenorm": ["--ffn-activation", "geglu", "--encoder-normalize-before", "--decoder-normalize-before"],
}


def _dictionary():
    from fairseq_kd.models.ladder import _VocabTask

    return _VocabTask(V).source_dictionary


def random_model(arch: str, overrides, seed: int = 0):
    """A randomly initialised model with sharpened output logits (gaps far above float noise)."""
    from fairseq_kd.models.ladder import build_model

    torch.manual_seed(seed)
    model = build_model(arch, V, LAYERS + list(overrides)).eval()
    if model.decoder.output_projection is not None:  # None under an adaptive softmax
        with torch.no_grad():
            model.decoder.output_projection.weight.mul_(4)
    return model


def random_sources(n: int = 24, seed: int = 1):
    d = _dictionary()
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 12, (n,), generator=g).tolist()
    return [torch.cat([torch.randint(4, V, (k,), generator=g), torch.tensor([d.eos()])]) for k in lengths]


def fairseq_outputs(model, dictionary, sources, decoding: str, beam: int = 1):
    """fairseq's SequenceGenerator, one batch, every sentence with its own length limit."""
    from fairseq.data import data_utils

    from fairseq_kd.distill import decoding as dec

    cfg = dec.DecodingConfig(decoding=decoding, beam=beam, max_len_a=1.2, max_len_b=10)
    src = data_utils.collate_tokens(sources, dictionary.pad(), dictionary.eos(), left_pad=True)
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([s.numel() for s in sources])}}
    hyps = dec.TeacherDecoder([model], dictionary, cfg)(sample)
    return [" ".join(dictionary[t] for t in h[0]["tokens"].tolist()[:-1]) for h in hyps]  # every token (Dictionary.string drops <s>)


def ct2_outputs(model_dir, dictionary, sources, beam: int = 1, compute_type: str = "float32", max_batch_tokens=40):
    from fairseq_kd.export.convert import source_tokens
    from fairseq_kd.export.decode import FairseqLikeDecoder, SearchConfig

    translator = ct2.Translator(str(model_dir), device="cpu", compute_type=compute_type, intra_threads=1)
    decoder = FairseqLikeDecoder(translator, SearchConfig(beam=beam, max_len_a=1.2, max_len_b=10),
                                 max_batch_tokens=max_batch_tokens)
    out = decoder.decode([source_tokens(dictionary, s) for s in sources])
    return [" ".join(h[0][0]) for h in out], decoder


def export(model, tmp_path, name, quantization="none"):
    from fairseq_kd.export.convert import export_model

    d = _dictionary()
    out = tmp_path / name
    meta = export_model(model, d, d, str(out), quantization=quantization)
    return out, meta


@pytest.mark.integration
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_float32_export_greedy_equals_fairseq_greedy(variant, tmp_path):
    model = random_model("transformer_glu_tiny", VARIANTS[variant])
    out, meta = export(model, tmp_path, variant)
    d, sources = _dictionary(), random_sources()
    expected = fairseq_outputs(model, d, sources, "greedy")
    got, _ = ct2_outputs(out, d, sources)
    assert got == expected
    assert meta["gated"] == (variant.split("_")[0] in ("glu", "swiglu", "geglu"))
    assert meta["pre_norm"] == variant.endswith("prenorm")
    # random models often run to their length limit: the mixed batches had to cut those
    limits = [int(1.2 * s.numel() + 10) for s in sources]
    assert any(len(h.split()) == lim for h, lim in zip(expected, limits))


@pytest.mark.integration
def test_stock_transformer_and_teacher_forced_log_probs(tmp_path):
    """The stock ``transformer`` (separate embeddings, post-norm) and the function itself: CTranslate2's
    scores of a forced target equal fairseq's log-probabilities."""
    from fairseq_kd.export.convert import source_tokens

    model = random_model("transformer", ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
                                         "--encoder-ffn-embed-dim", "48", "--decoder-ffn-embed-dim", "64",
                                         "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"])
    out, _ = export(model, tmp_path, "stock")
    d, sources = _dictionary(), random_sources(8)
    assert ct2_outputs(out, d, sources)[0] == fairseq_outputs(model, d, sources, "greedy")
    g = torch.Generator().manual_seed(3)
    translator = ct2.Translator(str(out), device="cpu", compute_type="float32", intra_threads=1)
    for src in sources[:4]:
        tgt = torch.randint(4, V, (9,), generator=g)
        prev = torch.cat([torch.tensor([d.eos()]), tgt])[None]
        with torch.no_grad():
            lp = model.get_normalized_probs(model(src[None], torch.tensor([src.numel()]), prev), log_probs=True)[0]
        expected = lp[torch.arange(9), tgt]
        got = translator.score_batch([source_tokens(d, src)], [[d[t] for t in tgt.tolist()]])[0].log_probs[:9]
        assert torch.allclose(torch.tensor(got), expected, atol=1e-4)


def _pruned_model():
    """An adaptive-capacity swiglu model with ~40% units shut, one decoder FFN entirely, pruned."""
    from fairseq_kd.models.ladder import build_model
    from fairseq_kd.models.pruning import prune_state_dict, widths_arg

    torch.manual_seed(0)
    base = ["--ffn-activation", "swiglu", "--share-all-embeddings"]
    gated = build_model("transformer_glu_tiny", V, LAYERS + base + ["--adaptive-capacity"]).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        gated.decoder.output_projection.weight.mul_(4)
        for name, theta in gated.state_dict().items():
            if name.endswith("fc1.gate.theta"):
                theta[torch.rand(theta.shape, generator=g) < 0.4] = -50.0
                theta[torch.rand(theta.shape, generator=g) < 0.2] = 0.0  # some half-open: folded into fc2
                if name.startswith("decoder.layers.1"):
                    theta.fill_(-50.0)  # a layer pruned to zero units
    state, widths, _ = prune_state_dict(gated.state_dict(), "swiglu")
    pruned = build_model("transformer_glu_tiny", V, LAYERS + base + [
        "--encoder-ffn-widths", widths_arg(widths["encoder"]), "--decoder-ffn-widths", widths_arg(widths["decoder"])])
    pruned.load_state_dict(state, strict=True)
    return gated, pruned.eval(), widths


@pytest.mark.integration
def test_pruned_widths_export_exactly_and_gated_checkpoint_is_refused(tmp_path):
    from fairseq_kd.errors import KDInputError
    from fairseq_kd.export.convert import export_model

    gated, pruned, widths = _pruned_model()
    assert widths["decoder"][1] == 0 and len(set(widths["encoder"] + widths["decoder"])) > 2
    out, meta = export(pruned, tmp_path, "pruned")
    assert meta["decoder_ffn_widths"] == widths["decoder"] and meta["zero_units_padded"] == 1
    d, sources = _dictionary(), random_sources()
    assert ct2_outputs(out, d, sources)[0] == fairseq_outputs(pruned, d, sources, "greedy")
    with pytest.raises(KDInputError, match="fairseq-kd-prune"):
        export_model(gated, d, d, str(tmp_path / "gated"))
    assert not (tmp_path / "gated").exists()


@pytest.mark.integration
def test_refusals_name_the_fix(tmp_path):
    from fairseq_kd.errors import KDInputError
    from fairseq_kd.export.convert import export_checkpoint, export_model

    d = _dictionary()
    for extra, what in ((["--cross-self-attention"], "cross-self-attention"),
                        (["--decoder-normalize-before"], "normalize-before"),
                        (["--adaptive-softmax-cutoff", "10"], "adaptive-softmax")):
        model = random_model("transformer_glu_tiny", ["--ffn-activation", "relu"] + extra)
        with pytest.raises(KDInputError, match=what):
            export_model(model, d, d, str(tmp_path / "x"))
    with pytest.raises(KDInputError, match="ensemble"):
        export_checkpoint(f"{tmp_path}/a.pt:{tmp_path}/b.pt", str(tmp_path / "e"))
    model = random_model("transformer_glu_tiny", ["--ffn-activation", "relu"])
    with pytest.raises(KDInputError, match="--quantization"):
        export_model(model, d, d, str(tmp_path / "q"), quantization="int4")
    export_model(model, d, d, str(tmp_path / "once"))
    with pytest.raises(KDInputError, match="--force"):
        export_model(model, d, d, str(tmp_path / "once"))


@pytest.mark.integration
def test_cli_export_of_trained_checkpoint_beam_equals_fairseq(tiny_teacher, tmp_path, capsys):
    """fairseq-kd-export on a real checkpoint: vocabularies, metadata; float32 beam 4 equals fairseq's beam
    (the tiny teacher's outputs end before their length limits, where both searches share their rules);
    int8: weights within half a quantization step, outputs and scores equal fairseq's under int8 simulation."""
    from fairseq.data import Dictionary

    from fairseq_kd.cli import export as export_cli
    from fairseq_kd.distill.data import SplitData
    from fairseq_kd.teacher import load_teacher

    spm = tmp_path / "spm.model"
    spm.write_bytes(b"not really a sentencepiece model, copied as is")
    out = tmp_path / "ct2"
    assert export_cli.cli_main([str(tiny_teacher.checkpoint), str(out), "--data", str(tiny_teacher.data_bin),
                                "--spm-model", str(spm)]) == 0
    meta = json.loads((out / "fairseq_kd_export.json").read_text())
    assert meta["quantization"] == "none" and meta["arch"] == "transformer"
    assert (out / "spm.model").read_bytes() == spm.read_bytes() and meta["spm"]["target"] == "spm.model"
    d = Dictionary.load(str(tiny_teacher.data_bin / "dict.tgt.txt"))
    vocab = json.loads((out / "shared_vocabulary.json").read_text())  # joined dictionary: one file
    assert vocab == ["<blank>" if s == "<pad>" else s for s in d.symbols]
    assert json.loads(capsys.readouterr().out)["output"] == str(out)

    data = SplitData(str(tiny_teacher.data_bin), "test", "src", "tgt")
    sources = [data.src_ds[i].long() for i in range(len(data))]
    model = load_teacher(str(tiny_teacher.checkpoint)).models[0]
    for beam in (1, 4):
        expected = fairseq_outputs(model, d, sources, "beam" if beam > 1 else "greedy", beam=beam)
        got, decoder = ct2_outputs(out, d, sources, beam=beam)
        assert got == expected, beam
    assert decoder.redone == 0

    q = tmp_path / "ct2_int8"
    assert export_cli.cli_main([str(tiny_teacher.checkpoint), str(q), "--data", str(tiny_teacher.data_bin),
                                "--quantization", "int8"]) == 0
    assert (q / "model.bin").stat().st_size < (out / "model.bin").stat().st_size
    # int8: every weight within half a quantization step of fairseq's (= the float32 export's, above)
    assert int8_checks.assert_weights_quantized(out / "model.bin", q / "model.bin") >= 10
    # and the function: CTranslate2's int8 arithmetic is fairseq's under its simulation (fairseq_kd.quant)
    got8, _ = ct2_outputs(q, d, sources, beam=4, compute_type="int8")
    with quant.int8_simulation(model):
        expected8 = fairseq_outputs(model, d, sources, "beam", beam=4)
    translator = ct2.Translator(str(q), device="cpu", compute_type="int8", intra_threads=1)
    records = int8_checks.compare_scores(translator, model, d, sources, expected8)
    # an int8 input within BOUNDARY of k + 1/2 has probability ~2 * BOUNDARY (a few thousand inputs per
    # sentence here): most sentences have none, and those decode exactly as the simulation does
    exact = int8_checks.assert_int8_arithmetic(records, min_exact=len(sources) // 4)
    assert [got8[i] for i in exact] == [expected8[i] for i in exact]
    assert export_cli.cli_main([str(tiny_teacher.checkpoint), str(q)]) == 2  # exists: refused, exit 2


@pytest.mark.integration
def test_evaluate_export_scores_what_fairseq_generate_scores(tiny_teacher, tmp_path):
    """The function the main job's table calls: float32 greedy BLEU equals fairseq-generate's greedy BLEU."""
    from fairseq_kd import scoring
    from fairseq_kd.distill.data import SplitData
    from fairseq_kd.export.evaluate import evaluate_export
    from fairseq_kd.teacher import load_teacher
    from tests import helpers

    ref = str(tiny_teacher.raw / "test.tgt")
    got = evaluate_export(str(tiny_teacher.checkpoint), str(tiny_teacher.data_bin), ref, beam=1, quantization="none")
    hyps = helpers.generate(tiny_teacher.data_bin, tiny_teacher.checkpoint, beam=1,
                            extra=["--max-len-a", "1.2", "--max-len-b", "10", "--task", "kd_translation"])
    expected = scoring.score_lines(hyps, [scoring.read_lines(ref)])["bleu"]["score"]
    assert got["sentences"] == 40 and got["bleu"] == round(expected, 2) and got["sent_per_s"] > 0
    q = evaluate_export(str(tiny_teacher.checkpoint), str(tiny_teacher.data_bin), ref, beam=1,
                        hyp_file=str(tmp_path / "int8.txt"))
    assert q["quantization"] == "int8" and q["export_dir"] != got["export_dir"]
    # int8 BLEU: sacrebleu's on the int8 outputs, which are fairseq's greedy outputs under CTranslate2's
    # int8 arithmetic (fairseq_kd.quant) on every sentence off rounding boundaries (tests/int8_checks.py)
    hyps8 = scoring.read_lines(str(tmp_path / "int8.txt"))
    assert q["bleu"] == round(scoring.score_lines(hyps8, [scoring.read_lines(ref)])["bleu"]["score"], 2)
    data = SplitData(str(tiny_teacher.data_bin), "test", "src", "tgt")
    sources = [data.src_ds[i].long() for i in range(len(data))]
    model = load_teacher(str(tiny_teacher.checkpoint)).models[0]
    with quant.int8_simulation(model):
        expected8 = fairseq_outputs(model, data.tgt_dict, sources, "greedy")
    translator = ct2.Translator(q["export_dir"], device="cpu", compute_type="int8", intra_threads=1)
    records = int8_checks.compare_scores(translator, model, data.tgt_dict, sources, expected8)
    exact = int8_checks.assert_int8_arithmetic(records, min_exact=len(sources) // 4)
    assert [hyps8[i] for i in exact] == [expected8[i] for i in exact]


@pytest.mark.integration
def test_study_int8_table_has_a_row_per_student(tiny_teacher, tmp_path):
    import shutil

    from fairseq_kd import study as S
    from fairseq_kd.export.evaluate import evaluate_export, study_int8_table

    study = tmp_path / "study"
    none, word, gone = (S.Cell(m, 0.0, "transformer", "-", 0.005, 1).slug() for m in ("none", "word", "seq"))
    for cell in (none, word):
        (study / "cells" / cell / "checkpoints").mkdir(parents=True)
        shutil.copyfile(tiny_teacher.checkpoint, study / "cells" / cell / "checkpoints" / "checkpoint_last.pt")
    row = "{m},0,transformer,-,0.005,1,{p},30,50,29,sig,10,100,{c},{s}\n"
    (study / "results.csv").write_text(
        "method,noise,arch,decoding,lr,seed,parameters,bleu,chrf,tok_bleu,signature,train_time,updates,cell,search\n"
        + row.format(m="none", p=21888, c=none, s="beam2") + row.format(m="none", p=21888, c=none, s="greedy")
        + row.format(m="word", p=21888, c=word, s="beam2") + row.format(m="seq", p=1, c=gone, s="beam2"))
    ref = str(tiny_teacher.raw / "test.tgt")
    table = study_int8_table(str(study), str(tiny_teacher.data_bin), ref, beam=2).splitlines()
    assert len(table) == 5 and table[2].startswith(f"| {none} | none | 21888 |")
    assert table[3].startswith(f"| {word} | word | 21888 |")
    assert table[4] == f"| {gone} | seq | 1 | n/a (no checkpoint_last.pt) | n/a |"  # said, not left out
    bleu = evaluate_export(str(study / "cells" / none / "checkpoints" / "checkpoint_last.pt"),
                           str(tiny_teacher.data_bin), ref, beam=2)["bleu"]
    assert f"| {bleu:.2f} |" in table[2]

    # a patience study decoded checkpoint_best.pt: the int8 row is that checkpoint's, not the last one's
    # (here "last" becomes a model with every weight zero, whose translations score far lower)
    state = torch.load(tiny_teacher.checkpoint, map_location="cpu", weights_only=False)
    state["model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}
    for cell in (none, word):
        ckpts = study / "cells" / cell / "checkpoints"
        shutil.copyfile(ckpts / "checkpoint_last.pt", ckpts / "checkpoint_best.pt")
        torch.save(state, ckpts / "checkpoint_last.pt")
    (study / "study.json").write_text(json.dumps({"patience": 3}))
    patient = study_int8_table(str(study), str(tiny_teacher.data_bin), ref, beam=2).splitlines()
    no_speed = lambda lines: [line.rsplit("|", 2)[0] for line in lines]  # noqa: E731  (sent/s is a timing)
    assert no_speed(patient) == no_speed(table)[:4] + [f"| {gone} | seq | 1 | n/a (no checkpoint_best.pt) "]

    # decoded with the study's own length limit (it hard-coded 1.2x+10): 0x+2 cuts every translation short
    (study / "study.json").write_text(json.dumps({"patience": 3, "max_len_a": 0, "max_len_b": 2}))
    short = study_int8_table(str(study), str(tiny_teacher.data_bin), ref, beam=2).splitlines()
    cut = evaluate_export(str(study / "cells" / none / "checkpoints" / "checkpoint_best.pt"),
                          str(tiny_teacher.data_bin), ref, beam=2, max_len_a=0, max_len_b=2)["bleu"]
    assert cut < bleu and f"| {cut:.2f} |" in short[2]
