"""The study's int8 table decodes as the study decoded its rows: the beam of study.json and the
decoding flags of its ``gen_args`` (``export.decode.search_flags``), or a refusal naming the flag.

Truths: fairseq-generate's own outputs under the same flags, sentence by sentence, on a model whose
outputs the flags change (the tiny copy teacher with its weights perturbed: it ends its sentences
at different lengths under another length penalty, none at its length limit).
"""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fairseq_kd.errors import KDInputError
from fairseq_kd.export.decode import NO_LENGTH_PENALTY, SearchConfig, search_flags
from fairseq_kd.export.evaluate import search_beam

WHERE = "S/study.json gen_args"


# --- search_flags: fairseq-generate flags -> SearchConfig fields (pure) ---

@pytest.mark.parametrize("gen_args,beam,expected", [
    ("", 5, {}),
    ("--lenpen 2.0", 5, {"lenpen": 2.0}),
    ("--lenpen=0.6", 5, {"lenpen": 0.6}),
    ("--lenpen -0.5", 5, {"lenpen": -0.5}),  # a negative value is a value, as argparse reads it
    ("--lenpen 2 --lenpen 1.5", 5, {"lenpen": 1.5}),  # the last one wins, as in argparse
    ("--unnormalized", 5, {"lenpen": 0.0}),
    ("--lenpen 2 --unnormalized", 5, {"lenpen": 0.0}),  # fairseq divides by nothing, whatever --lenpen
    ("--min-len 1", 5, {"min_len": 1}),
    ("--min-len 0", 5, {"min_len": 0}),
    ("--min-len 4", 1, {"min_len": 4}),  # greedy: CTranslate2's renormalised scores keep the argmax
    ("--min-len=4 --lenpen 2", 1, {"min_len": 4, "lenpen": 2.0}),
    # batching, hardware, logging: no hypothesis changes
    ("--batch-size 64 --max-tokens=900 --cpu --fp16 --quiet --seed 3 --num-workers 0 --sacrebleu "
     "--scoring sacrebleu --log-format simple --no-progress-bar", 5, {}),
])
def test_search_flags_translates_what_ctranslate2_reproduces(gen_args, beam, expected):
    assert search_flags(gen_args, beam, WHERE) == expected


@pytest.mark.parametrize("gen_args,named", [
    ("--unkpen 1", "--unkpen"),
    ("--lenpen 2 --no-repeat-ngram-size 3", "--no-repeat-ngram-size"),
    ("--sampling", "--sampling"),
    ("--sampling-topk 10", "--sampling-topk"),
    ("--temperature 0.5", "--temperature"),
    ("--diverse-beam-groups 2", "--diverse-beam-groups"),
    ("--diversity-rate 0.5", "--diversity-rate"),
    ("--match-source-len", "--match-source-len"),
    ("--prefix-size 1", "--prefix-size"),
    ("--replace-unk", "--replace-unk"),
    ("--beam 4", "--beam"),  # the study owns it (and refuses it in --gen-args): not taken from here either
    ("--max-len-b 50", "--max-len-b"),
    ("--skip-invalid-size-inputs-valid-test", "--skip-invalid-size-inputs-valid-test"),  # drops sentences
    ("--lenp 2", "--lenp"),  # fairseq's parser takes no abbreviation
    ("--min-len 3", "--min-len 3"),  # beam 5: EOS forbidden before CTranslate2's log-softmax ranks otherwise
    ("2.0", "'2.0'"),
    ("--lenpen", "--lenpen has no value"),
    ("--lenpen --cpu", "--lenpen has no value"),
    ("--lenpen two", "--lenpen 'two'"),
    ("--lenpen nan", "--lenpen nan"),
    ("--min-len 1.5", "--min-len '1.5'"),
    ("--min-len -1", "--min-len -1"),
    ("--cpu=yes", "--cpu takes no value"),
    ("--lenpen '2", "cannot be read"),
])
def test_search_flags_refuses_the_rest_naming_flag_and_source(gen_args, named):
    with pytest.raises(KDInputError) as err:
        search_flags(gen_args, 5, WHERE)
    assert WHERE in str(err.value) and named in str(err.value), str(err.value)


def test_lenpen_zero_is_a_length_penalty_that_keeps_fairseqs_stopping_rule():
    """fairseq's --lenpen 0 divides by len ** 0; CTranslate2 at exactly 0 stops a sentence's beam search when
    its best hypothesis ends (fairseq: when ``beam`` have ended). NO_LENGTH_PENALTY is not 0, and divides by 1.0
    exactly in float32 at every length."""
    opts = SearchConfig(beam=4, lenpen=0.0).options(20)
    assert opts["length_penalty"] == NO_LENGTH_PENALTY != 0
    lengths = np.arange(1, 4097, dtype=np.float32)
    assert (np.power(lengths, np.float32(NO_LENGTH_PENALTY)) == np.float32(1)).all()
    assert SearchConfig(beam=4, lenpen=2.0).options(20)["length_penalty"] == 2.0


# --- the study's table ---

def fake_study(root, checkpoint, settings, searches=("beam5",)):
    """A study dir with one student cell (``checkpoint`` as its decoded checkpoint) and its rows."""
    from fairseq_kd import study as S

    study = root / "study"
    cell = S.Cell("none", 0.0, "transformer", "-", 0.005, 1).slug()
    (study / "cells" / cell / "checkpoints").mkdir(parents=True)
    shutil.copyfile(checkpoint, study / "cells" / cell / "checkpoints" / "checkpoint_last.pt")
    header = ("method,noise,arch,decoding,lr,seed,parameters,bleu,chrf,tok_bleu,signature,train_time,updates,cell,"
              "search\n")
    rows = "".join(f"none,0,transformer,-,0.005,1,21888,30,50,29,sig,10,100,{cell},{s}\n" for s in searches)
    (study / "results.csv").write_text(header + rows)
    (study / "study.json").write_text(json.dumps(settings))
    return study, study / "cells" / cell / "checkpoints" / "checkpoint_last.pt"


@pytest.mark.parametrize("settings,searches,beam,expected", [
    ({"beam": 5}, ("beam5",), None, 5),  # the study's
    ({"beam": 5}, ("beam5",), 5, 5),  # main.sh passes 5
    ({"beam": 5}, ("beam5", "greedy"), 1, 1),  # one of its rows' searches
    ({"beam": 5}, ("greedy",), None, 5),  # greedy rows only: study.json's beam (the header says which)
    ({}, ("beam4", "greedy"), None, 4),  # no beam recorded: its rows' widest
    ({}, (), 3, 3),  # nothing recorded: the caller's
])
def test_study_decoding_takes_the_studys_beam(tmp_path, settings, searches, beam, expected):
    from fairseq_kd.export.evaluate import study_decoding

    study = tmp_path / "s"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({**settings, "gen_args": "--lenpen 2.0", "max_len_b": 7}))
    rows = [{"search": s} for s in searches]
    got = study_decoding(str(study), beam, rows)
    assert got["beam"] == expected and got["lenpen"] == 2.0 and got["max_len_b"] == 7 and got["min_len"] == 1


def test_study_decoding_refuses_a_beam_the_study_never_used(tmp_path):
    from fairseq_kd.export.evaluate import study_decoding

    study = tmp_path / "s"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({"beam": 5}))
    with pytest.raises(KDInputError) as err:
        study_decoding(str(study), 4, [{"search": "beam5"}, {"search": "greedy"}])
    msg = str(err.value)
    assert msg.startswith("beam 4:") and "study.json: beam 5" in msg and "beam5, greedy" in msg and "1 or 5" in msg
    (study / "study.json").write_text(json.dumps({"beam": "5"}))
    with pytest.raises(KDInputError, match="is not a positive integer"):
        study_decoding(str(study), None, [])


def perturbed(checkpoint, out, scale: float, seed: int):
    """``checkpoint`` with N(0, scale^2) noise on every weight: a model less sure of where its sentences end."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    g = torch.Generator().manual_seed(seed)
    state["model"] = {k: v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                      for k, v in state["model"].items()}
    torch.save(state, out)
    return out


def table_path_outputs(monkeypatch, tmp_path, study, data_bin, ref, beam=None):
    """The int8 table run with its decoding unchanged but its export float32: (table, outputs, its keywords)."""
    import fairseq_kd.export.evaluate as evaluate
    from fairseq_kd import scoring

    real, seen = evaluate.evaluate_export, []

    def float32(ckpt, data, reference, **kw):
        seen.append(kw)
        return real(ckpt, data, reference, **{**kw, "quantization": "none", "hyp_file": str(tmp_path / "f32.txt")})

    monkeypatch.setattr(evaluate, "evaluate_export", float32)
    table = evaluate.study_int8_table(str(study), str(data_bin), ref, beam)
    monkeypatch.setattr(evaluate, "evaluate_export", real)
    return table, scoring.read_lines(str(tmp_path / "f32.txt")), seen[0]


LIMITS = ["--max-len-a", "1.2", "--max-len-b", "10"]
# (noise scale, seed) tried in turn (the tiny teacher differs with torch's thread count): small enough that
# the model stays sure <pad> is no token (CTranslate2 renormalises around it: export/decode.py)
PERTURBATIONS = [(0.05, 2), (0.03, 1), (0.08, 1), (0.05, 1), (0.1, 2), (0.04, 3), (0.06, 4)]


def pick_student(tiny_teacher, tmp_path, beam: int, gen_args: str):
    """A perturbed teacher on which ``gen_args`` changes fairseq-generate's outputs (2+ sentences) and, for a
    beam search, no output reaches its length limit with or without it (there CTranslate2's beam search is
    not fairseq's: export/decode.py), with fairseq-generate's outputs under ``gen_args``: not vacuous."""
    from fairseq_kd.export.evaluate import split_sources
    from tests import helpers

    limits = [int(1.2 * (len(s) + 1) + 10) for s in split_sources(str(tiny_teacher.data_bin), "test")]
    # greedy search cut at its limit is fairseq's: only a beam search must end its sentences before it
    short = lambda hyps: beam == 1 or all(len(h.split()) < lim for h, lim in zip(hyps, limits))  # noqa: E731
    for scale, seed in PERTURBATIONS:
        ckpt = perturbed(tiny_teacher.checkpoint, tmp_path / f"student-{scale}-{seed}.pt", scale, seed)
        expected = helpers.generate(tiny_teacher.data_bin, ckpt, beam=beam, extra=LIMITS + gen_args.split())
        if not short(expected):
            continue
        plain = helpers.generate(tiny_teacher.data_bin, ckpt, beam=beam, extra=LIMITS)
        if short(plain) and sum(a != b for a, b in zip(expected, plain)) >= 2:
            return ckpt, expected
    pytest.fail(f"no perturbation of the tiny teacher on which {gen_args} changes beam {beam}'s outputs "
                f"without reaching a length limit: extend PERTURBATIONS")


@pytest.mark.integration
@pytest.mark.parametrize("gen_args,searches,beam,label", [
    ("--lenpen 2.0", ("beam5",), None, "beam 5, lenpen 2"),
    ("--unnormalized", ("beam4",), None, "beam 4, lenpen 0"),
    # the greedy rows of a beam-5 study, their --min-len: CTranslate2's min length is fairseq's for greedy search
    ("--min-len 6", ("beam5", "greedy"), 1, "beam 1, min-len 6"),
])
def test_table_decodes_with_the_studys_gen_args_as_fairseq_generate_does(tiny_teacher, tmp_path, monkeypatch,
                                                                         gen_args, searches, beam, label):
    """The table's decoding, float32: fairseq-generate's outputs under the study's gen_args, sentence by
    sentence (before, it decoded at lenpen 1 and min-len 1; and at length penalty 0 CTranslate2 stopped a
    beam search when its best hypothesis ended, fairseq when ``beam`` had)."""
    study_beam = max(search_beam(s) for s in searches)
    ckpt, expected = pick_student(tiny_teacher, tmp_path, beam or study_beam, gen_args)
    study, _ = fake_study(tmp_path, ckpt, {"beam": study_beam, "gen_args": gen_args, "max_len_a": 1.2,
                                           "max_len_b": 10}, searches=searches)
    ref = str(tiny_teacher.raw / "test.tgt")
    table, got, kw = table_path_outputs(monkeypatch, tmp_path, study, tiny_teacher.data_bin, ref, beam)
    assert kw["beam"] == (beam or study_beam) and kw["quantization"] == "int8"
    assert got == expected  # sentence by sentence
    assert f"({label})" in table.splitlines()[0]


@pytest.mark.integration
def test_int8_row_is_decoded_with_the_studys_lenpen(tiny_teacher, tmp_path):
    """The table's own int8 row: the int8 export decoded at the study's --lenpen, not at lenpen 1."""
    from fairseq_kd.export.evaluate import evaluate_export, study_int8_table

    ckpt, _ = pick_student(tiny_teacher, tmp_path, 5, "--lenpen 2.0")
    study, cell_ckpt = fake_study(tmp_path, ckpt, {"beam": 5, "gen_args": "--lenpen 2.0"})
    ref = str(tiny_teacher.raw / "test.tgt")
    row = study_int8_table(str(study), str(tiny_teacher.data_bin), ref).splitlines()[2]
    hyps = {}
    for lenpen in (2.0, 1.0):
        hyps[lenpen] = tmp_path / f"int8-{lenpen}.txt"
        r = evaluate_export(str(cell_ckpt), str(tiny_teacher.data_bin), ref, beam=5, lenpen=lenpen,
                            hyp_file=str(hyps[lenpen]))
        if lenpen == 2.0:
            assert f"| {r['bleu']:.2f} |" in row
    assert hyps[2.0].read_text() != hyps[1.0].read_text()  # the lenpen changed the int8 outputs here


@pytest.mark.integration
def test_table_refuses_a_gen_args_flag_before_any_export(tiny_teacher, tmp_path):
    from fairseq_kd.export.evaluate import study_int8_table

    study, cell_ckpt = fake_study(tmp_path, tiny_teacher.checkpoint,
                                  {"beam": 5, "gen_args": "--lenpen 2.0 --no-repeat-ngram-size 3"})
    ref = str(tiny_teacher.raw / "test.tgt")
    with pytest.raises(KDInputError) as err:
        study_int8_table(str(study), str(tiny_teacher.data_bin), ref)
    assert "--no-repeat-ngram-size" in str(err.value) and str(study / "study.json") in str(err.value)
    assert not (cell_ckpt.parent / "ct2").exists()  # nothing exported
    # the main job's command: one line naming the flag, exit 2
    proc = subprocess.run([sys.executable, "-m", "fairseq_kd.export.evaluate", str(study),
                           str(tiny_teacher.data_bin), ref, "5", "1"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert "--no-repeat-ngram-size" in last and "study.json gen_args" in last and "Traceback" not in proc.stderr
    assert not (cell_ckpt.parent / "ct2").exists()


def test_translate_refuses_min_len_with_a_beam_before_reading_anything(tmp_path, capsys):
    """fairseq-kd-translate shares the decoder: --min-len above 1 is fairseq's for greedy search only."""
    from fairseq_kd.cli import translate

    missing = str(tmp_path / "no-model")
    assert translate.cli_main([missing, "--beam", "5", "--min-len", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--min-len 3 with --beam 5" in err and "pass --beam 1 or --min-len 1" in err
    for ok in (["--beam", "1", "--min-len", "3"], ["--beam", "5", "--min-len", "1"]):
        assert translate.cli_main([missing, *ok]) == 2  # past that check: the missing model is what is refused
        assert "--min-len" not in capsys.readouterr().err
