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
"""
import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="binarized data dir (default: a synthetic corpus)")
    p.add_argument("-s", "--source-lang", default="src")
    p.add_argument("-t", "--target-lang", default="tgt")
    p.add_argument("--split", default="valid", help="split whose batches are used")
    p.add_argument("--teacher", help="teacher checkpoint (default: initialise --teacher-arch)")
    p.add_argument("--teacher-arch", default="transformer_relu_9m")
    p.add_argument("--student-arch", default="transformer_relu_3m")
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--steps", type=int, default=4, help="timed steps per mode per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import fairseq_kd  # noqa: F401
    from bench.bench_word_kd import make_teacher
    from fairseq_kd import onpolicy
    from tests import helpers

    work = Path(tempfile.mkdtemp(prefix="bench_onpolicy_"))
    data = args.data
    if not data:
        raw = helpers.make_synthetic_corpus(work / "raw", n_train=2000, n_valid=600, n_test=10)
        data = str(helpers.preprocess(raw, work / "bin"))
    teacher = args.teacher or make_teacher(data, args.source_lang, args.target_lang, args.teacher_arch, work / "teacher")
    common = ["--arch", args.student_arch, "--share-all-embeddings", "--teacher-path", teacher,
              "--valid-subset", args.split, "--train-subset", args.split]
    modes = {
        "ce": ["--criterion", "word_kd", "--kd-alpha", "0"],
        "word_kd": ["--criterion", "word_kd", "--kd-alpha", "1"],
        "onpolicy_greedy": ["--criterion", "onpolicy_kd", "--onpolicy-lambda", "1", "--onpolicy-sampling", "greedy"],
        "onpolicy_sample": ["--criterion", "onpolicy_kd", "--onpolicy-lambda", "1", "--onpolicy-sampling", "sample"],
    }
    comps = {}
    for name, extra in modes.items():
        task, model, crit = helpers.build_components(data, [*common, *extra], arch_args=[],
                                                     src=args.source_lang, tgt=args.target_lang, seed=1)
        task.load_dataset(args.split)
        comps[name] = (task, model, crit, torch.optim.Adam(model.parameters(), lr=1e-4))
    ref_state = copy.deepcopy(comps["ce"][1].state_dict())
    for _, model, _, _ in comps.values():
        model.load_state_dict(ref_state)
        model.train()
    task = comps["ce"][0]
    ds = task.dataset(args.split)
    itr = task.get_batch_iterator(ds, max_tokens=args.max_tokens, seed=1, ignore_invalid_inputs=True)
    batches = [b for _, b in zip(range(args.steps), itr.next_epoch_itr(shuffle=False))]
    pad, eos = task.target_dictionary.pad(), task.target_dictionary.eos()

    def step(name, sample):
        _, model, crit, opt = comps[name]
        opt.zero_grad()
        loss, _, log = crit(model, sample)
        loss.backward()
        opt.step()
        return log

    def sampling_only(sample):
        _, model, _, _ = comps["onpolicy_sample"]
        onpolicy.sample_outputs(model, sample["net_input"], eos, pad)

    timed = [*modes, "sampling_alone"]
    times = {name: [] for name in timed}
    out_tokens, gold_tokens = [], []
    for name in modes:  # warm-up
        step(name, batches[0])
    for r in range(args.rounds):
        for name in timed:
            for sample in batches:
                t = time.perf_counter()
                if name == "sampling_alone":
                    sampling_only(sample)
                else:
                    log = step(name, sample)
                    if name == "onpolicy_sample":
                        out_tokens.append(log["ntokens"])
                        gold_tokens.append(sample["ntokens"])
                times[name].append(time.perf_counter() - t)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    med = {name: statistics.median(v) for name, v in times.items()}
    res = {
        "step_seconds": {k: round(v, 4) for k, v in med.items()},
        "ratio_to_word_kd": {k: round(v / med["word_kd"], 3) for k, v in med.items()},
        "ratio_to_ce": {k: round(v / med["ce"], 3) for k, v in med.items()},
        "sampled_tokens_per_gold_token": round(sum(out_tokens) / max(sum(gold_tokens), 1), 3),
        "setup": {"data": data, "split": args.split, "batches": len(batches), "max_tokens": args.max_tokens,
                  "student": args.student_arch, "teacher": args.teacher or args.teacher_arch,
                  "threads": args.threads, "torch": torch.__version__},
    }
    print("| mode | step (s) | vs word_kd | vs CE |\n|---|---|---|---|")
    for k in timed:
        print(f"| {k} | {med[k]:.4f} | {med[k] / med['word_kd']:.2f}x | {med[k] / med['ce']:.2f}x |")
    print(f"\nsampled output tokens per gold token: {res['sampled_tokens_per_gold_token']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
