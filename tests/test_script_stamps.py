"""scripts/main.sh, scripts/train_student.sh and scripts/recipes/*.sh reuse a finished step only when its
settings stamp (the options that shape it, the identity of the files it read) is this run's: a trained
teacher or student made with other settings (or by an earlier version, which recorded none) is refused
with exit 2, a test score of another checkpoint, data, reference or decoding is made again. The expensive
tools are fakes on PATH (fairseq-train, fairseq-generate, fairseq-kd-score; scripts/decode.sh, which main.sh,
train_student.sh and the recipes score through, in a copy of the scripts), so each run takes seconds."""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

FAKE_TRAIN = r"""#!/usr/bin/env bash
# fake fairseq-train: one more line in SAVE_DIR/checkpoint_last.pt (and _best), a call in $FAKE_CALLS
while [[ $# -gt 0 ]]; do [[ "$1" == --save-dir ]] && save="$2"; shift; done
mkdir -p "${save}"
echo "trained $(date +%s%N)" >> "${save}/checkpoint_last.pt"
cp "${save}/checkpoint_last.pt" "${save}/checkpoint_best.pt"
echo fairseq-train >> "${FAKE_CALLS}"
echo '{"epoch": 1} | train_inner | fake'
"""
FAKE_GENERATE = r"""#!/usr/bin/env bash
# fake fairseq-generate: the checkpoint's content and the beam, then a BLEU line
while [[ $# -gt 0 ]]; do
  case "$1" in --path) ckpt="$2" ;; --beam) beam="$2" ;; esac
  shift
done
echo fairseq-generate >> "${FAKE_CALLS}"
echo "checkpoint: $(cat "${ckpt}") beam ${beam}"
echo "Generate test with beam=${beam}: BLEU = 12.34"
"""
FAKE_DECODE = r"""#!/usr/bin/env bash
# fake scripts/decode.sh: OUT is the checkpoint's content and the beam
while [[ $# -gt 0 ]]; do
  case "$1" in --checkpoint) ckpt="$2" ;; --out) out="$2" ;; --beam) beam="$2" ;; esac
  shift
done
echo decode.sh >> "${FAKE_CALLS}"
echo "$(cat "${ckpt}") beam ${beam:-5}" > "${out}"
"""
FAKE_SCORE = r"""#!/usr/bin/env bash
# fake fairseq-kd-score: a score json holding the hypotheses (here: the teacher's content), a BLEU line
while [[ $# -gt 0 ]]; do
  case "$1" in -i) hyp="$2" ;; -o) out="$2" ;; esac
  shift
done
python3 -c 'import json, sys; json.dump({"bleu": {"score": 12.34, "signature": "fake"}, "chrf": {"score": 1.0},
  "hyp": open(sys.argv[1]).read()}, open(sys.argv[2], "w"))' "${hyp}" "${out}"
echo "bleu: BLEU = 12.34 | fake"
"""


def write_exe(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fakes(tmp_path):
    """A bin/ of fake tools, a venv whose activate puts it first (main.sh activates FAIRSEQ_KD_VENV) and the
    environment for the scripts; calls() lists the fake tools run so far."""
    fake_bin = tmp_path / "fakebin"
    write_exe(fake_bin / "fairseq-train", FAKE_TRAIN)
    write_exe(fake_bin / "fairseq-generate", FAKE_GENERATE)
    write_exe(fake_bin / "fairseq-kd-score", FAKE_SCORE)
    venv = tmp_path / "fakevenv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{fake_bin}:{VENV_BIN}:$PATH"\n')
    log = tmp_path / "calls.txt"
    log.write_text("")
    env = dict(os.environ, PATH=f"{fake_bin}:{VENV_BIN}:{os.environ['PATH']}", FAIRSEQ_KD_VENV=str(venv),
               FAKE_CALLS=str(log), OMP_NUM_THREADS="1", PYTHON=sys.executable)

    class Fakes:
        def run(self, script, *args):
            return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, env=env,
                                  timeout=300)

        def calls(self, tool):
            return log.read_text().split().count(tool)
    return Fakes()


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def refused(proc, *needles):
    """Exit 2 with one error line naming each needle."""
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def fake_bin_dir(folder: Path, src="de", tgt="en", splits=("train", "valid", "test")):
    """A binarized data dir as far as the stamps look at it (dictionaries and split files)."""
    folder.mkdir(parents=True, exist_ok=True)
    for lang in (src, tgt):
        (folder / f"dict.{lang}.txt").write_text(f"{lang} 1\n")
        for split in splits:
            for ext in ("bin", "idx"):
                (folder / f"{split}.{src}-{tgt}.{lang}.{ext}").write_text(f"{split} {lang}\n")
    return folder


def touch_later(path: Path, seconds=100):
    """Another mtime, as a rebuilt file has."""
    st = path.stat()
    os.utime(path, (st.st_atime + seconds, st.st_mtime + seconds))


# ---- scripts/main.sh ------------------------------------------------------------------------------------

@pytest.fixture
def main_copy(tmp_path):
    """main.sh and data_prep/common.sh as they are in the checkout, beside a fake scripts/decode.sh."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "data_prep").mkdir()
    shutil.copy(REPO / "scripts" / "main.sh", root / "scripts" / "main.sh")
    shutil.copy(REPO / "data_prep" / "common.sh", root / "data_prep" / "common.sh")
    write_exe(root / "scripts" / "decode.sh", FAKE_DECODE)
    return root / "scripts" / "main.sh"


def main_work(tmp_path):
    work = tmp_path / "w"
    fake_bin_dir(work / "multi30k" / "bin")
    raw = work / "multi30k" / "raw"
    raw.mkdir(parents=True)
    for split in ("valid", "test"):
        (raw / f"{split}.en").write_text("a dog\n")
    (work / "multi30k" / "spm.model").write_text("spm")
    return work


@pytest.mark.integration
def test_main_quick_then_full_teacher_is_refused_not_reused(tmp_path, fakes, main_copy):
    """--preset quick then --preset full in one --work-dir kept the 100-update teacher ("teacher exists")."""
    work = main_work(tmp_path)
    stage2 = ["--work-dir", work, "--device", "cpu", "--stage", "2", "--stop-stage", "2"]
    ok(fakes.run(main_copy, *stage2, "--preset", "quick"))
    teacher = work / "teacher" / "checkpoint_last.pt"
    trained = teacher.read_text()
    assert fakes.calls("fairseq-train") == 1
    again = ok(fakes.run(main_copy, *stage2, "--preset", "quick"))  # the same settings: reused
    assert fakes.calls("fairseq-train") == 1 and "skipping" in again.stderr
    refused(fakes.run(main_copy, *stage2, "--preset", "full"), str(work / "teacher"), "--max-update 100 -> 750",
            "--work-dir")
    for change in (["--teacher-lr", "0.001"], ["--teacher-args", "--arch transformer"], ["--nprocs", "2"]):
        refused(fakes.run(main_copy, *stage2, "--preset", "quick", *change), str(work / "teacher"))
    touch_later(work / "multi30k" / "bin" / "train.de-en.de.bin")  # data prepared again
    refused(fakes.run(main_copy, *stage2, "--preset", "quick"), "data_files changed")
    assert fakes.calls("fairseq-train") == 1 and teacher.read_text() == trained


@pytest.mark.integration
def test_main_teacher_of_an_earlier_version_is_refused(tmp_path, fakes, main_copy):
    """teacher/.done and checkpoint_last.pt without a stamp: settings unknown, not trusted."""
    work = main_work(tmp_path)
    (work / "teacher").mkdir()
    (work / "teacher" / "checkpoint_last.pt").write_text("old")
    (work / "teacher" / ".done").touch()
    refused(fakes.run(main_copy, "--work-dir", work, "--device", "cpu", "--stage", "2", "--stop-stage", "2"),
            "earlier version", str(work / "teacher"))
    assert fakes.calls("fairseq-train") == 0


@pytest.mark.integration
def test_main_teacher_checkpoint_never_replaces_a_trained_teacher(tmp_path, fakes, main_copy):
    """--teacher-checkpoint did ln -sf over teacher/checkpoint_last.pt, destroying the teacher trained there."""
    work = main_work(tmp_path)
    ok(fakes.run(main_copy, "--work-dir", work, "--device", "cpu", "--stage", "2", "--stop-stage", "2"))
    teacher = work / "teacher" / "checkpoint_last.pt"
    trained = teacher.read_text()
    other = tmp_path / "other.pt"
    other.write_text("another teacher")
    error = refused(fakes.run(main_copy, "--work-dir", work, "--device", "cpu", "--stage", "2", "--stop-stage", "2",
                              "--teacher-checkpoint", other), str(teacher), "--work-dir")
    assert "trained" in error
    assert not teacher.is_symlink() and teacher.read_text() == trained


@pytest.mark.integration
def test_main_teacher_bleu_belongs_to_the_teacher(tmp_path, fakes, main_copy):
    """Another --teacher-checkpoint re-linked the teacher but stage 3 kept the old teacher.*.json (the
    'Teacher: BLEU' line and the gap-closed column); now another teacher in the same --work-dir is refused,
    and teacher.SPLIT.json is decoded again whenever its teacher, data or decoding is not the stamped one."""
    work = main_work(tmp_path)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_text("teacher A")
    b.write_text("teacher B, another size")
    stages = ["--work-dir", work, "--device", "cpu", "--stage", "2", "--stop-stage", "3"]
    ok(fakes.run(main_copy, *stages, "--teacher-checkpoint", a))
    test_json = work / "teacher.test.json"
    assert "teacher A" in test_json.read_text() and fakes.calls("decode.sh") == 2
    ok(fakes.run(main_copy, *stages, "--teacher-checkpoint", a))  # nothing changed: nothing decoded
    assert fakes.calls("decode.sh") == 2
    refused(fakes.run(main_copy, *stages, "--teacher-checkpoint", b), "teacher_checkpoint", "--work-dir")
    assert "teacher A" in test_json.read_text()
    shutil.rmtree(work / "teacher")  # the fix the error names: the teacher dir goes
    ok(fakes.run(main_copy, *stages, "--teacher-checkpoint", b))
    assert "teacher B" in test_json.read_text() and "teacher B" in (work / "teacher.valid.json").read_text()
    assert fakes.calls("decode.sh") == 4
    touch_later(work / "multi30k" / "bin" / "test.de-en.de.bin")  # the test split binarized again
    ok(fakes.run(main_copy, *stages[:-1], "3", "--teacher-checkpoint", b))
    assert fakes.calls("decode.sh") == 5  # test only
    (work / "teacher.valid.json.settings").unlink()  # a json of an earlier version: made again
    ok(fakes.run(main_copy, *stages[:-1], "3", "--teacher-checkpoint", b))
    assert fakes.calls("decode.sh") == 6


# ---- scripts/train_student.sh ---------------------------------------------------------------------------

STUDENT = REPO / "scripts" / "train_student.sh"


@pytest.fixture
def scripts_copy(tmp_path):
    """train_student.sh, hw.sh, distill.sh and the recipes as they are in the checkout, beside a fake
    scripts/decode.sh (stage 3 and the recipes' test BLEU decode through it); data_prep/ and fairseq_kd/ linked."""
    root = tmp_path / "repo"
    (root / "scripts" / "recipes").mkdir(parents=True)
    for name in ("train_student.sh", "hw.sh", "distill.sh"):
        shutil.copy(REPO / "scripts" / name, root / "scripts" / name)
    for recipe in (REPO / "scripts" / "recipes").glob("*.sh"):
        shutil.copy(recipe, root / "scripts" / "recipes" / recipe.name)
    write_exe(root / "scripts" / "decode.sh", FAKE_DECODE)
    (root / "data_prep").symlink_to(REPO / "data_prep")
    (root / "fairseq_kd").symlink_to(REPO / "fairseq_kd")
    return root


def raw_reference(bin_dir: Path, tgt: str):
    """DIR/raw/test.TGT beside DIR/bin, as data_prep/*.sh leave it."""
    ref = bin_dir.parent / "raw" / f"test.{tgt}"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text("a dog\n")
    return ref


@pytest.mark.integration
def test_train_student_changed_options_or_data_are_refused(tmp_path, fakes):
    """train.done + checkpoint_last.pt were reused whatever --lr, --kd-alpha, --max-epoch, --extra or the data."""
    data = fake_bin_dir(tmp_path / "bin", "src", "tgt")
    teacher = tmp_path / "teacher.pt"
    teacher.write_text("teacher")
    exp = tmp_path / "student"
    base = ["--kd", "word", "--teacher", teacher, "--data-bin", data, "--exp-dir", exp, "--device", "cpu",
            "--stage", "2", "--stop-stage", "2"]
    ok(fakes.run(STUDENT, *base))
    again = ok(fakes.run(STUDENT, *base))
    assert fakes.calls("fairseq-train") == 1 and "already trained" in again.stdout
    refused(fakes.run(STUDENT, *base, "--lr", "1e-3", "--max-epoch", "99"), str(exp), "--exp-dir",
            "--lr 5e-4 -> 1e-3, --max-epoch 30 -> 99")
    refused(fakes.run(STUDENT, *base, "--kd-alpha", "0.9", "--extra", "--seed 7"), "--kd-alpha 0.5 -> 0.9, --seed added")
    touch_later(teacher)  # the teacher retrained
    refused(fakes.run(STUDENT, *base), "teacher_file changed")
    os.utime(teacher, (teacher.stat().st_atime, teacher.stat().st_mtime - 100))
    touch_later(data / "train.src-tgt.src.bin")  # a re-distilled corpus
    refused(fakes.run(STUDENT, *base), "data_files changed")
    assert fakes.calls("fairseq-train") == 1


@pytest.mark.integration
def test_train_student_onpolicy_kd_alpha_is_in_its_settings(tmp_path, fakes):
    """--kd onpolicy never passed --kd-alpha: it trained at the criterion's 1.0, and a rerun with another
    --kd-alpha reused that student."""
    data = fake_bin_dir(tmp_path / "bin", "src", "tgt")
    teacher = tmp_path / "teacher.pt"
    teacher.write_text("teacher")
    base = ["--kd", "onpolicy", "--teacher", teacher, "--data-bin", data, "--exp-dir", tmp_path / "student",
            "--device", "cpu", "--stage", "2", "--stop-stage", "2"]
    ok(fakes.run(STUDENT, *base))
    assert "--kd-alpha=0.5" in (tmp_path / "student" / "train.settings").read_text().splitlines()
    refused(fakes.run(STUDENT, *base, "--kd-alpha", "0.9"), "--kd-alpha 0.5 -> 0.9")
    assert fakes.calls("fairseq-train") == 1


@pytest.mark.integration
def test_train_student_of_an_earlier_version_is_refused(tmp_path, fakes):
    data = fake_bin_dir(tmp_path / "bin", "src", "tgt")
    exp = tmp_path / "student"
    (exp / "checkpoints").mkdir(parents=True)
    (exp / "checkpoints" / "checkpoint_last.pt").write_text("old")
    (exp / "train.done").touch()
    refused(fakes.run(STUDENT, "--kd", "none", "--data-bin", data, "--exp-dir", exp, "--device", "cpu",
                      "--stage", "2", "--stop-stage", "2"), "earlier version", str(exp))
    assert fakes.calls("fairseq-train") == 0


@pytest.mark.integration
def test_train_student_test_log_belongs_to_the_checkpoint_and_decoding(tmp_path, fakes, scripts_copy):
    """test.log was kept whatever the checkpoint and the decoding: now made again when they changed, and when
    the raw reference or the sentencepiece model changed."""
    student = scripts_copy / "scripts" / "train_student.sh"
    data = fake_bin_dir(tmp_path / "bin", "src", "tgt")
    ref = raw_reference(data, "tgt")
    exp = tmp_path / "student"
    base = ["--kd", "none", "--data-bin", data, "--exp-dir", exp, "--device", "cpu"]
    ok(fakes.run(student, *base, "--stage", "2", "--stop-stage", "3"))
    hyp, log = exp / "test.hyp", exp / "test.log"
    first = hyp.read_text()
    assert fakes.calls("decode.sh") == 1 and "BLEU = 12.34" in log.read_text()
    assert json.loads((exp / "test.json").read_text())["hyp"] == first
    again = ok(fakes.run(student, *base, "--stage", "3", "--stop-stage", "3"))
    assert fakes.calls("decode.sh") == 1 and "skipping" in again.stdout and "BLEU = 12.34" in again.stdout
    ok(fakes.run(student, *base, "--stage", "3", "--stop-stage", "3", "--gen-beam", "4"))
    assert fakes.calls("decode.sh") == 2 and "beam 4" in hyp.read_text()
    shutil.rmtree(exp / "checkpoints")  # trained again (as the refusal says): another checkpoint
    (exp / "train.done").unlink()
    ok(fakes.run(student, *base, "--stage", "2", "--stop-stage", "3", "--gen-beam", "4"))
    assert fakes.calls("decode.sh") == 3 and hyp.read_text() != first
    (exp / "test.log.settings").unlink()  # a test.log of an earlier version: made again
    ok(fakes.run(student, *base, "--stage", "3", "--stop-stage", "3", "--gen-beam", "4"))
    assert fakes.calls("decode.sh") == 4
    touch_later(ref)  # another reference: scored again, and said so
    out = ok(fakes.run(student, *base, "--stage", "3", "--stop-stage", "3", "--gen-beam", "4"))
    assert fakes.calls("decode.sh") == 5 and "ref_file changed" in out.stdout
    other = tmp_path / "other.tgt"
    other.write_text("a cat\n")
    ok(fakes.run(student, *base, "--stage", "3", "--stop-stage", "3", "--gen-beam", "4", "--test-ref", other))
    assert fakes.calls("decode.sh") == 6
    (data.parent / "spm.model").write_text("spm")  # now sentencepiece-encoded: detokenized, decoded again
    out = ok(fakes.run(student, *base, "--stage", "3", "--stop-stage", "3", "--gen-beam", "4", "--test-ref", other))
    assert fakes.calls("decode.sh") == 7 and "post_process none -> sentencepiece" in out.stdout
    touch_later(data.parent / "spm.model")
    out = ok(fakes.run(student, *base, "--stage", "3", "--stop-stage", "3", "--gen-beam", "4", "--test-ref", other))
    assert fakes.calls("decode.sh") == 8 and "spm_file changed" in out.stdout
    assert fakes.calls("fairseq-generate") == 0  # scored through decode.sh, never fairseq-generate's own BLEU


# ---- scripts/recipes/*.sh -------------------------------------------------------------------------------

@pytest.mark.integration
def test_recipe_teacher_is_refused_with_other_settings_and_its_test_log_follows_it(tmp_path, fakes, scripts_copy):
    recipe = scripts_copy / "scripts" / "recipes" / "iwslt14_deen.sh"
    work = tmp_path / "w"
    data = fake_bin_dir(work / "data" / "bin")
    ref = raw_reference(data, "en")
    (work / "data" / "spm.model").write_text("spm")
    base = ["--work-dir", work, "--device", "cpu", "--stage", "1", "--stop-stage", "2"]
    ok(fakes.run(recipe, *base))
    log = work / "teacher" / "test.log"
    assert fakes.calls("fairseq-train") == 1 and fakes.calls("decode.sh") == 1
    ok(fakes.run(recipe, *base))
    assert fakes.calls("fairseq-train") == 1 and fakes.calls("decode.sh") == 1
    refused(fakes.run(recipe, *base, "--teacher-args", "--lr 1e-3"), str(work / "teacher"), "--work-dir")
    refused(fakes.run(recipe, *base, "--max-len-b", "20"), "--eval-bleu-args")
    touch_later(data / "train.de-en.en.bin")
    refused(fakes.run(recipe, *base), "data_files changed")
    os.utime(data / "train.de-en.en.bin", (0, (data / "train.de-en.en.bin").stat().st_mtime - 100))
    touch_later(data / "test.de-en.de.bin")  # the test split again: the teacher's BLEU is decoded again
    ok(fakes.run(recipe, *base))
    assert fakes.calls("fairseq-train") == 1 and fakes.calls("decode.sh") == 2
    (work / "teacher" / "test.log.settings").unlink()
    ok(fakes.run(recipe, *base))
    assert fakes.calls("decode.sh") == 3 and "BLEU = 12.34" in log.read_text()
    touch_later(ref)  # the raw reference again
    ok(fakes.run(recipe, *base))
    assert fakes.calls("decode.sh") == 4 and fakes.calls("fairseq-generate") == 0
    ref.rename(ref.with_suffix(".gone"))  # no raw reference: refused, never scored against fairseq's rebuilt one
    refused(fakes.run(recipe, *base), str(ref), "--stage 0")
    ref.with_suffix(".gone").rename(ref)
    assert fakes.calls("decode.sh") == 4
    students = work / "students"
    ok(fakes.run(recipe, "--work-dir", work, "--device", "cpu", "--stage", "5", "--stop-stage", "6",
                 "--methods", "none", "--students", "transformer_relu_9m"))
    assert fakes.calls("decode.sh") == 5  # the student's test BLEU, against the same raw reference
    assert "hyp" in json.loads((students / "transformer_relu_9m_none" / "test.json").read_text())
    table = (work / "results.md").read_text()
    assert "| transformer_relu_9m none | 12.34 | 1.00 |" in table and "signature: fake" in table
    refused(fakes.run(recipe, "--work-dir", work, "--device", "cpu", "--stage", "5", "--stop-stage", "5",
                      "--methods", "none", "--students", "transformer_relu_9m", "--student-lr", "1e-3"),
            str(students / "transformer_relu_9m_none"), "--lr 5e-4 -> 1e-3")


@pytest.mark.unit
def test_stamp_changes_names_what_changed(tmp_path):
    stamp = tmp_path / "stamp"
    stamp.write_text("--lr=5e-4\n--cpu=\ndata_files=1 2 a;3 4 b\n--long=" + "x" * 50 + "\n")
    common = shlex.quote(str(REPO / "data_prep/common.sh"))  # a checkout under "My Projects" too
    script = (f'. {common}; stamp_changes {shlex.quote(str(stamp))} "$(printf "%s\\n" --lr=1e-3 '
              f'"data_files=1 9 a" --fp16= "--long={"y" * 50}")"')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "--lr 5e-4 -> 1e-3, --cpu dropped, data_files changed, --long changed, --fp16 added"
    many = "\n".join(f"--f{i}={i}" for i in range(9))
    out = subprocess.run(["bash", "-c", f'. {common}; stamp_changes {shlex.quote(str(stamp))} "{many}"'],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.endswith("--f1 added and 7 more"), out
