"""System test on real Multi30k (../shared/data): prepare -> teacher -> word-KD and CE students -> BLEU.

Runs the real console tools in subprocesses, as a user would. Sizes are small so it fits
CI (a few minutes on 2 cores). The KD term is checked against its own baseline: a CE student
of the same architecture, seed and budget. The word-KD student must be measurably closer to
its teacher (token KL on the valid split, computed here with the teacher's and the student's
own forward passes) than the CE student is; a KD term that is zero or broken gives the CE
student's distance and fails. BLEU bounds only catch models that do not train at all.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL = ["--arch", "transformer", "--encoder-layers", "2", "--decoder-layers", "2",
         "--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "256",
         "--decoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
         "--share-all-embeddings"]
COMMON = ["--user-dir", str(REPO / "fairseq_kd"), "-s", "de", "-t", "en", "--optimizer", "adam",
          "--adam-betas", "(0.9, 0.98)", "--lr", "0.002", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100",
          "--max-tokens", "6000", "--cpu", "--num-workers", "0", "--seed", "1", "--no-epoch-checkpoints",
          "--disable-validation", "--log-format", "simple", "--log-interval", "50"]


def run(cmd, **kw):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)
    assert res.returncode == 0, f"{cmd[0]} failed:\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("m30k")
    run(["bash", REPO / "data_prep/prepare_multi30k.sh", "--data-dir", shared_data / "multi30k",
         "--out-dir", out, "--vocab-size", "4000"])
    return out


def bleu_of(prepared, ckpt, tmp_path, name):
    hyp = tmp_path / f"{name}.en"
    run(["bash", REPO / "scripts/decode.sh", "--data-bin", prepared / "bin", "--checkpoint", ckpt,
         "--out", hyp, "--spm-model", prepared / "spm.model", "--decoding", "greedy"])
    res = run([BIN / "fairseq-kd-score", "-i", hyp, "-r", prepared / "raw/test.en"])
    return json.loads(res.stdout)["bleu"]["score"]


def valid_kl(prepared, teacher_ckpt, *student_ckpts) -> list:
    """Mean KL(teacher || student) per valid target token (nats) of each student, teacher-forced on
    gold prefixes; the teacher's forward pass is shared by all students."""
    import torch
    from fairseq import checkpoint_utils

    from fairseq_kd.losses import basic as kd_losses

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(teacher_ckpt), *map(str, student_ckpts)], arg_overrides={"data": str(prepared / "bin")})
    teacher, *students = (m.eval() for m in models)
    task.load_dataset("valid")
    itr = task.get_batch_iterator(task.dataset("valid"), max_tokens=6000, seed=1).next_epoch_itr(shuffle=False)
    kl_sums, ntok = [0.0] * len(students), 0
    with torch.no_grad():
        for sample in itr:
            valid = sample["target"].ne(task.target_dictionary.pad())  # B x T
            t_lp = teacher.get_normalized_probs(teacher(**sample["net_input"]), log_probs=True).float()
            for i, m in enumerate(students):
                s_lp = m.get_normalized_probs(m(**sample["net_input"]), log_probs=True).float()
                kl_sums[i] += float(kd_losses.kl_full(t_lp, s_lp)[valid].sum())  # B x T -> scalar
            ntok += int(valid.sum())
    return [k / ntok for k in kl_sums]


def test_teacher_then_word_kd_student_reach_bleu(prepared, tmp_path):
    teacher = tmp_path / "teacher"
    run([BIN / "fairseq-train", prepared / "bin", "--task", "translation", *SMALL, *COMMON,
         "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
         "--max-update", "400", "--save-dir", teacher])
    t_bleu = bleu_of(prepared, teacher / "checkpoint_last.pt", tmp_path, "teacher")
    student = tmp_path / "student"
    res = run([BIN / "fairseq-train", prepared / "bin", "--task", "kd_translation", *SMALL, *COMMON,
               "--teacher-path", teacher / "checkpoint_last.pt", "--criterion", "word_kd", "--kd-alpha", "0.5",
               "--label-smoothing", "0.1", "--max-update", "150", "--save-dir", student])
    assert "kd_loss" in res.stdout + res.stderr and "teacher_nll_loss" in res.stdout + res.stderr
    s_bleu = bleu_of(prepared, student / "checkpoint_last.pt", tmp_path, "student")
    baseline = tmp_path / "ce_student"  # same architecture, seed, batches and budget; stock CE
    run([BIN / "fairseq-train", prepared / "bin", "--task", "translation", *SMALL, *COMMON,
         "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-update", "150",
         "--save-dir", baseline])
    ce_bleu = bleu_of(prepared, baseline / "checkpoint_last.pt", tmp_path, "ce_student")
    kd_kl, ce_kl = valid_kl(prepared, teacher / "checkpoint_last.pt", student / "checkpoint_last.pt",
                            baseline / "checkpoint_last.pt")
    print(f"teacher BLEU {t_bleu:.2f}; word-KD student BLEU {s_bleu:.2f}, KL to teacher {kd_kl:.3f}; "
          f"CE student BLEU {ce_bleu:.2f}, KL to teacher {ce_kl:.3f}")
    # Calibration (this test's teacher: 25.70 BLEU; students of 150 updates, greedy test BLEU,
    # KL in nats per valid token): seed 1 word-KD 7.17 BLEU, KL 0.752 / CE 4.66, KL 1.029 (ratio 0.731);
    # seed 2 (same teacher, both students retrained with --seed 2) 9.51, 0.854 / 5.64, 1.061 (0.804).
    # A zero or broken KD term leaves a CE student (ratio ~1, and its halved CE weight only slows it),
    # so the bound sits between: 0.9.
    assert t_bleu > 10.0
    assert s_bleu > 3.0 and ce_bleu > 3.0
    assert kd_kl < 0.9 * ce_kl, "the word-KD student is not closer to its teacher than a CE student"
    assert s_bleu > ce_bleu, "the word-KD student does not beat the CE student of the same budget"
