"""Reading what the tools logged: fairseq's ``--log-format json`` records, generate's ``H-`` lines.

fairseq-train with ``--log-format json`` logs one JSON object per record: ``train_inner``
records (every ``--log-interval`` updates: ``loss``, ``num_updates``, ...), ``train`` epoch
summaries (keys prefixed ``train_``) and validations (keys prefixed ``valid_``: ``valid_loss``,
``valid_bleu``, ``valid_num_updates``, ``valid_best_loss``). Each log line is
``<time> | <level> | <logger name> | {json}``, in a subprocess's output or in the file the
in-process runner writes.
"""
import json
import re
import shlex
from typing import Dict, List

from fairseq_kd import fileio

RUN_HEADER = "$ "  # starts the line written before each run appended to a log (``run_header``)

_PARAMS = re.compile(r"num\. shared model params: ([\d,]+)")
_RECORD = re.compile(r"\| (train_inner|train|valid) \| (\{.*\})\s*$")


def json_records(text: str) -> List[Dict]:
    """fairseq's JSON log records in order, each with its logger name under ``"_tag"``."""
    out = []
    for line in fileio.split_lines(text):
        m = _RECORD.search(line)
        if not m:
            continue
        try:
            record = json.loads(m.group(2))
        except json.JSONDecodeError:
            continue  # an interleaved or truncated line
        record["_tag"] = m.group(1)
        out.append(record)
    return out


def _num(x) -> float:
    return float(x)


def parse_train_log(text: str) -> Dict:
    """Parameters, last update, per-interval training losses and the validation curve of a fairseq-train log."""
    params = _PARAMS.findall(text)
    updates = 0
    losses: List[List[float]] = []  # [num_updates, loss] of each train_inner record
    curve: Dict[int, Dict[str, float]] = {}
    for rec in json_records(text):
        if rec["_tag"] == "train_inner":
            n = int(_num(rec["num_updates"]))
            losses.append([n, _num(rec["loss"])])
            updates = max(updates, n)
        elif rec["_tag"] == "train":
            updates = max(updates, int(_num(rec.get("train_num_updates", 0))))
        elif rec["_tag"] == "valid" and "valid_num_updates" in rec:
            n = int(_num(rec["valid_num_updates"]))
            point = {"valid_loss": _num(rec["valid_loss"])}
            if "valid_bleu" in rec:
                point["valid_bleu"] = _num(rec["valid_bleu"])
            curve[n] = point
            updates = max(updates, n)
    return {"parameters": int(params[-1].replace(",", "")) if params else None, "updates": updates,
            "losses": losses, "curve": [[n, curve[n]] for n in sorted(curve)]}


def run_header(cmd: List[str]) -> str:
    """The line ``study.processes`` writes before each run it appends to a log (what a user would type)."""
    return f"\n{RUN_HEADER}{shlex.join(cmd)}\n"


def last_run(lines: List[str]) -> List[str]:
    """The lines of an appended-to log written by its last run: the earlier runs' lines blanked (so a
    line number still points into the file), all of them when no run header is found.

    A cell's logs are appended to, so a decode killed part-way and then re-run leaves both runs'
    lines in one file, and only the last run's count (a train log keeps all its runs: a resumed
    fairseq-train continues the curve of the earlier ones)."""
    starts = [i for i, line in enumerate(lines) if line.startswith(RUN_HEADER)]
    return [""] * starts[-1] + lines[starts[-1]:] if starts else lines


def parse_generate(text: str) -> List[str]:
    """Hypotheses (``H-<id>`` lines) of the log's last run (``last_run``) in input order; ids must be 0..n-1.

    Within a run the first ``H-`` line per id is kept (the best of an n-best list); an earlier,
    killed run's hypotheses must not win over the re-run's."""
    return fileio.hypotheses_in_order(last_run(fileio.split_lines(text)))
