"""exp/studies/capacity_all: the capacity study's rows plus the main study's none / word / seq rows
(seeds 1 2), whose student (the shrunk post-norm relu_3m, 1.31M) is the ladder's ~1M point; that arch
is renamed transformer_relu_3m_shrunk so it does not merge with the 2.3M full rung of the same name."""
import json, os, shutil, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from fairseq_kd.study.config import RESULT_FIELDS, CURVE_FIELDS
from fairseq_kd.study.records import read_csv, write_csv_atomic
CAP, MAIN, DST = "exp/studies/capacity", "exp/main/study", "exp/studies/capacity_all"
os.makedirs(DST, exist_ok=True)
for name, src in (("cells", CAP + "/cells"), ("cells_main", MAIN + "/cells")):
    link = os.path.join(DST, name)
    if not os.path.lexists(link):
        os.symlink(os.path.relpath(src, DST), link)
keep = lambda r: r["method"] in ("none", "word", "seq") and r["seed"] in ("1", "2") and float(r["noise"]) == 0
def shrunk(rows, results):
    out = []
    for r in rows:
        if keep(r):
            r = dict(r, arch="transformer_relu_3m_shrunk")
            if results:
                r["hyp"] = r["hyp"].replace("cells/", "cells_main/", 1)
            out.append(r)
    return out
res = shrunk(read_csv(MAIN + "/results.csv"), True) + read_csv(CAP + "/results.csv")
cur = shrunk(read_csv(MAIN + "/curves.csv"), False) + read_csv(CAP + "/curves.csv")
write_csv_atomic(DST + "/results.csv", res, list(RESULT_FIELDS))
write_csv_atomic(DST + "/curves.csv", cur, list(CURVE_FIELDS))
shutil.copy(CAP + "/study.json", DST + "/study.json")
print(len(res), "rows in", DST)
