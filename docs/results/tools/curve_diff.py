"""Two validation curves of the same run side by side: is a rerun (another machine, another session)
the same run? Prints a markdown table of the validations both curves reached and one line saying
through which update the two agree to the digit, or where they first part.

    python docs/results/tools/log_curve.py exp/converged/teacher_d0.3/cells/*/train.log > /tmp/new.csv
    python docs/results/tools/curve_diff.py docs/results/converged_teacher_d0.3_curve.csv /tmp/new.csv \\
        --names "machine A" "machine B"

Curves are log_curve.py's CSVs (updates, valid_bleu_greedy, valid_loss; other columns ignored).
Exit 0 whatever they show; 2 when a file is missing or holds no validation.
"""
import argparse
import csv
import json
import sys


def read_curve(path: str) -> dict:
    """updates -> (valid BLEU or None, valid loss); the last row wins for an update logged twice."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise SystemExit(f"curve_diff.py: {path} not found (make it with docs/results/tools/log_curve.py)")
    curve = {}
    for r in rows:
        if not r.get("updates") or r.get("valid_loss") in (None, ""):
            continue
        bleu = r.get("valid_bleu_greedy")
        curve[int(r["updates"])] = (float(bleu) if bleu else None, float(r["valid_loss"]))
    if not curve:
        raise SystemExit(f"curve_diff.py: {path} holds no validation (columns updates, valid_loss)")
    return curve


def compare(a: dict, b: dict) -> dict:
    """The shared validations in order, and the first update where BLEU or loss differ (None: never)."""
    shared = sorted(set(a) & set(b))
    first = next((u for u in shared if a[u] != b[u]), None)
    return {"shared": shared, "first_difference": first,
            "same_through": max((u for u in shared if first is None or u < first), default=None)}


def _fmt(x, digits=2):
    return "" if x is None else f"{x:.{digits}f}"


def table(a: dict, b: dict, shared: list, names) -> str:
    lines = [f"| updates | BLEU {names[0]} | BLEU {names[1]} | diff | loss {names[0]} | loss {names[1]} | diff |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for u in shared:
        (ba, la), (bb, lb) = a[u], b[u]
        db = "" if ba is None or bb is None else f"{bb - ba:+.2f}"
        lines.append(f"| {u:,} | {_fmt(ba)} | {_fmt(bb)} | {db} | {la:.3f} | {lb:.3f} | {lb - la:+.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="curve_diff.py", description=__doc__.split("\n\n")[0])
    p.add_argument("old", help="the committed curve (CSV)")
    p.add_argument("new", help="the rerun's curve (CSV)")
    p.add_argument("--names", nargs=2, default=["old", "new"], metavar=("OLD", "NEW"), help="column labels")
    p.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    args = p.parse_args(argv)
    try:
        a, b = read_curve(args.old), read_curve(args.new)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    c = compare(a, b)
    if not c["shared"]:
        print(f"curve_diff.py: no update is in both curves ({args.old}: {min(a)}-{max(a)}, "
              f"{args.new}: {min(b)}-{max(b)})", file=sys.stderr)
        return 2
    print(table(a, b, c["shared"], args.names))
    print()
    if c["first_difference"] is None:
        print(f"The same run: all {len(c['shared'])} shared validations agree to the digit "
              f"(through update {c['same_through']:,}).")
    elif c["same_through"] is None:
        print(f"Different runs from the first shared validation (update {c['first_difference']:,}).")
    else:
        print(f"Agree through update {c['same_through']:,}; part at update {c['first_difference']:,}.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"old": args.old, "new": args.new, "names": args.names, **c}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
