"""scripts/train_student.sh takes its methods from the study's METHOD_SPECS (one mapping): dry runs."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_kd.study.config import METHOD_SPECS

REPO = Path(__file__).resolve().parents[1]


def dry_run(tmp_path, method, *extra):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", str(REPO / "scripts" / "train_student.sh"), "--kd", method, "--data-bin", "d",
                           "--exp-dir", str(tmp_path / method), "--device", "cpu", "--stage", "2", "--stop-stage", "2",
                           "--dry-run", "true", *extra], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("method", ["none", "hybrid", "hybrid_online"])
def test_the_scripts_training_command_is_the_methods_spec(tmp_path, method):
    spec = METHOD_SPECS[method]
    out = dry_run(tmp_path, method, "--teacher", "t.pt")
    assert out.returncode == 0, out.stderr[-2000:]
    train = next(line for line in out.stdout.splitlines() if line.startswith("+ fairseq-train")).split()
    assert train[train.index("--criterion") + 1] == spec["criterion"]
    assert train[train.index("--task") + 1] == ("kd_translation" if spec["teacher"] else "translation")
    assert (train[2] == "d") == (spec["data"] == "corpus")  # else the distilled corpus of stage 1
    flags = spec.get("flags", [])
    assert any(train[i:i + len(flags)] == flags for i in range(len(train))), train


def test_unknown_method_is_refused(tmp_path):
    out = dry_run(tmp_path, "hybrid-online")
    assert out.returncode == 2 and "hybrid_online" in out.stderr and "Traceback" not in out.stderr


def train_command(out):
    assert out.returncode == 0, out.stderr[-2000:]
    return next(line for line in out.stdout.splitlines() if line.startswith("+ fairseq-train")).split()


@pytest.mark.parametrize("method", ["hybrid", "hybrid_online"])
def test_hybrid_gate_defaults_to_the_criterions_fixed_and_learned_is_a_choice(tmp_path, method):
    """fairseq-kd-study's hybrid (and hybrid_kd's default) is the fixed gate; the script used to pass learned."""
    train = train_command(dry_run(tmp_path, method, "--teacher", "t.pt"))
    assert train[train.index("--hybrid-gate") + 1] == "fixed"
    train = train_command(dry_run(tmp_path, method, "--teacher", "t.pt", "--hybrid-gate", "learned"))
    assert train[train.index("--hybrid-gate") + 1] == "learned"


@pytest.mark.parametrize("method", ["seq_tnoisy", "word_tnoisy"])
def test_tnoisy_methods_are_refused_naming_the_study(tmp_path, method):
    """train_student.sh adds no source noise: seq_tnoisy silently trained plain seq."""
    out = dry_run(tmp_path, method, "--teacher", "t.pt", "--stage", "1")
    assert out.returncode == 2, out.stdout[-2000:]
    assert "fairseq-kd-study" in out.stderr and method in out.stderr and "Traceback" not in out.stderr
    assert "+ " not in out.stdout  # nothing would have run


def test_students_are_decoded_with_the_teachers_length_limits(tmp_path):
    """Stage 3 used fairseq-generate's default max length (200 tokens, no -a/-b) while the recipes' teacher is
    decoded with --max-len-a 1.2 --max-len-b 10."""
    recipe = (REPO / "scripts" / "recipes" / "common.sh").read_text()
    teacher = {k: re.search(rf"^{k}=(\S+)", recipe, re.M).group(1) for k in ("max_len_a", "max_len_b")}
    assert teacher == {"max_len_a": "1.2", "max_len_b": "10"}
    evaluate = recipe.split("\nevaluate() {", 1)[1].split("\n}", 1)[0]
    assert '--max-len-a "${max_len_a}"' in evaluate and '--max-len-b "${max_len_b}"' in evaluate
    out = dry_run(tmp_path, "none", "--stage", "3", "--stop-stage", "3")
    gen = decode_command(out)
    assert flag(gen, "--max-len-a") == teacher["max_len_a"] and flag(gen, "--max-len-b") == teacher["max_len_b"]
    out = dry_run(tmp_path, "none", "--stage", "3", "--stop-stage", "3", "--gen-max-len-a", "2", "--gen-max-len-b", "5")
    gen = decode_command(out)
    assert flag(gen, "--max-len-a") == "2" and flag(gen, "--max-len-b") == "5"


def command(out, tool):
    """The dry run's first printed command line of ``tool``, as words."""
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return next(shlex.split(line[2:]) for line in out.stdout.splitlines() if line.startswith(f"+ {tool} "))


def flag(cmd, name):
    return cmd[cmd.index(name) + 1] if name in cmd else None


def decode_command(out):
    """Stage 3's scripts/decode.sh command line of a dry run, as words (from decode.sh on)."""
    cmd = command(out, "bash")
    assert cmd[1] == str(REPO / "scripts" / "decode.sh"), cmd
    return cmd[1:]


def test_sampling_draws_one_sample_unless_beam_asks_for_the_best_of_n(tmp_path):
    """fairseq-kd-study's (and results.md's) "sampling" is one sample per sentence (beam 1); both scripts
    passed beam 5, for fairseq sampling the best of 5 samples, under the same name."""
    seq = ("--teacher", "t.pt", "--stage", "1", "--stop-stage", "1")
    assert flag(command(dry_run(tmp_path, "seq", *seq, "--decoding", "sampling"), "fairseq-kd-distill"), "--beam") == "1"
    assert flag(command(dry_run(tmp_path, "seq", *seq), "fairseq-kd-distill"), "--beam") == "5"  # beam search
    online = command(dry_run(tmp_path, "seq_online", "--teacher", "t.pt", "--decoding", "sampling"), "fairseq-train")
    assert flag(online, "--seq-kd-decoding") == "sampling" and flag(online, "--seq-kd-beam") == "1"
    assert flag(command(dry_run(tmp_path, "seq_online", "--teacher", "t.pt"), "fairseq-train"), "--seq-kd-beam") == "5"
    out = dry_run(tmp_path, "seq_online", "--teacher", "t.pt", "--decoding", "sampling", "--beam", "4")
    assert flag(command(out, "fairseq-train"), "--seq-kd-beam") == "4" and "best of 4" in out.stderr  # asked for, said
    distill = ["bash", str(REPO / "scripts" / "distill.sh"),
               "--teacher", "t.pt", "--data-bin", "d", "--out-dir", str(tmp_path / "dist"), "--device", "cpu",
               "--dry-run", "true"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    for extra, beam in ((["--decoding", "sampling"], "1"), ([], "5"), (["--decoding", "sampling", "--beam", "3"], "3")):
        out = subprocess.run(distill + extra, capture_output=True, text=True, env=env, timeout=120)
        assert flag(command(out, "fairseq-kd-distill"), "--beam") == beam, extra
        assert ("best of 3" in out.stderr) == (beam == "3")


@pytest.mark.parametrize("method", ["word", "onpolicy"])
def test_kd_alpha_reaches_every_criterion_that_has_it(tmp_path, method):
    """--kd-alpha reached only word_kd: --kd onpolicy trained at onpolicy_kd's default 1.0, not the 0.5 of
    converged_study.sh / results.md (and a rerun with another --kd-alpha reused the student)."""
    assert flag(train_command(dry_run(tmp_path, method, "--teacher", "t.pt")), "--kd-alpha") == "0.5"
    assert flag(train_command(dry_run(tmp_path, method, "--teacher", "t.pt", "--kd-alpha", "0.3")), "--kd-alpha") == "0.3"


def test_test_bleu_is_on_detokenized_text_when_the_data_is_sentencepiece(tmp_path):
    """Without --spm-model stage 3 scored sentencepiece pieces (about 2.7 BLEU below the study's BLEU of the
    same hypotheses): hypotheses are detokenized whenever the data is sentencepiece-encoded, now by decode.sh with
    the data's model (the study's detokenization), and scored against the raw reference DIR/raw/test.TGT."""
    def decoding(data, *extra):
        out = subprocess.run(["bash", str(REPO / "scripts" / "train_student.sh"), "--kd", "none", "--data-bin",
                              str(data), "--exp-dir", str(tmp_path / "e"), "--device", "cpu", "--stage", "3",
                              "--dry-run", "true", *extra], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"))
        return decode_command(out), command(out, "fairseq-kd-score"), out.stderr
    beside = tmp_path / "prep" / "bin"  # a data_prep output: spm.model and raw/ beside bin/
    beside.mkdir(parents=True)
    (beside / "dict.en.txt").write_text("a 1\n")
    (beside / "test.de-en.en.idx").write_text("")
    (beside.parent / "spm.model").write_text("spm")
    (beside.parent / "raw").mkdir()
    (beside.parent / "raw" / "test.en").write_text("a\n")
    dec, score, err = decoding(beside)
    assert flag(dec, "--spm-model") == str(beside.parent / "spm.model")
    assert (flag(dec, "--src"), flag(dec, "--tgt")) == ("de", "en")  # the test split's names, as fairseq reads them
    assert flag(score, "-r") == str(beside.parent / "raw" / "test.en") and flag(score, "-i") == flag(dec, "--out")
    assert "would stop" not in err
    dec, _, err = decoding(beside, "--post-process", "none")  # the pieces, when asked for: said to need a pieces ref
    assert flag(dec, "--spm-model") == "none" and "must be in the same pieces" in err
    dec, score, _ = decoding(beside, "--extra", "-s en -t de", "--test-ref", "ref.de")  # --extra's direction
    assert (flag(dec, "--src"), flag(dec, "--tgt")) == ("en", "de") and flag(score, "-r") == "ref.de"
    pieces = tmp_path / "pieces"  # no model anywhere, but sentencepiece pieces in the dictionary: the "▁" rule
    pieces.mkdir()
    (pieces / "dict.en.txt").write_text("\u2581a 1\nb 1\n")
    dec, _, err = decoding(pieces)
    assert "--spm-model" not in dec and "not sentencepiece-encoded" not in err
    plain = tmp_path / "plain"  # e.g. word-level text: scored as the model writes it, and said so
    plain.mkdir()
    (plain / "dict.en.txt").write_text("a@@ 1\nb 1\n")
    dec, _, err = decoding(plain)
    assert flag(dec, "--spm-model") == "none" and "not sentencepiece-encoded" in err
    assert flag(decoding(plain, "--spm-model", str(beside.parent / "spm.model"))[0], "--spm-model") == \
        str(beside.parent / "spm.model")


def test_training_and_validation_see_every_sentence(tmp_path):
    """fairseq-train's default --required-batch-size-multiple 8 drops the last N % 8 sentences of the valid
    split's batch plan (the longest): the student's valid loss, and so checkpoint_best.pt, saw part of it."""
    for method in ("none", "word"):
        assert flag(train_command(dry_run(tmp_path, method, "--teacher", "t.pt")), "--required-batch-size-multiple") == "1"


def test_distilled_dir_trains_on_a_corpus_made_before(tmp_path):
    """The recipes distil once (stage 4) and train seq / hybrid on that corpus: --distilled-dir DIR."""
    out = dry_run(tmp_path, "hybrid", "--teacher", "t.pt", "--stage", "1", "--distilled-dir", "made")
    assert "fairseq-kd-distill" not in out.stdout
    assert command(out, "fairseq-train")[1] == "made/bin"
    assert dry_run(tmp_path, "none", "--distilled-dir", "made").returncode == 2


def test_recipe_hybrid_is_the_studys_hybrid(tmp_path):
    """The recipes' "hybrid" was hybrid_online on the full online teacher distribution, beside a "word" from the
    top-8 cache; the study's (main.sh's) hybrid is hybrid_kd on the distilled corpus from the top-8 cache."""
    work = tmp_path / "w"
    (work / "data" / "bin").mkdir(parents=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", PYTHON=sys.executable)
    out = subprocess.run(["bash", str(REPO / "scripts" / "recipes" / "iwslt14_deen.sh"), "--work-dir", str(work),
                          "--device", "cpu", "--dry-run", "true", "--stage", "3", "--stop-stage", "5",
                          "--methods", "hybrid", "--students", "transformer_relu_9m"],
                         capture_output=True, text=True, env=env, timeout=300)
    train = command(out, "fairseq-train")
    assert flag(train, "--criterion") == "hybrid_kd" and flag(train, "--seq-kd-targets") == "data"
    assert train[1] == str(work / "distilled" / "bin") and "--seq-kd-decoding" not in train
    cache = command(out, "fairseq-kd-cache")
    assert cache[1] == str(work / "distilled" / "bin") and flag(cache, "--topk") == "8"
    assert flag(train, "--teacher-cache") == flag(cache, "--out-dir")
    assert flag(command(out, "fairseq-kd-distill"), "--beam") == "5"
    assert "hybrid_online" not in out.stdout + out.stderr
