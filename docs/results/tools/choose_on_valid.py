"""Choose among finished runs on validation, and say so: a table of every candidate's validation value and
the choice, for a queue to act on and docs to cite.

Each candidate is LABEL=CELL (a study cell folder, or its train.log): its validation curve is read from
train.log (``fairseq_kd.study.logs.parse_train_log``, the parser of curves.csv). ``--at last`` scores a
run by its last validation (runs of a fixed budget that decode their last checkpoint: converged_study.sh
stage 4); ``--at best`` by the validation fairseq kept as checkpoint_best.pt (runs stopped by patience;
a tie goes to the later update, as fairseq's). A cell must be in its study's results.csv (finished), so a
choice is never made on a run that is still going. The best value wins; an exact tie goes to the
candidate named first, and the table says so.

    python docs/results/tools/choose_on_valid.py --at last --json exp/converged/onpolicy_laneU/choice.json \\
        onpolicy=exp/converged/onpolicy_laneU/cells/onpolicy_noise0_transformer_relu_3m_nodec_lr0.0004_seed1 \\
        onpolicy.l1=exp/converged/onpolicy_laneU/cells/onpolicy.l1_noise0_transformer_relu_3m_nodec_lr0.0004_seed1
    # stdout: the markdown table, then "choice: LABEL"; --print-choice: only the label (the table to stderr)
"""
import argparse
import csv
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_kd.fileio import atomic_write_text
from fairseq_kd.study.logs import parse_train_log
from fairseq_kd.study.status import checkpoint_best

METRICS = {"bleu": ("valid_bleu", True), "loss": ("valid_loss", False)}  # metric -> (log key, maximize)


def point_of(curve: Sequence[Tuple[int, float]], at: str, maximize: bool) -> Tuple[int, float]:
    """(updates, value) a run is judged by: its last validation or the one kept as checkpoint_best.pt."""
    return tuple(curve[-1]) if at == "last" else tuple(checkpoint_best(curve, maximize))


def choose(scores: Sequence[Tuple[str, float]], maximize: bool) -> Tuple[str, bool]:
    """(label, tied): the best value; an exact tie goes to the first listed."""
    sign = 1 if maximize else -1
    best = max(sign * v for _, v in scores)
    winners = [label for label, v in scores if sign * v == best]
    return winners[0], len(winners) > 1


def _finished(cell: str) -> Optional[str]:
    """None when the cell's name is in its study's results.csv, else why not."""
    study = os.path.dirname(os.path.dirname(cell))
    results = os.path.join(study, "results.csv")
    if not os.path.isfile(results):
        return f"{results} not found (is {cell} a study cell? --allow-unfinished to read a bare log)"
    with open(results, newline="", encoding="utf-8") as f:
        cells = {row.get("cell") for row in csv.DictReader(f)}
    name = os.path.basename(cell)
    return None if name in cells else f"{name} is not in {results} yet: the run has not finished"


def read_candidate(spec: str, metric: str, at: str, allow_unfinished: bool) -> Dict:
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise ValueError(f"{spec!r}: write LABEL=CELL_DIR (or LABEL=CELL_DIR/train.log)")
    path = path.rstrip("/")
    cell, log = (os.path.dirname(path), path) if path.endswith(".log") else (path, os.path.join(path, "train.log"))
    if not os.path.isfile(log):
        raise ValueError(f"{label}: {log} not found")
    if not allow_unfinished:
        why = _finished(cell)
        if why:
            raise ValueError(f"{label}: {why}")
    key, maximize = METRICS[metric]
    with open(log, encoding="utf-8", errors="replace") as f:
        curve = [(n, p[key]) for n, p in parse_train_log(f.read())["curve"] if key in p]
    if not curve:
        raise ValueError(f"{label}: no {key} in the validation records of {log} (bleu needs --eval-bleu)")
    updates, value = point_of(curve, at, maximize)
    return {"label": label, "cell": cell, "updates": int(updates), "value": float(value),
            "validations": len(curve), "last_update": int(curve[-1][0])}


def table(rows: List[Dict], metric: str, at: str, chosen: str, tied: bool) -> str:
    head = f"| candidate | valid {metric} ({at}) | at update | validations | chosen |"
    lines = [head, "|---|---:|---:|---:|:---:|"]
    for r in rows:
        mark = "**yes**" if r["label"] == chosen else ""
        lines.append(f"| {r['label']} | {r['value']:.2f} | {r['updates']:,} | {r['validations']} | {mark} |")
    tail = " (an exact tie, broken by the order given)" if tied else ""
    return "\n".join(lines) + f"\n\nchoice: {chosen}{tail}\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="choose_on_valid.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("candidates", nargs="+", metavar="LABEL=CELL", help="a study cell (or its train.log) per label")
    p.add_argument("--at", choices=["last", "best"], required=True,
                   help="last: the last validation (fixed-budget runs); best: the checkpoint_best.pt validation")
    p.add_argument("--metric", choices=sorted(METRICS), default="bleu", help="valid BLEU (max) or loss (min)")
    p.add_argument("--json", metavar="FILE", help="also write the candidates and the choice here (atomically)")
    p.add_argument("--print-choice", action="store_true", help="stdout: only the chosen label (table to stderr)")
    p.add_argument("--allow-unfinished", action="store_true", help="read logs of runs not in a results.csv")
    args = p.parse_args(argv)
    try:
        rows = [read_candidate(c, args.metric, args.at, args.allow_unfinished) for c in args.candidates]
    except ValueError as e:
        print(f"choose_on_valid.py: {e}", file=sys.stderr)
        return 1
    labels = [r["label"] for r in rows]
    if len(set(labels)) != len(labels):
        p.error(f"each label once: {', '.join(labels)}")
    chosen, tied = choose([(r["label"], r["value"]) for r in rows], METRICS[args.metric][1])
    text = table(rows, args.metric, args.at, chosen, tied)
    if args.json:
        record = {"metric": f"valid_{args.metric}", "at": args.at, "choice": chosen, "tie": tied, "candidates": rows}
        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
    if args.print_choice:
        sys.stderr.write(text)
        print(chosen)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
