"""scripts/train_student.sh stage 3 and the recipes' test BLEU (scripts/recipes/common.sh ``evaluate``) score as
the study does: every test sentence decoded (scripts/decode.sh, --required-batch-size-multiple 1), hypotheses in
corpus order, detokenized with the data's sentencepiece model, scored by fairseq-kd-score against the RAW
reference text, with the sacrebleu signature in a JSON.

They ran ``fairseq-generate --max-tokens 8000 --scoring sacrebleu`` with fairseq's default batch multiple 8,
which drops the last N % 8 sentences of the batch plan (the longest: newstest2014 scored 3,000 of 3,003 lines),
and scored against the reference fairseq rebuilds from the binarized target, where pieces outside the
dictionary are ``<<unk>>`` (367 of newstest2014's 3,003 German lines: „ “ – £).

The data here is the data_prep layout (DIR/raw, DIR/spm.model, DIR/spm, DIR/bin) of a tiny copy task: 43 test
sentences (43 % 8 = 3) of 1 to 43 words, every 4th target line in „...“, a character the dictionary (built from
the training data) does not have. The model is a tiny transformer trained in-process for a few epochs.
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers

REPO = Path(__file__).resolve().parents[1]
N_TEST = 43


def run(args, **env):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env)
    return subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data dir in the data_prep layout, a checkpoint trained on DIR/bin)."""
    from fairseq_kd.prep import spm as kd_spm

    root = tmp_path_factory.mktemp("scoring")
    data, raw = root / "data", root / "data" / "raw"
    helpers.write_parallel(raw, "train", helpers.synthetic_pairs(400, 1, max_len=12), "de", "en")
    helpers.write_parallel(raw, "valid", helpers.synthetic_pairs(21, 2, max_len=12), "de", "en")
    rng = random.Random(4)
    lengths = list(range(1, N_TEST + 1))
    rng.shuffle(lengths)  # lengths spread out, in no order: the longest are the ones a batch multiple drops
    test = [" ".join(f"w{rng.randrange(12)}" for _ in range(k)) for k in lengths]
    helpers.write_parallel(raw, "test", [(s, f"\u201e{s}\u201c" if i % 4 == 0 else s) for i, s in enumerate(test)],
                           "de", "en")
    model = kd_spm.train_spm([raw / "train.de", raw / "train.en"], str(data / "spm"),
                             kd_spm.SpmConfig(vocab_size=16, model_type="word", num_threads=1))
    sp = kd_spm.load(str(model))
    (data / "spm").mkdir()
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            kd_spm.encode_file(sp, raw / f"{split}.{lang}", data / "spm" / f"{split}.{lang}")
    helpers.preprocess(data / "spm", data / "bin", "de", "en")
    ckpt = helpers.train(data / "bin", root / "model", max_epoch=8, max_tokens=500, src="de", tgt="en")
    return data, ckpt.parent / "checkpoint_best.pt"


def sacrebleu_of(hyp: Path, ref: Path):
    """sacrebleu itself (not our wrapper) on the hypothesis file and the raw reference."""
    from sacrebleu.metrics import BLEU, CHRF

    hyps = hyp.read_text(encoding="utf-8").split("\n")[:-1]
    refs = ref.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(hyps) == len(refs) == N_TEST
    return BLEU().corpus_score(hyps, [refs]).score, CHRF().corpus_score(hyps, [refs]).score


def check_scored(out_dir: Path, data: Path):
    """out_dir/test.{hyp,json,log} cover all 43 test sentences and score them against data/raw/test.en."""
    raw_ref = data / "raw" / "test.en"
    hyp = out_dir / "test.hyp"
    assert len(hyp.read_text(encoding="utf-8").split("\n")[:-1]) == N_TEST  # every sentence, not 40
    assert "\u2581" not in hyp.read_text(encoding="utf-8")  # detokenized
    score = json.loads((out_dir / "test.json").read_text(encoding="utf-8"))
    assert score["nlines"] == N_TEST and [Path(r).resolve() for r in score["refs"]] == [raw_ref.resolve()]
    bleu, chrf = sacrebleu_of(hyp, raw_ref)
    assert 0 < bleu and score["bleu"]["score"] == pytest.approx(bleu, abs=1e-4)
    assert score["chrf"]["score"] == pytest.approx(chrf, abs=1e-4)
    assert score["bleu"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    log = (out_dir / "test.log").read_text(encoding="utf-8")
    assert f"BLEU = {score['bleu']['score']:.2f}" in log and score["bleu"]["signature"] in log
    return score


@pytest.mark.integration
def test_student_stage3_scores_every_sentence_against_the_raw_reference(prepared, tmp_path):
    data, ckpt = prepared
    # the premise: „ is not in the dictionary, so fairseq's rebuilt reference has <<unk>> where the raw one has „
    assert "\u201e" in (data / "raw" / "test.en").read_text(encoding="utf-8")
    assert "\u201e" not in (data / "bin" / "dict.en.txt").read_text(encoding="utf-8")
    exp = tmp_path / "student"
    (exp / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, exp / "checkpoints" / "checkpoint_best.pt")
    out = ok(run([REPO / "scripts" / "train_student.sh", "--kd", "none", "--data-bin", data / "bin",
                  "--exp-dir", exp, "--device", "cpu", "--stage", "3"]))
    score = check_scored(exp, data)
    assert f"BLEU = {score['bleu']['score']:.2f}" in out.stdout  # the score line is printed
    settings = (exp / "test.log.settings").read_text()
    assert "ref_file=" in settings and "spm_file=" in settings and "--required" not in settings
    # pieces, ordered: the detokenized hypotheses are the pieces decoded with the data's model, line for line
    pieces = (exp / "test.hyp.pieces").read_text(encoding="utf-8").split("\n")[:-1]
    assert [p.replace(" ", "").replace("\u2581", " ").strip() for p in pieces] == \
        (exp / "test.hyp").read_text(encoding="utf-8").split("\n")[:-1]


@pytest.mark.integration
def test_recipe_test_bleu_scores_every_sentence_against_the_raw_reference(prepared, tmp_path):
    """The recipes' stage 2 (teacher test BLEU, evaluate) on the same data laid out as stage 0 leaves it."""
    data, ckpt = prepared
    work = tmp_path / "w"
    work.mkdir()
    (work / "data").symlink_to(data)
    (work / "teacher").mkdir()
    shutil.copy(ckpt, work / "teacher" / "checkpoint_best.pt")
    out = ok(run([REPO / "scripts" / "recipes" / "iwslt14_deen.sh", "--work-dir", work, "--device", "cpu",
                  "--stage", "2", "--stop-stage", "2"]))
    score = check_scored(work / "teacher", data)
    assert f"BLEU = {score['bleu']['score']:.2f}" in out.stdout


@pytest.mark.integration
def test_no_raw_reference_stops_before_anything_runs_naming_test_ref(prepared, tmp_path):
    """A --data-bin without DIR/raw beside it: exit 2 naming --test-ref, no silent fall back on fairseq's
    rebuilt reference, and before stage 2 trains (a run of stages 1-3 would otherwise fail after training)."""
    data, _ = prepared
    lone = tmp_path / "lone" / "bin"
    shutil.copytree(data / "bin", lone)
    exp = tmp_path / "student"
    proc = run([REPO / "scripts" / "train_student.sh", "--kd", "none", "--data-bin", lone, "--exp-dir", exp,
                "--device", "cpu", "--stage", "2"])
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "--test-ref" in errors[0] and str(tmp_path / "lone" / "raw" / "test.en") in errors[0]
    assert "stage 2" not in proc.stdout and not exp.exists()
    proc = run([REPO / "scripts" / "train_student.sh", "--kd", "none", "--data-bin", lone, "--exp-dir", exp,
                "--device", "cpu", "--stage", "3", "--test-ref", tmp_path / "nowhere.en"])
    assert proc.returncode == 2 and "--test-ref " + str(tmp_path / "nowhere.en") + " not found" in proc.stderr


# ---- every fairseq-generate the scripts run decodes every sentence ---------------------------------------

FLAG = re.compile(r"--required-batch-size-multiple[ =]+[\"']?1\b")
TOOL = re.compile(r"(?<![\w./-])(fairseq-generate|fairseq_cli[./]generate(?:\.py)?)(?![\w-])")
REASON = "# batch multiple kept:"  # a documented exception, on the line above the command


def logical_lines(text: str):
    """(first line number, the command) of a shell file: comments dropped, backslash continuations and
    multi-line ``name=( ... )`` arrays joined."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        start, buf, depth = i, "", 0
        while i < len(lines):
            line = re.sub(r"(^|\s)#.*$", "", lines[i]) if not lines[i].lstrip().startswith("#!") else ""
            i += 1
            cont = line.endswith("\\")
            buf += " " + line.rstrip("\\")
            depth += line.count("(") - line.count(")")
            if not cont and depth <= 0:
                break
        yield start, buf


def invocations(path: Path):
    """(line number, command text from the tool on, has a documented reason) for each run of fairseq-generate
    in a shell file: not a mention inside a quoted string (a log line), not a comment."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    for start, cmd in logical_lines(text):
        for m in TOOL.finditer(cmd):
            if cmd[:m.start()].count('"') % 2:  # inside "...": a message, not a command
                continue
            yield start + 1, cmd[m.start():], start > 0 and REASON in lines[start - 1]


def unchecked(paths):
    return [f"{p.relative_to(REPO) if p.is_relative_to(REPO) else p}:{n}: {cmd[:100]}"
            for p in paths for n, cmd, reason in invocations(p) if not FLAG.search(cmd) and not reason]


SHELL = sorted(p for pattern in ("scripts/*.sh", "scripts/*/*.sh", "data_prep/*.sh", "bench/*.sh")
               for p in REPO.glob(pattern))
PYTHON = sorted(p for pattern in ("scripts/*.py", "scripts/*/*.py", "data_prep/*.py", "bench/*.py")
                for p in REPO.glob(pattern))


@pytest.mark.unit
def test_every_fairseq_generate_of_the_scripts_decodes_every_sentence():
    """fairseq's batch_by_size drops the last N % 8 sentences unless --required-batch-size-multiple 1: every
    fairseq-generate (console script, python -m fairseq_cli.generate, fairseq_cli/generate.py) run by a script
    under scripts/, data_prep/ or bench/ passes it, or gives its reason on the line above (``# batch multiple
    kept: WHY``); Python programs there that call fairseq's generate pass it too."""
    assert not unchecked(SHELL), "fairseq-generate without --required-batch-size-multiple 1:\n" + \
        "\n".join(unchecked(SHELL))
    assert any(n for p in SHELL if p.name == "decode.sh" for n in invocations(p))  # the scan finds the real one
    generating = [p for p in PYTHON if re.search(r"fairseq_cli(\.| import )generate|fairseq-generate",
                                                 p.read_text(encoding="utf-8"))]
    missing = [str(p.relative_to(REPO)) for p in generating
               if not re.search(r"""["']--required-batch-size-multiple["'],\s*["']1["']""", p.read_text(encoding="utf-8"))]
    assert not missing, f"Python programs calling fairseq's generate without --required-batch-size-multiple 1: {missing}"


@pytest.mark.unit
def test_the_scan_catches_the_old_commands_and_ignores_messages(tmp_path):
    """The scan itself: train_student.sh's and the recipes' old test decoding is caught, a flagged command, a log
    message and a documented exception are not."""
    sh = tmp_path / "x.sh"
    sh.write_text("""#!/usr/bin/env bash
  gen=(fairseq-generate "${data_bin}" --user-dir "${user_dir}" --path "${ckpt}"
    --gen-subset test --beam 5 --max-tokens 8000 --scoring sacrebleu "${post[@]}" "${hw_train[@]}")
  local cmd=(fairseq-generate "$1" --path "$2" --gen-subset test
    --max-tokens 8000 --post-process sentencepiece --scoring sacrebleu "${hw_train[@]}")
python -m fairseq_cli.generate bin --path c.pt \\
  --max-tokens 4000 | tail -n 1
log "fairseq-generate ${subset} with ${checkpoint}"
echo "| system | test BLEU (sacrebleu, fairseq-generate --scoring sacrebleu) |"
# fairseq-generate in a comment
"${python}" -m fairseq_cli.generate "${gen_bin}" --path c.pt \\
  --max-tokens "${max_tokens}" --required-batch-size-multiple 1 --seed 1
# batch multiple kept: prints one batch's timing only
fairseq-generate bin --path c.pt --max-sentences 8
""")
    found = unchecked([sh])
    assert [line.split(":")[1] for line in found] == ["2", "4", "6"], found
