"""Seed a noise study's out-dir with the main study's noise-0 cells of none / word / seq, seeds 1 2
(the same teacher, data, student and settings: noise 0 is the main study's cell): rows copied,
cell dirs symlinked. Usage: python import_noise0.py exp/studies/noise_all"""
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from fairseq_kd.study.config import RESULT_FIELDS, CURVE_FIELDS
from fairseq_kd.study.records import read_csv, write_csv_atomic
SRC, DST = "exp/main/study", sys.argv[1]
os.makedirs(DST + "/cells", exist_ok=True)
keep = lambda r: r["method"] in ("none", "word", "seq") and r["seed"] in ("1", "2") and float(r["noise"]) == 0
res = [r for r in read_csv(SRC + "/results.csv") if keep(r)]
for r in res:
    link = os.path.join(DST, "cells", r["cell"])
    if not os.path.lexists(link):
        os.symlink(os.path.relpath(os.path.join(SRC, "cells", r["cell"]), os.path.dirname(link)), link)
cur = [r for r in read_csv(SRC + "/curves.csv") if keep(r)]
if not os.path.exists(DST + "/results.csv"):
    write_csv_atomic(DST + "/results.csv", res, list(RESULT_FIELDS))
    write_csv_atomic(DST + "/curves.csv", cur, list(CURVE_FIELDS))
print(len(res), "result rows,", len(cur), "curve rows imported into", DST)
