"""int8-aware fine-tuning of the capacity-ladder students: float32 / int8 before / int8 after.

For each student of ``bench_export.STUDENTS`` (glu_3m, glu_9m, glu_20m and the pruned adaptive
glu_3m), trained by bench_export's recipe for its budget (300 updates), training continues twice
from the same checkpoint, with the same batches, for ``--more-updates`` updates:

* ``float``: the control; its int8 export is what one ships without int8-aware training ("int8 before");
* ``qat``: the same updates with ``--int8-qat-updates`` (all of them int8-simulated: "int8 after").

The pruned model is fine-tuned after ``fairseq-kd-prune`` (``--reset-optimizer``; a fixed learning
rate equal to inverse-sqrt's at the base's last update), both branches alike. Every branch is
exported to CTranslate2 (float32 and int8) and decoded with beam 5 on valid and test
(``fairseq_kd.export.evaluate.evaluate_export``: fairseq's search rules, sacreBLEU); rows (student x
branch x quantization x split, with decoding sentences/s at ``--threads``) go to ``--json``,
rewritten atomically after each row. A rerun reuses a base or branch only when its training finished with the
same settings (``bench_export.trained``: ``trained.json`` records the command, and a branch's the base
checkpoint's sha256) and skips a row only when it was made from the same branch checkpoint (its sha256)
with the same ``--more-updates``. Branches live in ``WORK/STUDENT_BRANCH``, or
``WORK/STUDENT_BRANCH_Nmore`` for a ``--more-updates N`` other than 100.

    python bench/qat_ladder.py --prepared exp/m30k --work-dir exp/qat_ladder \\
        --json docs/results/qat_ladder.json
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_export import STUDENTS, recipe, sh, train_command, trained, train_student  # noqa: E402

BRANCHES = ("float", "qat")
MORE_UPDATES = 100  # the default --more-updates (its branches keep the plain directory names)


def pruned_widths(pruned: Path) -> list:
    """``--encoder-ffn-widths W --decoder-ffn-widths W`` of a fairseq-kd-prune output."""
    import torch

    state = torch.load(str(pruned), map_location="cpu", weights_only=False)
    margs = state["cfg"]["model"] if state.get("cfg") is not None else state["args"]
    get = (lambda k: getattr(margs, k)) if isinstance(margs, argparse.Namespace) else margs.get
    return ["--encoder-ffn-widths", str(get("encoder_ffn_widths")), "--decoder-ffn-widths", str(get("decoder_ffn_widths"))]


def branch_command(prepared: Path, name: str, base: Path, save: Path, branch: str, a) -> list:
    """Continue ``base`` for ``a.more_updates`` updates into ``save``, int8-simulated when ``branch == "qat"``."""
    arch, extra, updates = STUDENTS[name]
    if "--adaptive-capacity" in extra:  # the pruned model: a gate-free glu with per-layer widths, new optimizer
        cmd = train_command(prepared, "glu_3m", a.more_updates, save)
        lr = 0.003 * math.sqrt(max(updates // 3, 1) / updates)  # inverse_sqrt's rate at the base's last update
        cmd += [*pruned_widths(base), "--lr-scheduler", "fixed", "--lr", f"{lr:.6g}", "--warmup-updates", "0",
                "--reset-optimizer", "--reset-lr-scheduler", "--reset-dataloader", "--reset-meters"]
        budget = a.more_updates
    else:
        budget = updates + a.more_updates
        cmd = train_command(prepared, name, budget, save)
        cmd += ["--warmup-updates", str(max(updates // 3, 1))]  # the base's schedule, continued
    cmd += ["--task", "kd_translation", "--max-update", str(budget), "--restore-file", base]
    if branch == "qat":
        cmd += ["--int8-qat-updates", str(a.more_updates)]
    return cmd


def branch_updates(name: str, a) -> int:
    """The update count a finished branch's checkpoint is at (the pruned model's optimizer starts afresh)."""
    _, extra, updates = STUDENTS[name]
    return a.more_updates if "--adaptive-capacity" in extra else updates + a.more_updates


def branch_dir(work: Path, name: str, branch: str, a) -> Path:
    suffix = "" if a.more_updates == MORE_UPDATES else f"_{a.more_updates}more"
    return work / f"{name}_{branch}{suffix}"


def train_branch(prepared: Path, work: Path, name: str, base: Path, branch: str, a) -> Path:
    """The branch's ``checkpoint_last.pt``: trained unless finished with the same command from the same base
    checkpoint (bytes) and ``--more-updates`` (``bench_export.trained``)."""
    from fairseq_kd.fingerprint import file_sha256

    final = branch_dir(work, name, branch, a)
    settings = {"student": name, "branch": branch, "more_updates": a.more_updates,
                "base_sha256": file_sha256(str(base)),
                "command": recipe(branch_command(Path(prepared).resolve(), name, Path(base).resolve(), Path("SAVE"),
                                                 branch, a))}

    def train(save: Path):
        t0 = time.time()
        sh(branch_command(prepared, name, base, save, branch, a), log=work / f"{final.name}.train.log")
        print(f"{name}: {branch} trained ({time.time() - t0:.0f} s)", flush=True)

    return trained(final, settings, branch_updates(name, a), train)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prepared", required=True, help="prepare_multi30k.sh output (bin/, raw/, spm.model)")
    p.add_argument("--work-dir", required=True)
    p.add_argument("--students", default=",".join(STUDENTS), help=f"comma-separated subset of {', '.join(STUDENTS)}")
    p.add_argument("--more-updates", type=int, default=MORE_UPDATES, help="updates of each branch after the base")
    p.add_argument("--splits", default="valid,test")
    p.add_argument("--threads", type=int, default=1, help="CTranslate2 threads when decoding")
    p.add_argument("--json", required=True, help="rows (rewritten atomically after each)")
    a = p.parse_args()

    from fairseq_kd import fileio
    from fairseq_kd.export.evaluate import evaluate_export
    from fairseq_kd.fingerprint import file_sha256

    prepared, work = Path(a.prepared), Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(a.json)
    rows = json.loads(out.read_text()) if out.exists() else []

    def key(r):
        return r["student"], r["branch"], r["quantization"], r["split"], r.get("updates_after_base")

    for name in a.students.split(","):
        t0 = time.time()
        base = train_student(prepared, work, name)
        print(f"{name}: base {base} ({time.time() - t0:.0f} s)", flush=True)
        for branch in BRANCHES:
            ckpt = train_branch(prepared, work, name, base, branch, a)
            save, digest = ckpt.parent, file_sha256(str(ckpt))
            for quantization in ("none", "int8"):
                for split in a.splits.split(","):
                    row_key = (name, branch, quantization, split, a.more_updates)
                    if any(key(r) == row_key and r.get("checkpoint_sha256") == digest for r in rows):
                        continue  # made from this very checkpoint
                    res = evaluate_export(str(ckpt), str(prepared / "bin"), str(prepared / "raw" / f"{split}.en"),
                                          split=split, beam=5, quantization=quantization, threads=a.threads,
                                          spm_model=str(prepared / "spm.model"),
                                          hyp_file=str(save / f"{split}.{quantization}.en"))
                    res.pop("export_dir")
                    row = {"student": name, "branch": branch, "split": split, "updates_after_base": a.more_updates,
                           "checkpoint": str(ckpt), "checkpoint_sha256": digest, **res}
                    rows = [r for r in rows if key(r) != row_key] + [row]  # a row of another checkpoint: replaced
                    fileio.atomic_write_json(out, rows)
                    print(json.dumps(row), flush=True)
    print(table([r for r in rows if r.get("updates_after_base") == a.more_updates]))


def table(rows) -> str:
    """float32 / int8 before / int8 after per student and split (BLEU; int8 decoding sent/s)."""
    at = {(r["student"], r["branch"], r["quantization"], r["split"]): r for r in rows}
    lines = ["| student | split | float32 | int8 before | Δ | int8 after (QAT) | Δ | QAT float32 | int8 sent/s before / after |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in dict.fromkeys(r["student"] for r in rows):
        for split in dict.fromkeys(r["split"] for r in rows):
            f, b, q, qf = (at.get((name, br, qu, split)) for br, qu in
                           (("float", "none"), ("float", "int8"), ("qat", "int8"), ("qat", "none")))
            if not (f and b and q and qf):
                continue
            lines.append(f"| {name} | {split} | {f['bleu']:.2f} | {b['bleu']:.2f} | {b['bleu'] - f['bleu']:+.2f} | "
                         f"{q['bleu']:.2f} | {q['bleu'] - f['bleu']:+.2f} | {qf['bleu']:.2f} | "
                         f"{b['sent_per_s']:.0f} / {q['sent_per_s']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
