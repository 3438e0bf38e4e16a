"""Benchmark: distilling a training source with fairseq-generate vs fairseq-kd-distill
(fairseq backend) vs fairseq-kd-distill --backend ctranslate2 (int8 on CPU).

All three run in this process, on the same sentences, with the same beam, the same
max length (a * src_len + b), the same batch budget (--max-tokens) and the same
thread budget (--threads). Prints sentences/s as ratios to fairseq-generate and the
BLEU of each output against the gold targets, per wall second and per CPU second of this
process (all its threads): on a shared, loaded machine the CPU time is the stable measure
of the work done (with --threads 1 it equals the wall time of an idle machine).

    python bench/bench_distill.py --teacher CKPT --data-bin DIR [--split train --limit 2000]
    python bench/bench_distill.py            # no teacher given: trains the tiny copy teacher

Goals: fairseq backend >= 1.0x fairseq-generate; ctranslate2 int8 >= 3x with
BLEU within 0.5.
"""
import argparse
import contextlib
import io
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def subset_bin(data_bin: Path, split: str, limit: int, out: Path, src: str, tgt: str) -> Path:
    """The first ``limit`` sentences of ``split`` as a new binarized dir (same dictionaries)."""
    from fairseq.data import data_utils, indexed_dataset

    out.mkdir(parents=True, exist_ok=True)
    for lang in (src, tgt):
        shutil.copyfile(data_bin / f"dict.{lang}.txt", out / f"dict.{lang}.txt")
        prefix = f"{split}.{src}-{tgt}.{lang}"
        ds = data_utils.load_indexed_dataset(str(data_bin / prefix), None, "mmap")
        n = len(ds) if limit <= 0 else min(limit, len(ds))
        b = indexed_dataset.make_builder(str(out / f"{prefix}.bin"), "mmap", vocab_size=100000)
        for i in range(n):
            b.add_item(ds[i].long())
        b.finalize(str(out / f"{prefix}.idx"))
    return out


CPU_SECONDS = {}  # method -> CPU seconds of this process (all its threads) during the last timed call


def fairseq_generate(data_bin, ckpt, split, src, tgt, a):
    """fairseq-generate in-process; hypotheses in id order and the wall time."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import generate as fs_generate

    argv = [str(data_bin), "--user-dir", str(REPO / "fairseq_kd"), "--path", str(ckpt), "--gen-subset", split,
            "--source-lang", src, "--target-lang", tgt, "--beam", str(a.beam if getattr(a, "decoding", "beam") == "beam" else 1),
            "--max-tokens", str(a.max_tokens),
            "--max-len-a", "1.2", "--max-len-b", "10", "--cpu", "--num-workers", "0", "--required-batch-size-multiple", "1"]
    args = options.parse_args_and_arch(options.get_generation_parser(), argv)
    out = io.StringIO()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stderr(io.StringIO()):
        fs_generate._main(convert_namespace_to_omegaconf(args), output_file=out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    CPU_SECONDS["fairseq-generate"] = cpu
    from fairseq_kd.hypotheses import parse_hypotheses

    hyps = parse_hypotheses(out.getvalue())
    return [hyps.get(i, "") for i in range(max(hyps) + 1)], wall


def profiled(name, on, fn, *args):
    """``fn(*args)``, under cProfile when ``on``: prints the functions with the most cumulative time."""
    if not on:
        return fn(*args)
    import cProfile
    import pstats

    prof = cProfile.Profile()
    try:
        return prof.runcall(fn, *args)
    finally:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(18)
        print(f"\n--- profile: {name} ---\n" + "\n".join(out.getvalue().splitlines()[6:40]), file=sys.__stdout__)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", help="teacher checkpoint (default: train the tiny copy teacher)")
    p.add_argument("--data-bin", help="binarized data with the teacher's dictionaries")
    p.add_argument("--split", default="train")
    p.add_argument("--source-lang", default=None)
    p.add_argument("--target-lang", default=None)
    p.add_argument("--limit", type=int, default=2000, help="first N sentences of the split (0 = all)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=4000)
    p.add_argument("--decoding", choices=["beam", "greedy"], default="beam", help="greedy = --beam 1 for fairseq-generate")
    p.add_argument("--ct2-compute-types", default="int8", help="comma-separated CTranslate2 compute types to time")
    p.add_argument("--profile", action="store_true", help="cProfile each method: where the time goes (top functions)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work-dir", default=str(REPO / "work" / "bench_distill"))
    p.add_argument("--json", help="write the results here too")
    a = p.parse_args()

    import sacrebleu
    import torch

    import fairseq_kd  # noqa: F401
    from fairseq_kd.cli import distill
    from fairseq_kd.distill.run import infer_langs
    from fairseq_kd.errors import KDInputError

    torch.set_num_threads(a.threads)
    work = Path(a.work_dir)
    if a.teacher is None:
        from tests import helpers

        root = work / "tiny_teacher"
        if not (root / "teacher" / "checkpoint_last.pt").exists():
            shutil.rmtree(root, ignore_errors=True)
            helpers.make_tiny_teacher(root)
        a.teacher, a.data_bin = str(root / "teacher" / "checkpoint_last.pt"), str(root / "bin")
        print("no --teacher given: benchmarking the tiny copy teacher (tests/helpers.py)")
    src, tgt = infer_langs(a.data_bin, a.split, a.source_lang, a.target_lang)
    data = subset_bin(Path(a.data_bin), a.split, a.limit, work / "subset", src, tgt)
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(str(data / f"dict.{tgt}.txt"))
    gold_ds = data_utils.load_indexed_dataset(str(data / f"{a.split}.{src}-{tgt}.{tgt}"), d, "mmap")
    gold = [d.string(gold_ds[i]) for i in range(len(gold_ds))]
    n = len(gold)

    def bleu(hyps):
        return round(sacrebleu.corpus_bleu(hyps, [gold]).score, 2)

    results = {}
    hyps, wall = profiled("fairseq-generate", a.profile, fairseq_generate, data, a.teacher, a.split, src, tgt, a)
    results["fairseq-generate"] = {"wall_s": round(wall, 2), "sent_per_s": round(n / wall, 1), "bleu": bleu(hyps)}
    methods = [("distill --backend fairseq", [])] + [
        (f"distill --backend ctranslate2 ({ct})", ["--backend", "ctranslate2", "--ct2-compute-type", ct])
        for ct in a.ct2_compute_types.split(",")]
    decoding = ["--decoding", "beam", "--beam", str(a.beam)] if a.decoding == "beam" else ["--decoding", "greedy"]
    for name, extra in methods:
        out = work / ("out_" + (extra[-1] if extra else "fairseq"))
        shutil.rmtree(out, ignore_errors=True)
        if extra:  # convert once before timing (the conversion is cached next to the checkpoint)
            try:
                distill.main(["--data", str(data), "--split", a.split, "--teacher", a.teacher, "-o", str(work / "warm"),
                             "--cpu", "--no-progress", "--overwrite", "--decoding", "greedy", *extra])
            except KDInputError as err:  # e.g. fairseq-kd's own architectures: not convertible
                print(f"{name}: skipped: {err}")
                continue
        argv = ["--data", str(data), "--split", a.split, "--teacher", a.teacher, "-o", str(out), "--cpu",
                "--no-progress", *decoding, "--max-len-a", "1.2", "--max-len-b", "10", "--max-tokens",
                str(a.max_tokens), "--threads", str(a.threads), *extra]
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stderr(io.StringIO()):
            s = profiled(name, a.profile, distill.main, argv)
        wall, CPU_SECONDS[name] = time.perf_counter() - t0, time.process_time() - c0
        from fairseq_kd import fileio

        out_lines = fileio.read_lines(out / f"{a.split}.{tgt}")
        results[name] = {"wall_s": round(wall, 2), "sent_per_s": round(n / wall, 1), "bleu": bleu(out_lines),
                         "decode_sent_per_s": s["sent_per_s"]}
    for name, r in results.items():  # on a shared machine CPU time measures the work; wall time the luck
        r["cpu_s"] = round(CPU_SECONDS[name], 2)
        r["sent_per_cpu_s"] = round(n / CPU_SECONDS[name], 1)
    base = results["fairseq-generate"]["sent_per_s"]
    base_cpu = results["fairseq-generate"]["sent_per_cpu_s"]
    search = f"beam {a.beam}" if a.decoding == "beam" else "greedy"
    print(f"\n{n} sentences, {search}, max len 1.2x+10, --max-tokens {a.max_tokens}, {a.threads} threads, CPU")
    print(f"{'method':40s} {'wall s':>8s} {'sent/s':>8s} {'ratio':>7s} {'CPU s':>8s} {'sent/CPU s':>10s} "
          f"{'ratio':>7s} {'BLEU':>7s}")
    for name, r in results.items():
        r["ratio"] = round(r["sent_per_s"] / base, 2)
        r["cpu_ratio"] = round(r["sent_per_cpu_s"] / base_cpu, 2)
        print(f"{name:40s} {r['wall_s']:8.2f} {r['sent_per_s']:8.1f} {r['ratio']:6.2f}x {r['cpu_s']:8.2f} "
              f"{r['sent_per_cpu_s']:10.1f} {r['cpu_ratio']:6.2f}x {r['bleu']:7.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
