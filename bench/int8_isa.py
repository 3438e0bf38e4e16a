"""int8 BLEU by CPU instruction set: 8-bit vs 7-bit weights (``fairseq-kd-export --int8-weight-bits``).

Exports a checkpoint three times (float32, int8, int8 with 7-bit weights) and translates a split with
CTranslate2 (beam 5, ``fairseq-kd-translate``) natively and with the int8 GEMM limited to AVX2, as on a
CPU without VNNI: ``CT2_USE_MKL=0`` (oneDNN) with ``ONEDNN_MAX_CPU_ISA=AVX2`` and
``CT2_FORCE_CPU_ISA=AVX2``, each in its own process (both are read when the library loads). Prints a
markdown table of sacreBLEU per (weights, ISA) and writes the rows to ``--json``. Each export lives in
``WORK/FLAVOUR-KEY``, KEY being ``export.convert.conversion_key`` of the checkpoint's bytes, the --data-bin
dictionaries, the sentencepiece model and the export flags, and is reused only when complete
(``export.convert.export_complete``): another checkpoint in the same --work-dir is exported anew.

    python bench/int8_isa.py exp/qat_ladder/glu_3m_pruned/pruned.pt --data-bin exp/m30k/bin \\
        --raw exp/m30k/raw --splits valid,test --work-dir exp/int8_isa --json docs/results/int8_isa.json
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ISAS = {"native": {}, "avx2 (no VNNI)": {"CT2_USE_MKL": "0", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                         "DNNL_MAX_CPU_ISA": "AVX2", "CT2_FORCE_CPU_ISA": "AVX2"}}
EXPORTS = {"float32": ["--quantization", "none"], "int8": ["--quantization", "int8"],
           "int8, 7-bit weights": ["--quantization", "int8", "--int8-weight-bits", "7"]}


def run(cmd, env=None, stderr=False):
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{res.stderr[-2000:]}")
    return res.stderr if stderr else res.stdout


def export_dir(work: Path, name: str, flags: list, checkpoint: str, data_bin: str, src: str, tgt: str,
               spm: str) -> Path:
    """The directory of flavour ``name``'s export of ``checkpoint``: named by everything it is made of."""
    from fairseq.data import Dictionary

    from fairseq_kd.export.convert import conversion_key
    from fairseq_kd.fingerprint import file_sha256

    dicts = [Dictionary.load(str(Path(data_bin) / f"dict.{lang}.txt")) for lang in (src, tgt)]
    key = conversion_key(file_sha256(checkpoint), *dicts, file_sha256(spm) if os.path.isfile(spm) else None,
                         " ".join(flags))
    return work / f"{name.replace(', ', '_').replace(' ', '_')}-{key[:16]}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data-bin", required=True)
    p.add_argument("--raw", required=True, help="dir of the raw SPLIT.{src,tgt} files")
    p.add_argument("-s", "--source-lang", default="de")
    p.add_argument("-t", "--target-lang", default="en")
    p.add_argument("--spm-model", default=None, help="default: spm.model beside the data dir")
    p.add_argument("--splits", default="valid,test")
    p.add_argument("--work-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    spm = a.spm_model or str(Path(a.data_bin).parent / "spm.model")
    from fairseq_kd.export.convert import export_complete
    from fairseq_kd.fingerprint import file_sha256

    rows = []
    for name, flags in EXPORTS.items():
        out = export_dir(work, name, flags, a.checkpoint, a.data_bin, a.source_lang, a.target_lang, spm)
        if not export_complete(str(out)):  # absent, or cut short
            run([BIN / "fairseq-kd-export", a.checkpoint, out, "--data", a.data_bin, "--spm-model", spm,
                 "--force", *flags])
        for isa, env in ISAS.items():
            if name == "float32" and isa != "native":
                continue  # float32 does not use the int8 GEMM
            for split in a.splits.split(","):
                hyp = work / f"{out.name}.{split}.{isa.split()[0]}.{a.target_lang}"  # beside the model, not in it
                compute = "float32" if name == "float32" else "int8"
                err = run([BIN / "fairseq-kd-translate", out, "-i", Path(a.raw) / f"{split}.{a.source_lang}", "-o", hyp,
                           "--beam", "5", "--compute-type", compute, "--threads", a.threads, "--no-progress",
                           "--summary"], env, stderr=True)
                summary = json.loads(err.strip().splitlines()[-1])  # decoding time, model loading excluded
                score = json.loads(run([BIN / "fairseq-kd-score", "-r", Path(a.raw) / f"{split}.{a.target_lang}",
                                        "-i", hyp, "--metrics", "bleu", "--format", "json"]))
                rows.append({"export": name, "isa": isa, "split": split, "bleu": round(score["bleu"]["score"], 2),
                             "signature": score["bleu"]["signature"], "env": env, "threads": a.threads,
                             "sent_per_s": summary["sent_per_s"], "seconds": summary["seconds"]})
                print(json.dumps(rows[-1]), flush=True)
    print("| export | ISA of the int8 GEMM | " + " | ".join(a.splits.split(",")) + " |")
    print("|---|---|" + "---:|" * len(a.splits.split(",")))
    for name in EXPORTS:
        for isa in ISAS:
            got = {r["split"]: r["bleu"] for r in rows if r["export"] == name and r["isa"] == isa}
            if got:
                print(f"| {name} | {isa} | " + " | ".join(f"{got[s]:.2f}" for s in a.splits.split(",")) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"checkpoint": a.checkpoint, "checkpoint_sha256": file_sha256(a.checkpoint),
                                            "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
