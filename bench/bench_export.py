"""Benchmark: student inference with fairseq-generate vs its CTranslate2 export (float32, int8).

For each student (three capacity-ladder sizes and one pruned adaptive-capacity model, briefly
trained on Multi30k unless --checkpoint NAME=CKPT is given), decodes test_2016_flickr with
the same beam, max length (1.2 x src + 10), batch budget (--max-tokens) and thread budget
(--threads), all in this process, and prints sentences/s (including model loading, for
both) per wall second and per CPU second of this process (the stable measure on a shared
machine) as ratios to fairseq-generate, and sacrebleu BLEU against the raw reference
(detokenized with the data's sentencepiece model).

    python bench/bench_export.py --data-dir ../shared/data/multi30k --work-dir exp/bench_export
    python bench/bench_export.py --prepared exp/m30k --checkpoint relu3m=exp/s/checkpoint_last.pt

Students are trained with ``nice -n 5`` (the machine is shared); --updates sets their budget.
A student trains into ``WORK/NAME.partial`` (emptied first), which becomes ``WORK/NAME`` (``NAME_UPDATESu``
for a budget other than its default) only when fairseq-train exited 0 with the checkpoint at the budget;
``trained.json`` there records the training command and the checkpoint's sha256. A rerun reuses a student
only when that record equals this run's recipe and the checkpoint is unchanged, and refuses a directory
without it (trained before the record, or by hand). The data is prepared by ``prepare_multi30k.sh`` on
every run, whose settings check refuses another --vocab-size in the same directory.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
BIN = Path(sys.executable).parent

# name -> (arch, extra training args, default updates); the vocabulary is the prepared data's.
# Recipe chosen on Multi30k valid (greedy BLEU after 300 updates, lr 0.003, warmup 100, 1 thread):
# post-norm glu_3m 0.6 (it ignored the source: one output for every sentence), post-norm
# relu_3m 5.8, pre-norm glu_3m 14.8, pre-norm glu_9m 14.9; so the ladder students train pre-norm. Pre-norm
# glu_20m at lr 0.003 gave 3.1 (three distinct outputs): it trains at lr 0.001.
PRE_NORM = ["--encoder-normalize-before", "--decoder-normalize-before"]
STUDENTS = {
    "glu_3m": ("transformer_glu_3m", PRE_NORM, 300),
    "glu_9m": ("transformer_glu_9m", PRE_NORM, 300),
    "glu_20m": ("transformer_glu_20m", [*PRE_NORM, "--lr", "0.001"], 300),  # at lr 0.003 it ignored the source
    # the capacity penalty is added by fairseq-kd's criteria, so this one trains with word_kd at alpha 0
    # (label-smoothed CE plus the penalty); stock label_smoothed_cross_entropy would ignore it
    "glu_3m_pruned": ("transformer_glu_3m", [*PRE_NORM, "--task", "kd_translation", "--criterion", "word_kd",
                                             "--kd-alpha", "0", "--adaptive-capacity", "--capacity-penalty", "1.0",
                                             "--capacity-init-keep", "0.5", "--capacity-gate-lr-scale", "100"], 300),
}


def sh(cmd, log=None, nice=True):
    """Run ``cmd`` (under ``nice -n 5``); with ``log`` its output streams there, else it is returned."""
    cmd = (["nice", "-n", "5"] if nice else []) + [str(c) for c in cmd]
    if log is not None:
        with open(log, "w") as f:
            res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            raise SystemExit(f"failed: {' '.join(cmd)} (see {log})")
        return res
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    return res


def prepare(data_dir: Path, out: Path, vocab: int) -> Path:
    """``prepare_multi30k.sh`` into ``out``, on every run: each of its stages is skipped when done, and it
    refuses a directory prepared with other settings (another --vocab-size), which a check of its outputs
    alone would reuse."""
    sh(["bash", REPO / "data_prep/prepare_multi30k.sh", "--data-dir", data_dir, "--out-dir", out,
        "--vocab-size", str(vocab)])
    return out


def train_command(prepared: Path, name: str, updates: int, save: Path) -> list:
    """bench_export's recipe for student ``name`` as a fairseq-train command (``updates`` updates into ``save``)."""
    arch, extra, _ = STUDENTS[name]
    return [BIN / "fairseq-train", prepared / "bin", "--user-dir", REPO / "fairseq_kd", "--task", "translation",
            "-s", "de", "-t", "en", "--arch", arch, "--share-all-embeddings",
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", str(max(updates // 3, 1)), "--criterion", "label_smoothed_cross_entropy",
            "--label-smoothing", "0.1", "--dropout", "0.1", "--max-tokens", "4096", "--max-update", str(updates),
            "--save-dir", save, "--no-epoch-checkpoints", "--disable-validation", "--cpu", "--num-workers", "0",
            "--seed", "1", "--log-format", "json", "--log-interval", "10", "--required-batch-size-multiple", "1",
            *extra]  # last, so that --task / --criterion of a student override the defaults


MARKER = "trained.json"  # written last into a finished training directory


def recipe(cmd: list) -> list:
    """A training command as recorded in ``trained.json``: its arguments as strings, without the executable's
    path, with this checkout's path as ``<repo>`` (the save dir is given as ``SAVE`` by the callers)."""
    return [str(c).replace(str(REPO), "<repo>") for c in cmd[1:]]


def checkpoint_updates(ckpt: Path) -> int:
    """The number of updates a fairseq checkpoint was saved at."""
    from fairseq_kd import checkpoint_safety

    return int(checkpoint_safety.load_checkpoint(str(ckpt))["optimizer_history"][-1]["num_updates"])


def trained(save: Path, settings: dict, updates: int, train, ckpt_name: str = "checkpoint_last.pt") -> Path:
    """``save / ckpt_name`` of a finished training made with ``settings`` (JSON-able; the recipe), trained
    now when ``save`` is absent: ``train(dir)`` trains into ``save.partial`` (emptied first), which becomes
    ``save`` only when its ``checkpoint_last.pt`` is at ``updates`` updates, with ``trained.json`` (the
    settings, the update count and the checkpoint's sha256) written last. An existing ``save`` is reused only
    when its record equals ``settings`` and the checkpoint is unchanged; else this refuses (it is never
    replaced: its models may be the ones published results name)."""
    from fairseq_kd import fileio, integrity
    from fairseq_kd.fingerprint import file_sha256

    marker = save / MARKER
    if save.exists():
        if not marker.is_file():
            raise SystemExit(f"{save} exists without {MARKER}: its training was cut short, or it was trained "
                             f"before this script recorded the settings of a finished training (or by hand). "
                             f"Delete it to train it again, or use another --work-dir")
        record = integrity.load_json(str(marker), f"delete {save} to train it again")
        if record.get("settings") != settings:
            raise SystemExit(f"{save} was trained with other settings:\n"
                             f"  recorded: {json.dumps(record.get('settings'))}\n  now:      {json.dumps(settings)}\n"
                             f"fix: use another --work-dir, or delete {save} to train it again")
        ckpt = save / "checkpoint_last.pt"
        if not ckpt.is_file() or file_sha256(str(ckpt)) != record.get("checkpoint_sha256"):
            raise SystemExit(f"{ckpt} is missing or is not the checkpoint {marker} records (changed after its "
                             f"training): delete {save} to train it again")
        if not (save / ckpt_name).is_file():
            raise SystemExit(f"{save / ckpt_name} is missing: delete {save} to train it again")
        return save / ckpt_name
    partial = save.with_name(save.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # a killed run's: trained again from the start
    train(partial)
    ckpt = partial / "checkpoint_last.pt"
    got = checkpoint_updates(ckpt)
    if got != updates:
        raise SystemExit(f"{ckpt}: fairseq-train stopped at {got} updates, not the {updates} asked for "
                         f"(left in {partial}, not reused)")
    fileio.atomic_write_json(partial / MARKER, {"settings": settings, "num_updates": got,
                                                "checkpoint_sha256": file_sha256(str(ckpt))})
    os.replace(partial, save)
    return save / ckpt_name


def train_dir(work: Path, name: str, updates: int) -> Path:
    """Where student ``name`` trained for ``updates`` updates lives (its default budget: ``WORK/NAME``)."""
    return work / (name if updates == STUDENTS[name][2] else f"{name}_{updates}u")


def train_student(prepared: Path, work: Path, name: str, updates: int = 0) -> Path:
    """Student ``name`` trained by this recipe for ``updates`` updates (0: its default), pruned when it is
    the adaptive-capacity model: reused when finished with the same settings (``trained``)."""
    _, extra, default_updates = STUDENTS[name]
    updates = updates or default_updates
    adaptive = "--adaptive-capacity" in extra
    settings = {"student": name, "updates": updates,
                "command": recipe(train_command(Path(prepared).resolve(), name, updates, Path("SAVE")))}

    final = train_dir(work, name, updates)

    def train(save: Path):
        sh(train_command(prepared, name, updates, save), log=work / f"{final.name}.train.log")
        if adaptive:  # pruned inside the training directory, so that a finished one holds both
            res = sh([BIN / "fairseq-kd-prune", "-i", save / "checkpoint_last.pt", "-o", save / "pruned.pt",
                      "--json", "--quiet"])
            (save / "prune.json").write_text(res.stdout)

    return trained(final, settings, updates, train,
                   "pruned.pt" if adaptive else "checkpoint_last.pt")


def bench_student(name: str, ckpt: Path, prepared: Path, a) -> list:
    import sentencepiece as spm
    import torch

    from bench_distill import CPU_SECONDS, fairseq_generate, subset_bin
    from fairseq_kd import scoring
    from fairseq_kd.export.evaluate import ensure_export, split_sources, translate_timed

    refs = scoring.read_lines(str(prepared / "raw" / "test.en"))
    data_bin = prepared / "bin"
    if a.limit:  # the first N test sentences
        refs = refs[: a.limit]
        data_bin = subset_bin(prepared / "bin", "test", a.limit, Path(a.work_dir) / f"test{a.limit}", "de", "en")
    sp = spm.SentencePieceProcessor(model_file=str(prepared / "spm.model"))
    n = len(refs)

    def bleu(hyps):
        return round(scoring.score_lines(hyps, [refs], scoring.ScoreConfig(metrics=("bleu",)))["bleu"]["score"], 2)

    torch.set_num_threads(a.threads)
    params, seen = 0, set()  # unique tensors: shared embeddings count once
    for k, v in torch.load(ckpt, map_location="cpu", weights_only=True)["model"].items():
        if "gate" not in k and v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            params += v.numel()
    rows = []
    pieces, wall = fairseq_generate(data_bin, ckpt, "test", "de", "en", a)
    cpu = CPU_SECONDS["fairseq-generate"]
    rows.append({"student": name, "params": params, "method": "fairseq-generate", "wall_s": round(wall, 2),
                 "sent_per_s": round(n / wall, 1), "cpu_s": round(cpu, 2), "sent_per_cpu_s": round(n / cpu, 1),
                 "bleu": bleu([sp.decode(p.split()) for p in pieces])})
    sources = split_sources(str(data_bin), "test")
    for quant in ("none", "int8"):
        model_dir = ensure_export(str(ckpt), quant, data=str(prepared / "bin"), spm_model=str(prepared / "spm.model"))
        t0, c0 = time.perf_counter(), time.process_time()
        out, _ = translate_timed(model_dir, sources, beam=a.beam, threads=a.threads, max_tokens=a.max_tokens)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0  # with the model load, as fairseq-generate's
        rows.append({"student": name, "params": params, "method": f"ctranslate2 {'float32' if quant == 'none' else quant}",
                     "wall_s": round(wall, 2), "sent_per_s": round(n / wall, 1), "cpu_s": round(cpu, 2),
                     "sent_per_cpu_s": round(n / cpu, 1), "bleu": bleu([sp.decode(p) for p in out])})
    for r in rows:
        r["ratio"] = round(r["sent_per_s"] / rows[0]["sent_per_s"], 2)
        r["cpu_ratio"] = round(r["sent_per_cpu_s"] / rows[0]["sent_per_cpu_s"], 2)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "multi30k"), help="raw Multi30k")
    p.add_argument("--prepared", default=None, help="a prepare_multi30k.sh output dir to reuse (bin/, spm.model, raw/)")
    p.add_argument("--work-dir", default=str(REPO / "exp" / "bench_export"))
    p.add_argument("--vocab-size", type=int, default=4000)
    p.add_argument("--students", default=",".join(STUDENTS), help=f"comma-separated subset of {', '.join(STUDENTS)}")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=CKPT",
                   help="benchmark this checkpoint instead of training (repeatable; the data must match)")
    p.add_argument("--updates", type=int, default=0, help="training budget of every student (0 = each one's default)")
    p.add_argument("--budget", action="append", default=[], metavar="NAME=UPDATES",
                   help="training budget of one student (repeatable; overrides --updates)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--limit", type=int, default=0, help="first N sentences of test_2016_flickr (0 = all 1,000)")
    p.add_argument("--max-tokens", type=int, default=4000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args()

    import fairseq_kd  # noqa: F401

    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    prepared = Path(a.prepared) if a.prepared else prepare(Path(a.data_dir), work / "m30k", a.vocab_size)
    todo = [item.partition("=")[::2] for item in a.checkpoint] or [(name, None) for name in a.students.split(",")]
    rows = []
    for name, ckpt in todo:  # train (unless given) and time one student after the other
        if ckpt is None:
            t0 = time.time()
            budgets = {k: int(v) for k, _, v in (b.partition("=") for b in a.budget)}
            ckpt = train_student(prepared, work, name, budgets.get(name, a.updates))
            print(f"{name}: {ckpt} ({time.time() - t0:.0f} s)", flush=True)
        rows += bench_student(name, Path(ckpt), prepared, a)
        print(json.dumps(rows[-3:]), flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\ntest_2016_flickr ({a.limit or 1000} sentences), beam {a.beam}, max len 1.2x+10, "
          f"--max-tokens {a.max_tokens}, {a.threads} threads, CPU; wall includes model loading")
    print("| student | params | method | wall s | sent/s | ratio | CPU s | sent/CPU s | ratio (CPU) | BLEU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['student']} | {r['params']:,} | {r['method']} | {r['wall_s']:.2f} | {r['sent_per_s']:.1f} | "
              f"{r['ratio']:.2f}x | {r['cpu_s']:.2f} | {r['sent_per_cpu_s']:.1f} | {r['cpu_ratio']:.2f}x | {r['bleu']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
