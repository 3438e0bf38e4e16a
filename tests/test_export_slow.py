"""Slow tier, real Multi30k (test_2016_flickr, greedy): a briefly trained student's exports against
independent truths. float32: its outputs equal fairseq's. int8: each weight within half a quantization
step of fairseq's (model.bin read back); its teacher-forced log-probabilities equal CTranslate2's int8
arithmetic (fairseq's model under fairseq_kd.quant's simulation) on the sentences whose int8 inputs all
stay off rounding boundaries, and are nearer it than the float model's over the whole test set. The BLEU
of both exports and the int8 outputs' agreement with the simulation are printed (measurements, not bounds).

The student is the system test's student architecture (1+1 layers, d=128, 2k vocabulary),
trained 200 updates through the real fairseq-train.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STUDENT = ["--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
           "--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "256",
           "--decoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
           "--share-all-embeddings"]


def run(cmd):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    assert res.returncode == 0, f"{cmd[0]} failed:\n{res.stderr[-3000:]}"
    return res


def test_int8_export_is_the_int8_arithmetic_of_the_float_model(shared_data, tmp_path):
    import torch

    from fairseq_kd import quant
    from fairseq_kd.distill.data import SplitData
    from fairseq_kd.export.evaluate import evaluate_export
    from fairseq_kd.teacher import load_teacher
    from tests import int8_checks
    from tests.test_export import ct2, ct2_outputs, fairseq_outputs

    m30k = tmp_path / "m30k"
    run(["bash", REPO / "data_prep/prepare_multi30k.sh", "--data-dir", shared_data / "multi30k", "--out-dir", m30k,
         "--vocab-size", "2000"])
    run([BIN / "fairseq-train", m30k / "bin", "--user-dir", REPO / "fairseq_kd", "-s", "de", "-t", "en", *STUDENT,
         "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "100", "--max-tokens", "4096", "--max-update", "200", "--cpu", "--num-workers", "0",
         "--seed", "1", "--no-epoch-checkpoints", "--disable-validation", "--dropout", "0.1", "--criterion",
         "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--required-batch-size-multiple", "1",
         "--save-dir", tmp_path / "student", "--log-format", "json"])
    ckpt, ref = tmp_path / "student" / "checkpoint_last.pt", m30k / "raw" / "test.en"
    f32 = evaluate_export(str(ckpt), str(m30k / "bin"), str(ref), beam=1, quantization="none", threads=2)
    i8 = evaluate_export(str(ckpt), str(m30k / "bin"), str(ref), beam=1, quantization="int8", threads=2)
    print(f"export float32 {f32['bleu']} ({f32['sent_per_s']} sent/s), int8 {i8['bleu']} ({i8['sent_per_s']} sent/s)")
    assert f32["bleu"] > 3.0  # the student learned something: the checks below are about a real model
    assert int8_checks.assert_weights_quantized(os.path.join(f32["export_dir"], "model.bin"),
                                                os.path.join(i8["export_dir"], "model.bin")) >= 10
    data = SplitData(str(m30k / "bin"), "test", "de", "en")
    sources = [data.src_ds[i].long() for i in range(len(data))]
    model = load_teacher(str(ckpt)).models[0].eval()
    got32, _ = ct2_outputs(f32["export_dir"], data.tgt_dict, sources, max_batch_tokens=4000)
    assert got32 == fairseq_outputs(model, data.tgt_dict, sources, "greedy")
    # int8: CTranslate2 computes int8 arithmetic (fairseq_kd.quant simulates it): exactly on the sentences
    # whose int8 inputs all stay off rounding boundaries, nearer it than the float model over all sentences
    translator = ct2.Translator(i8["export_dir"], device="cpu", compute_type="int8", intra_threads=2)
    records = int8_checks.compare_scores(translator, model, data.tgt_dict, sources, got32)
    exact = int8_checks.assert_int8_arithmetic(records, min_exact=1)
    print(f"int8 scores equal to the simulation's on the {len(exact)} sentences off rounding boundaries; "
          f"sum |int8 - simulation| {sum(r['sum_to_sim'] for r in records):.3f}, "
          f"sum |int8 - float32| {sum(r['sum_to_float'] for r in records):.3f} (log-probs, all tokens)")
    got8, _ = ct2_outputs(i8["export_dir"], data.tgt_dict, sources, compute_type="int8", max_batch_tokens=4000)
    with quant.int8_simulation(model), torch.no_grad():
        expected8 = fairseq_outputs(model, data.tgt_dict, sources, "greedy")
    print("int8 greedy outputs equal to the simulation's:", sum(a == b for a, b in zip(got8, expected8)),
          "of", len(got8), "(a measurement)")
