"""fairseq-kd-translate: raw text -> sentencepiece -> CTranslate2 -> detokenized text, on stdin and files.

Truth: the same lines encoded with sentencepiece, decoded by fairseq's own SequenceGenerator
on the exported model and decoded back with sentencepiece.
"""
import io
import json
import random
import sys

import pytest
import torch

ct2 = pytest.importorskip("ctranslate2")

import fairseq_kd  # noqa: E402,F401

WORDS = "ein hund läuft über die wiese eine katze schläft auf dem sofa zwei kinder spielen im park".split()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A sentencepiece model, a random transformer_glu over its pieces, and its export."""
    import sentencepiece as spm
    from fairseq.data import Dictionary
    from fairseq.models import ARCH_MODEL_REGISTRY

    from fairseq_kd.export.convert import export_model
    from fairseq_kd.models.ladder import make_args

    root = tmp_path_factory.mktemp("translate")
    rng = random.Random(0)
    text = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) for _ in range(400)]
    (root / "corpus.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(root / "corpus.txt"), model_prefix=str(root / "spm"), vocab_size=40,
                                   character_coverage=1.0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(root / "spm.model"))
    d = Dictionary()
    for i in range(sp.get_piece_size()):
        if not sp.is_control(i) and not sp.is_unknown(i):
            d.add_symbol(sp.id_to_piece(i))

    class Task:
        source_dictionary = target_dictionary = d

    args = make_args("transformer_glu_tiny", ["--ffn-activation", "swiglu", "--share-all-embeddings",
                                              "--decoder-layers", "2"])
    torch.manual_seed(0)
    model = ARCH_MODEL_REGISTRY["transformer_glu_tiny"].build_model(args, Task()).eval()
    with torch.no_grad():
        model.decoder.output_projection.weight.mul_(4)
    export_model(model, d, d, str(root / "ct2"), spm_model=str(root / "spm.model"))
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))).capitalize() + "." for _ in range(30)]
    lines[7] = ""  # an empty line stays an empty line
    return root, sp, d, model, lines


def fairseq_reference(sp, d, model, lines, beam):
    from fairseq.data import data_utils

    from fairseq_kd.distill import decoding as dec

    keep = [i for i, line in enumerate(lines) if line.strip()]
    src = [d.encode_line(" ".join(sp.encode(lines[i], out_type=str)), add_if_not_exist=False).long() for i in keep]
    cfg = dec.DecodingConfig(decoding="beam" if beam > 1 else "greedy", beam=beam, max_len_a=1.2, max_len_b=10)
    sample = {"net_input": {"src_tokens": data_utils.collate_tokens(src, d.pad(), d.eos(), left_pad=True),
                            "src_lengths": torch.tensor([s.numel() for s in src])}}
    hyps = dec.TeacherDecoder([model], d, cfg)(sample)
    out = [""] * len(lines)
    for i, h in zip(keep, hyps):
        out[i] = sp.decode([d[t] for t in h[0]["tokens"].tolist()[:-1]])
    return out


@pytest.mark.integration
def test_translate_stdin_equals_fairseq_greedy(exported, monkeypatch, capsys):
    from fairseq_kd.cli import translate

    root, sp, d, model, lines = exported
    expected = fairseq_reference(sp, d, model, lines, beam=1)
    stdin = io.TextIOWrapper(io.BytesIO(("\n".join(lines) + "\n").encode("utf-8")), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert translate.cli_main([str(root / "ct2"), "--beam", "1", "--threads", "1", "--max-tokens", "30",
                               "--compute-type", "float32"]) == 0
    got = capsys.readouterr().out.split("\n")
    assert got[-1] == "" and got[:-1] == expected
    assert expected[7] == "" and all(expected[i] for i in range(len(lines)) if i != 7)


@pytest.mark.integration
def test_translate_file_beam_with_progress_and_errors(exported, tmp_path, capsys):
    from fairseq_kd.cli import translate

    root, sp, d, model, lines = exported
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert translate.cli_main([str(root / "ct2"), "-i", str(src), "-o", str(out), "--beam", "3", "--threads", "1",
                               "--chunk-lines", "11", "--max-tokens", "40", "--compute-type", "float32", "--summary"]) == 0
    err = capsys.readouterr().err
    assert "translate" in err and "sent" in err  # the progress bar
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["sentences"] == len(lines)
    got = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(got) == len(lines)
    # beam in mixed-length batches (chunks of 11 lines, 40-token batches): every line as translated alone
    translator = ct2.Translator(str(root / "ct2"), device="cpu", compute_type="float32", intra_threads=1)
    for line, hyp in zip(lines, got):
        if not line:
            assert hyp == ""
            continue
        pieces = sp.encode(line, out_type=str)
        alone = translator.translate_batch(
            [pieces], beam_size=3, max_decoding_length=int(1.2 * (len(pieces) + 1) + 10), return_end_token=True,
            suppress_sequences=[["<blank>"]], max_input_length=0)[0].hypotheses[0]
        assert hyp == sp.decode([t for t in alone if t != "</s>"])
    assert translate.cli_main([str(root / "ct2"), "-i", str(tmp_path / "missing.txt")]) == 2
    assert translate.cli_main([str(tmp_path), "-i", str(src)]) == 2  # not a model directory
    assert "fairseq-kd-export" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize("flag, printed", [("--summ", True), ("--summary", True), (None, False)])
def test_summary_follows_the_parsed_flag_even_abbreviated(exported, monkeypatch, capsys, flag, printed):
    """argparse takes --summ for --summary; the summary used to be printed only for the literal "--summary"."""
    from fairseq_kd.cli import translate

    root, _, _, _, lines = exported
    stdin = io.TextIOWrapper(io.BytesIO(("\n".join(lines[:3]) + "\n").encode("utf-8")), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    argv = [str(root / "ct2"), "--beam", "1", "--threads", "1", "--compute-type", "float32"] + ([flag] if flag else [])
    assert translate.cli_main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    if printed:
        assert json.loads(err[-1])["sentences"] == 3
    else:
        assert not any(line.startswith("{") for line in err)
