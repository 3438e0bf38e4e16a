"""Where a running study stands, from its files only (safe beside the lanes that write them).

For each cell folder of an out-dir: whether it is recorded in ``results.csv``, the updates reached,
the last and the best validation, how many validations have passed without improvement against the
study's ``--patience`` (fairseq's rule: only a strictly better value resets the count), the update by
which it stops unless it improves again, the training time that leaves at the last logged updates/s
(a lower bound: an improvement moves the stop on; the test decodes come after), and how long ago the
log was last written. The same parser as the study's curves (``logs.parse_train_log``).
"""
import os
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from fairseq_kd import integrity
from fairseq_kd.errors import KDInputError
from fairseq_kd.study.logs import json_records, parse_train_log
from fairseq_kd.study.records import read_csv

Curve = List[Tuple[int, float]]  # (updates, metric) in update order


def patience_runs(curve: Curve, maximize: bool = True) -> Iterator[Tuple[Tuple[int, float], int]]:
    """fairseq's ``should_stop_early`` replayed: after each validation, (the best point so far, the
    validations since it that were not strictly better). Training stops at the first count = patience."""
    best, runs = None, 0
    for n, v in curve:
        if best is None or (v > best[1] if maximize else v < best[1]):
            best, runs = (n, v), 0
        else:
            runs += 1
        yield best, runs


def count_since_best(curve: Curve, maximize: bool = True) -> Tuple[Optional[Tuple[int, float]], int]:
    """``patience_runs`` after the last validation; (None, 0) for an empty curve."""
    last = (None, 0)
    for last in patience_runs(curve, maximize):
        pass
    return last


def checkpoint_best(curve: Sequence[Tuple], maximize: bool = True) -> Tuple:
    """The validation fairseq keeps as ``checkpoint_best.pt``: the best value, a tie going to the later
    update (``(updates, value, ...)`` points, returned whole)."""
    sign = 1 if maximize else -1
    return max(curve, key=lambda p: (sign * p[1], p[0]))


def cell_status(cell_dir: str, settings: Dict, recorded: set, now: Optional[float] = None) -> Dict:
    """One cell's row (see the module doc); ``settings`` is the study's study.json."""
    name = os.path.basename(cell_dir.rstrip("/"))
    log = os.path.join(cell_dir, "train.log")
    row = {"cell": name, "recorded": name in recorded, "trained": os.path.isfile(os.path.join(cell_dir, "train.json")),
           "updates": 0, "last": None, "best": None, "since_best": 0, "stops_by": None, "min_left_s": None,
           "ups": None, "log_age_s": None}
    if not os.path.isfile(log):
        return row
    with open(log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    key = "valid_bleu" if settings.get("best_metric", "bleu") == "bleu" else "valid_loss"
    try:
        info = parse_train_log(text)
        curve = [(n, p[key]) for n, p in info["curve"] if key in p]
        inner = [r for r in json_records(text) if r["_tag"] == "train_inner" and "ups" in r]
        ups = float(inner[-1]["ups"]) if inner else None
    except (ValueError, KeyError, TypeError) as e:
        raise KDInputError(f"{log}: a fairseq log record that is not fairseq's ({type(e).__name__}: {e}); "
                           f"was the log edited? delete the line or the cell to retrain it")
    best, since = count_since_best(curve, maximize=key == "valid_bleu")
    row.update(updates=info["updates"], last=curve[-1] if curve else None, best=best, since_best=since, ups=ups,
               log_age_s=round((now if now is not None else time.time()) - os.path.getmtime(log)))
    patience, interval, cap = (settings[k] for k in ("patience", "validate_interval_updates", "max_update"))
    if curve and patience and interval:  # the validation at which the count reaches the patience
        stop = curve[-1][0] + (patience - since) * interval
        row["stops_by"] = min(stop, cap) if cap else stop
    elif cap:
        row["stops_by"] = cap
    if row["stops_by"] is not None and ups and not row["trained"]:
        row["min_left_s"] = round(max(0, row["stops_by"] - row["updates"]) / ups)
    return row


def _settings(path: str, loaded) -> Dict:
    """The study.json fields the status reads, checked (counts: non-negative integers or null)."""
    if not isinstance(loaded, dict):
        raise KDInputError(f"{path}: not a JSON object; re-run fairseq-kd-study to rewrite it")
    out = {"best_metric": loaded.get("best_metric") or "bleu"}
    for k in ("patience", "validate_interval_updates", "max_update"):
        v = loaded.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise KDInputError(f"{path}: {k} = {v!r} is not a non-negative integer; re-run fairseq-kd-study to "
                               f"rewrite it")
        out[k] = v or 0
    if out["best_metric"] not in ("bleu", "loss"):
        raise KDInputError(f"{path}: best_metric = {out['best_metric']!r}: bleu or loss")
    return out


def study_status(out_dir: str, now: Optional[float] = None) -> List[Dict]:
    """Rows of every cell folder of a study out-dir, in name order."""
    settings_path = os.path.join(out_dir, "study.json")
    if not os.path.isfile(settings_path):
        raise KDInputError(f"{out_dir}: no study.json; pass a fairseq-kd-study --out-dir")
    loaded = integrity.load_json(settings_path, "it is the study's settings file: re-run fairseq-kd-study to rewrite it")
    settings = _settings(settings_path, loaded)
    results = os.path.join(out_dir, "results.csv")
    recorded = {r["cell"] for r in read_csv(results)} if os.path.isfile(results) else set()
    cells = os.path.join(out_dir, "cells")
    names = sorted(os.listdir(cells)) if os.path.isdir(cells) else []
    return [cell_status(os.path.join(cells, n), settings, recorded, now)
            for n in names if os.path.isdir(os.path.join(cells, n))]


def cell_state(r: Dict) -> str:
    if r["recorded"]:
        return "done"
    if r["trained"]:
        return "decoding"
    return "training" if r["log_age_s"] is not None and r["log_age_s"] < 900 else "stopped"


def markdown(rows_by_study: Sequence[Tuple[str, List[Dict]]]) -> str:
    lines = ["| study | cell | state | updates | last valid | best valid | without improvement | stops by | "
             "trains at least | updates/s | log written |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def point(p):
        return "" if p is None else f"{p[1]:.2f} @{p[0]:,}"

    for study, rows in rows_by_study:
        for r in rows:
            age = "" if r["log_age_s"] is None else f"{r['log_age_s'] // 60} min ago"
            stops = "" if r["stops_by"] is None else f"{r['stops_by']:,}"
            ups = "" if r["ups"] is None else f"{r['ups']:g}"
            left = "" if r["min_left_s"] is None else f"{r['min_left_s'] // 60} min"
            lines.append(f"| {study} | {r['cell']} | {cell_state(r)} | {r['updates']:,} | {point(r['last'])} "
                         f"| {point(r['best'])} | {r['since_best']} | {stops} | {left} | {ups} | {age} |")
    return "\n".join(lines) + ("\n\nstate: training = log written in the last 15 min; stopped = an unfinished cell "
                               "whose log is older (resume by re-running the study); best valid = the first "
                               "validation at the best value, which patience counts from (a later tie becomes "
                               "checkpoint_best.pt); stops by = the update at which "
                               "the patience runs out unless validation improves (or the cap); trains at least = the "
                               "updates to that point at the last updates/s (an improvement adds more; the test "
                               "decodes follow).\n")
