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
from typing import Dict, List

from fairseq_kd import fileio

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


def parse_generate(text: str) -> List[str]:
    """Hypotheses (``H-<id>`` lines) in input order; ids must be 0..n-1."""
    return fileio.hypotheses_in_order(text)
