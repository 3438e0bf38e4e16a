"""Does bfloat16 autocast speed up CPU training of the converged study's students? (No, on this VM.)

Trains the 1.3M CE student of ``scripts/converged_study.sh`` (``transformer_relu_3m``, the study's
flags, one thread) for ``--updates`` updates twice per round: fp32, and with the criterion's
forward under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (backward outside it, fp32 weights and
Adam: the usual mixed precision). Prints fairseq's updates/s of the second logging interval of
each run and the bf16 / fp32 ratio per round. The CPU's AMX/AVX512-bf16 GEMMs are 3-7x faster than
fp32 in isolation; the whole step is what matters. Nothing else may run while it measures.

    python bench/cpu_bf16_autocast.py --data-bin exp/m30k/bin --rounds 2
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

STUDENT = ["--arch", "transformer_relu_3m", "--share-all-embeddings", "--dropout", "0.1", "--encoder-layers", "3",
           "--decoder-layers", "2", "--encoder-ffn-embed-dim", "256", "--decoder-ffn-embed-dim", "256"]


def child(argv) -> int:
    """One fairseq-train run in this process; bf16 autocast around the criterion when asked."""
    import torch
    from fairseq.tasks import fairseq_task
    from fairseq_cli.train import cli_main

    if os.environ.get("KD_BENCH_BF16") == "1":
        def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
            model.train()
            model.set_num_updates(update_num)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss, sample_size, logging_output = criterion(model, sample)
            if ignore_grad:
                loss *= 0
            optimizer.backward(loss)
            return loss, sample_size, logging_output

        fairseq_task.FairseqTask.train_step = train_step
    sys.argv = ["fairseq-train"] + argv
    cli_main()
    return 0


def run(data_bin: str, updates: int, bf16: bool) -> float:
    """updates/s fairseq logged for the last interval of one run."""
    with tempfile.TemporaryDirectory() as d:
        argv = [data_bin, "--user-dir", os.path.join(os.path.dirname(__file__), "..", "fairseq_kd"),
                "--task", "kd_translation", "--source-lang", "de", "--target-lang", "en", *STUDENT,
                "--label-smoothing", "0.1", "--criterion", "label_smoothed_cross_entropy", "--optimizer", "adam",
                "--adam-betas", "(0.9, 0.98)", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt",
                "--warmup-updates", "100", "--max-update", str(updates), "--max-tokens", "4096", "--seed", "2",
                "--save-dir", d, "--no-save", "--disable-validation", "--log-format", "json",
                "--log-interval", str(updates // 2), "--no-progress-bar", "--num-workers", "0",
                "--required-batch-size-multiple", "1", "--cpu"]
        env = dict(os.environ, KD_BENCH_BF16="1" if bf16 else "0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        out = subprocess.run([sys.executable, __file__, "--child", *argv], env=env, capture_output=True,
                             text=True, check=True)
    inner = [json.loads(line.split("train_inner | ", 1)[1] if "train_inner | " in line else line.split(":", 2)[2])
             for line in (out.stdout + out.stderr).splitlines() if "train_inner" in line]
    return float(inner[-1]["ups"])


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-bin", required=True, help="prepare_multi30k.sh's bin/")
    ap.add_argument("--updates", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    if not os.path.isfile(os.path.join(args.data_bin, "dict.de.txt")):
        ap.error(f"--data-bin {args.data_bin}: no dict.de.txt; run data_prep/prepare_multi30k.sh --out-dir exp/m30k "
                 f"and pass exp/m30k/bin")
    if args.updates < 2 or args.rounds < 1:
        ap.error("--updates >= 2 (two logging intervals) and --rounds >= 1")
    print("| round | fp32 updates/s | bf16 autocast updates/s | bf16 / fp32 |")
    print("|---:|---:|---:|---:|")
    for r in range(1, args.rounds + 1):
        fp32, bf16 = run(args.data_bin, args.updates, False), run(args.data_bin, args.updates, True)
        print(f"| {r} | {fp32:.2f} | {bf16:.2f} | {bf16 / fp32:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
