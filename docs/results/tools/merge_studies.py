"""Merge study out-dirs that ran side by side (e.g. one seed each, in two lanes: two processes never
share one results.csv) into one for fairseq-kd-report: the union of their results / curves rows
(a cell's row kept once, first source wins), every cell dir symlinked into DST/cells, study.json
of the first. Usage: python merge_studies.py DST SRC1 SRC2 ..."""
import os, shutil, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from fairseq_kd.study.config import CURVE_FIELDS, KEY_FIELDS, RESULT_FIELDS
from fairseq_kd.study.records import read_csv, write_csv_atomic

dst, srcs = sys.argv[1], sys.argv[2:]
if not srcs:
    sys.exit("usage: merge_studies.py DST SRC1 [SRC2 ...]")
os.makedirs(os.path.join(dst, "cells"), exist_ok=True)
res, cur, seen_r, seen_c = [], [], set(), set()
for src in srcs:
    for r in read_csv(os.path.join(src, "results.csv")):
        if (r["cell"], r["search"]) not in seen_r:
            seen_r.add((r["cell"], r["search"]))
            res.append(r)
            link = os.path.join(dst, "cells", r["cell"])
            if not os.path.lexists(link):
                os.symlink(os.path.realpath(os.path.join(src, "cells", r["cell"])), link)
    for r in read_csv(os.path.join(src, "curves.csv")):
        key = tuple(r[k] for k in (*KEY_FIELDS, "updates"))
        if key not in seen_c:
            seen_c.add(key)
            cur.append(r)
write_csv_atomic(os.path.join(dst, "results.csv"), res, list(RESULT_FIELDS))
write_csv_atomic(os.path.join(dst, "curves.csv"), cur, list(CURVE_FIELDS))
shutil.copy(os.path.join(srcs[0], "study.json"), os.path.join(dst, "study.json"))
print(len(res), "result rows,", len(cur), "curve rows in", dst)
