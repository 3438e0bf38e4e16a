"""Step time of CE vs word_kd (online teacher, online top-k, teacher cache) at T=1 and T=2, one process.

The same student architecture, the same batches, the same optimizer; modes are run
round-robin (R rounds x N steps each) so drift hits all of them alike, and the median
step time is compared. Also times the teacher's forward alone, since the goal for the
online modes is ``step(online) <= step(CE) + 1.1 x teacher forward``, and for the cache
``step(cache) <= 1.05 x step(CE)``, at every temperature of ``--temperatures`` (default 1 2:
T=1 reuses the CE log-probs, T!=1 needs the student's and teacher's log-softmax at T).

    python bench/bench_word_kd.py --data exp/multi30k/bin -s de -t en \
        --teacher exp/main/teacher/checkpoint_best.pt --student-arch transformer_relu_3m

Without ``--teacher`` a teacher of ``--teacher-arch`` is initialised (timing does not
depend on its weights). ``--device cuda --bf16`` runs the students under bf16 autocast and the
teacher in bf16 (``--teacher-dtype`` default), times with CUDA synchronisation and adds tokens/s
and peak GPU memory per mode (``bench/gpu_word_kd.sh``: the prepared GPU run). Batches come from
``--split`` (default valid, which is cached quickly). Without ``--data`` a synthetic corpus is made.
"""
import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_teacher(data, src, tgt, arch, out_dir) -> str:
    """A real fairseq checkpoint of ``arch`` after one update (weights do not affect timing)."""
    from tests import helpers

    ckpt = helpers.train(Path(data), Path(out_dir), arch_args=["--arch", arch, "--share-all-embeddings"],
                         extra=["--max-update", "1", "--disable-validation"], src=src, tgt=tgt, max_tokens=2048)
    return str(ckpt)


def add_setup_args(p: argparse.ArgumentParser, max_tokens: int, steps: int) -> None:
    """Data, teacher, student and timing options shared by the step-time benchmarks."""
    p.add_argument("--data", help="binarized data dir (default: a synthetic corpus)")
    p.add_argument("-s", "--source-lang", default="src")
    p.add_argument("-t", "--target-lang", default="tgt")
    p.add_argument("--split", default="valid", help="split whose batches are used (and cached)")
    p.add_argument("--teacher", help="teacher checkpoint (default: initialise --teacher-arch)")
    p.add_argument("--teacher-arch", default="transformer_relu_9m")
    p.add_argument("--student-arch", default="transformer_relu_3m")
    p.add_argument("--max-tokens", type=int, default=max_tokens)
    p.add_argument("--steps", type=int, default=steps, help="timed steps per mode per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the results here")


def prepare(args, work: Path):
    """(binarized data dir, teacher checkpoint): given, or a synthetic corpus / a one-update teacher."""
    from tests import helpers

    data = args.data
    if not data:
        raw = helpers.make_synthetic_corpus(work / "raw", n_train=2000, n_valid=600, n_test=10)
        data = str(helpers.preprocess(raw, work / "bin"))
    teacher = args.teacher or make_teacher(data, args.source_lang, args.target_lang, args.teacher_arch, work / "teacher")
    return data, teacher


def build_modes(data, args, common, modes) -> dict:
    """name -> (task, model, criterion, Adam) for each mode's flags, all with the same initial student."""
    import torch

    from tests import helpers

    comps = {}
    cuda = on_cuda(args)
    precision = ["--bf16"] if getattr(args, "bf16", False) else []  # the task's teacher dtype follows it
    for name, extra in modes.items():
        task, model, crit = helpers.build_components(data, [*common, *precision, *extra], arch_args=[],
                                                     src=args.source_lang, tgt=args.target_lang, seed=1, cpu=not cuda)
        task.load_dataset(args.split)
        if cuda:
            model, crit = model.cuda(), crit.cuda()
        comps[name] = (task, model, crit, torch.optim.Adam(model.parameters(), lr=1e-4))
    ref_state = copy.deepcopy(next(iter(comps.values()))[1].state_dict())  # identical initial students
    for _, model, _, _ in comps.values():
        model.load_state_dict(ref_state)
        model.train()
    return comps


def fixed_batches(task, args) -> list:
    """The first ``--steps`` batches of ``--split``, tagged with their split as the task does (on ``--device``)."""
    from fairseq import utils

    ds = task.dataset(args.split)
    itr = task.get_batch_iterator(ds, max_tokens=args.max_tokens, seed=1, ignore_invalid_inputs=True).next_epoch_itr(shuffle=False)
    batches = [dict(b, kd_split=args.split) for _, b in zip(range(args.steps), itr)]
    return [utils.move_to_cuda(b) for b in batches] if on_cuda(args) else batches


def train_step(comp, sample, bf16: bool = False) -> dict:
    """One optimizer step of ``comp`` = (task, model, criterion, optimizer); the criterion's logging output
    (``bf16``: forward under CUDA bf16 autocast, fp32 master weights, as fairseq's ``--amp`` with bf16)."""
    import torch

    _, model, crit, opt = comp
    opt.zero_grad()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        loss, _, log = crit(model, sample)
    loss.backward()
    opt.step()
    return log


def on_cuda(args) -> bool:
    """``--device cuda``; benches that share these helpers without the flag run on CPU."""
    return getattr(args, "device", "cpu") == "cuda"


def sync(args) -> None:
    """Wait for queued GPU work, so that wall-clock step times are real."""
    if on_cuda(args):
        import torch

        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_args(p, max_tokens=4096, steps=5)
    p.add_argument("--topk", type=int, default=8, help="cache top-k, and --kd-topk of the online top-k mode")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--bf16", action="store_true", help="students under bf16 autocast, teacher in bf16 (cuda only)")
    p.add_argument("--profile", action="store_true",
                   help="also print a torch.profiler table (top ops by CPU time) of each mode's steps")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no GPU here")
    if args.bf16 and args.device != "cuda":
        p.error("--bf16 needs --device cuda")
    import fairseq_kd  # noqa: F401
    from fairseq_kd.cli import cache as cache_cli

    work = Path(tempfile.mkdtemp(prefix="bench_word_kd_"))
    data, teacher = prepare(args, work)
    cache_dir = work / "cache"
    cache_cli.main(cache_cli.get_parser().parse_args(
        [data, "-s", args.source_lang, "-t", args.target_lang, "--teacher-path", teacher, "--out-dir", str(cache_dir),
         "--split", args.split, "--topk", str(args.topk), "--max-tokens", str(args.max_tokens), "--no-progress",
         "--device", args.device, "--dtype", "bf16" if args.bf16 else "fp32"]))

    common = ["--arch", args.student_arch, "--share-all-embeddings", "--criterion", "word_kd",
              "--valid-subset", args.split, "--train-subset", args.split]
    modes = {"ce": ["--kd-alpha", "0"]}
    for T in args.temperatures:
        kd = ["--kd-alpha", "0.5", "--kd-temperature", str(T)]
        modes[f"online_T{T:g}"] = [*kd, "--teacher-path", teacher]
        modes[f"online_top{args.topk}_T{T:g}"] = [*kd, "--teacher-path", teacher, "--kd-topk", str(args.topk)]
        modes[f"cache_T{T:g}"] = [*kd, "--teacher-cache", str(cache_dir), "--teacher-path", teacher]
    comps = build_modes(data, args, common, modes)
    task = comps["ce"][0]
    batches = fixed_batches(task, args)

    def step(name, sample):
        train_step(comps[name], sample, args.bf16)

    online = comps[f"online_T{args.temperatures[0]:g}"]
    teacher_model = online[0].load_teacher()
    times = {name: [] for name in modes}
    times["teacher_forward"] = []
    peak = {name: 0.0 for name in times}
    gpu_peak = {name: 0.0 for name in times}
    tokens = sum(b["ntokens"] for b in batches)  # target tokens per pass over the batches
    for name in modes:  # warm-up
        step(name, batches[0])
    for r in range(args.rounds):
        for name in [*modes, "teacher_forward"]:
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for sample in batches:
                sync(args)
                t = time.perf_counter()
                if name == "teacher_forward":
                    teacher_model.log_probs(online[0].teacher_net_input(sample))
                else:
                    step(name, sample)
                sync(args)
                times[name].append(time.perf_counter() - t)
                peak[name] = max(peak[name], rss_mib())
            if args.device == "cuda":
                gpu_peak[name] = max(gpu_peak[name], torch.cuda.max_memory_allocated() / 2**20)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name in modes:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for sample in batches:
                    step(name, sample)
            print(f"\n### profile: {name} ({len(batches)} steps)")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    med = {name: statistics.median(v) for name, v in times.items()}
    ce, tf = med["ce"], med["teacher_forward"]
    res = {
        "step_seconds": {k: round(v, 4) for k, v in med.items()},
        "ratio_to_ce": {k: round(med[k] / ce, 3) for k in modes},
        "online_budget_ratio": round((ce + 1.1 * tf) / ce, 3),
        "goals": {
            f"{k}: {'<= 1.05x CE' if k.startswith('cache') else '<= CE + 1.1x teacher forward'}":
                med[k] / ce <= 1.05 if k.startswith("cache") else med[k] <= ce + 1.1 * tf
            for k in modes if k != "ce"
        },
        "peak_rss_mib": {k: round(v, 1) for k, v in peak.items()},
        "target_tokens_per_second": {k: round(tokens / (v * len(batches)), 1) for k, v in med.items()},
        "setup": {"data": data, "split": args.split, "batches": len(batches), "max_tokens": args.max_tokens,
                  "student": args.student_arch, "teacher": args.teacher or args.teacher_arch,
                  "topk": args.topk, "temperatures": args.temperatures, "threads": args.threads,
                  "device": args.device, "bf16": args.bf16,
                  "torch": torch.__version__},
    }
    if args.device == "cuda":
        res["peak_gpu_mib"] = {k: round(v, 1) for k, v in gpu_peak.items()}
    tps = res["target_tokens_per_second"]
    print("| mode | step (s) | ratio to CE | target tokens/s | peak GPU MiB |\n|---|---|---|---|---|")
    for k in [*modes, "teacher_forward"]:
        label = "teacher forward alone" if k == "teacher_forward" else k
        gpu = f"{gpu_peak[k]:.0f}" if args.device == "cuda" else "-"
        print(f"| {label} | {med[k]:.4f} | {med[k] / ce:.3f}x | {tps[k]:.0f} | {gpu} |")
    print(f"\nonline budget (CE + 1.1 x teacher forward) = {(ce + 1.1 * tf) / ce:.3f}x CE")
    for goal, ok in res["goals"].items():
        print(f"goal {goal}: {'met' if ok else 'NOT met'}")
    print("peak RSS (MiB, process, cumulative):", res["peak_rss_mib"])
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
