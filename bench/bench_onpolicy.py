"""Step time of onpolicy_kd against word_kd (online teacher) and CE, one process.

The same student, batches and optimizer for every mode; modes run round-robin
(R rounds x N steps) so machine drift hits all alike; the median step time is compared.
``onpolicy_*`` modes use lambda = 1 (every batch on-policy: the worst case; a run with
lambda = p costs about p x onpolicy + (1 - p) x word_kd alpha 1), and the student's
sampling alone is timed too, since it is the extra cost over word_kd.

    python bench/bench_onpolicy.py --data exp/m30k/bin -s de -t en \
        --teacher exp/main/teacher/checkpoint_best.pt --student-arch transformer_relu_3m

Without ``--teacher`` a teacher of ``--teacher-arch`` is initialised and trained one update
(timing does not depend on its weights). Without ``--data`` a synthetic corpus is made.
On-policy cost grows with the length of the student's outputs, which an untrained
student gets wrong (it stops early or rambles): ``--student-init CKPT`` starts every mode
from a trained student of ``--student-arch``, and the table also gives the time per 1,000
decoder tokens actually trained on (sampled tokens for the on-policy modes).
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_word_kd import add_setup_args, build_modes, fixed_batches, prepare, train_step  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_args(p, max_tokens=2048, steps=4)
    p.add_argument("--student-init", help="checkpoint of a trained --student-arch student to start every mode from")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import fairseq_kd  # noqa: F401
    from fairseq_kd import onpolicy

    data, teacher = prepare(args, Path(tempfile.mkdtemp(prefix="bench_onpolicy_")))
    common = ["--arch", args.student_arch, "--share-all-embeddings", "--teacher-path", teacher,
              "--valid-subset", args.split, "--train-subset", args.split]
    modes = {
        "ce": ["--criterion", "word_kd", "--kd-alpha", "0"],
        "word_kd": ["--criterion", "word_kd", "--kd-alpha", "1"],
        "onpolicy_greedy": ["--criterion", "onpolicy_kd", "--onpolicy-lambda", "1", "--onpolicy-sampling", "greedy"],
        "onpolicy_sample": ["--criterion", "onpolicy_kd", "--onpolicy-lambda", "1", "--onpolicy-sampling", "sample"],
    }
    comps = build_modes(data, args, common, modes)
    if args.student_init:
        from fairseq_kd import checkpoint_safety

        state = checkpoint_safety.load_checkpoint(args.student_init)["model"]
        for _, model, _, _ in comps.values():
            model.load_state_dict(state)
    task = comps["ce"][0]
    batches = fixed_batches(task, args)
    pad, eos = task.target_dictionary.pad(), task.target_dictionary.eos()

    def step(name, sample):
        return train_step(comps[name], sample)

    def sampling_only(sample):
        _, model, _, _ = comps["onpolicy_sample"]
        out = onpolicy.sample_outputs(model, sample["net_input"], eos, pad)
        return {"ntokens": int(out[:, 1:].ne(pad).sum())}

    timed = [*modes, "sampling_alone"]
    times = {name: [] for name in timed}
    per_ktok = {name: [] for name in timed}  # seconds per 1,000 decoder tokens trained on
    out_tokens, gold_tokens = [], []
    for name in modes:  # warm-up
        step(name, batches[0])
    for r in range(args.rounds):
        for name in timed:
            for sample in batches:
                t = time.perf_counter()
                log = sampling_only(sample) if name == "sampling_alone" else step(name, sample)
                times[name].append(time.perf_counter() - t)
                per_ktok[name].append(1000.0 * times[name][-1] / max(int(log["ntokens"]), 1))
                if name == "onpolicy_sample":
                    out_tokens.append(int(log["ntokens"]))
                    gold_tokens.append(int(sample["ntokens"]))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    med = {name: statistics.median(v) for name, v in times.items()}
    ktok = {name: statistics.median(v) for name, v in per_ktok.items()}
    res = {
        "step_seconds": {k: round(v, 4) for k, v in med.items()},
        "seconds_per_1k_tokens": {k: round(v, 4) for k, v in ktok.items()},
        "per_token_ratio_to_word_kd": {k: round(v / ktok["word_kd"], 3) for k, v in ktok.items()},
        "ratio_to_word_kd": {k: round(v / med["word_kd"], 3) for k, v in med.items()},
        "ratio_to_ce": {k: round(v / med["ce"], 3) for k, v in med.items()},
        "sampled_tokens_per_gold_token": round(sum(out_tokens) / max(sum(gold_tokens), 1), 3),
        "setup": {"data": data, "split": args.split, "batches": len(batches), "max_tokens": args.max_tokens,
                  "student": args.student_arch, "student_init": args.student_init,
                  "teacher": args.teacher or args.teacher_arch,
                  "threads": args.threads, "torch": torch.__version__},
    }
    print("| mode | step (s) | vs word_kd | vs CE | s per 1k tokens | per token vs word_kd |")
    print("|---|---|---|---|---|---|")
    for k in timed:
        print(f"| {k} | {med[k]:.4f} | {med[k] / med['word_kd']:.2f}x | {med[k] / med['ce']:.2f}x | {ktok[k]:.4f} | "
              f"{ktok[k] / ktok['word_kd']:.2f}x |")
    print(f"\nsampled output tokens per gold token: {res['sampled_tokens_per_gold_token']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
