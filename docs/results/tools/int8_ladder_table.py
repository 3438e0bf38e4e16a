"""The int8 table of the ladder students from bench/int8_isa.py's JSON files (one per student and
branch, named STUDENT_BRANCH.json with BRANCH float or qat): BLEU of the float branch's float32
export, of its int8 export (8-bit weights) with VNNI and on an AVX2-limited int8 GEMM, of the
int8-aware branch's int8 export on both, and of the float branch's 7-bit-weight int8 export on
the AVX2 path; differences to float32 in parentheses.

Usage: python docs/results/tools/int8_ladder_table.py DIR [--splits valid,test]
"""
import argparse
import json
import os
import sys

from fairseq_kd.cli import run_tool
from fairseq_kd.errors import KDInputError

NATIVE, AVX2 = "native", "avx2 (no VNNI)"
COLUMNS = (("float", "int8", NATIVE), ("qat", "int8", NATIVE), ("float", "int8", AVX2), ("qat", "int8", AVX2),
           ("float", "int8, 7-bit weights", AVX2))


def load(folder: str):
    """{(student, branch): {(export, isa, split): bleu}}."""
    out = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        student, _, branch = stem.rpartition("_")
        if ext != ".json" or branch not in ("float", "qat"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            rows = json.load(f)["rows"]
        out[(student, branch)] = {(r["export"], r["isa"], r["split"]): float(r["bleu"]) for r in rows}
    if not out:
        raise KDInputError(f"{folder}: no STUDENT_float.json / STUDENT_qat.json written by bench/int8_isa.py")
    return out


def table(runs, splits) -> str:
    head = ("| student | split | float32 | int8, VNNI | int8, VNNI, int8-aware | int8, no VNNI | "
            "int8, no VNNI, int8-aware | int8 7-bit weights, no VNNI |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for student in dict.fromkeys(s for s, _ in runs):
        if (student, "float") not in runs or (student, "qat") not in runs:
            continue
        for split in splits:
            f32 = runs[(student, "float")].get(("float32", NATIVE, split))
            cells = []
            for branch, export, isa in COLUMNS:
                v = runs[(student, branch)].get((export, isa, split))
                cells.append("" if v is None or f32 is None else f"{v:.2f} ({v - f32:+.2f})")
            lines.append(f"| {student} | {split} | {f32:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--splits", default="valid,test")
    args = ap.parse_args(argv)
    print(table(load(args.folder), args.splits.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("int8_ladder_table", main)[0])
