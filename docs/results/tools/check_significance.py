"""Check every significance mark in markdown tables against its 95% interval: a `*` only where the
interval excludes 0, and a printed p on the same side of 0.05 as the interval (one test: the report's
p is the percentile bootstrap's, p <= 0.05 exactly when its interval excludes 0).

A delta cell is ``+4.30 [+3.56, +5.11]`` (bold ``**...**`` allowed, also ``**+2.19** [+1.70, +2.64]``),
optionally with its p in the same cell (``+0.61 [+0.11, +1.13], 0.013``); otherwise its p is the
nearest column headed ``p`` to its right (before the next delta column). A p cell is ``0.001*``,
``<0.002*``, ``0.109``, ``>0.05``; a trailing ``*`` is the significance mark. Reported per row:
a ``*`` beside an interval that includes 0; an interval that excludes 0 without a ``*`` in a table
that marks with ``*``; p <= 0.05 beside an interval that includes 0; p > 0.05 beside one that excludes
0; an interval whose low end is above its high end; a p cell that cannot be read. An interval with an
end printed as 0.00 cannot be placed at this precision and is listed as a note, not a finding.

Usage: python docs/results/tools/check_significance.py [FILE.md ...]   (default README.md docs/results.md)
Exit 0 when consistent, 1 with the list (file:line, row, why) when not, 2 when a file cannot be read.
"""
import argparse
import re
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

ALPHA = 0.05
REPO = Path(__file__).resolve().parents[3]
DEFAULT_FILES = ("README.md", "docs/results.md")

_NUM = r"[+\-]?\d+(?:\.\d+)?"
_INTERVAL = re.compile(rf"^\s*({_NUM})\s*\[\s*({_NUM})\s*,\s*({_NUM})\s*\]\s*(\*?)\s*(?:,\s*(.*?))?\s*$")
_P = re.compile(r"^\s*(?:p\s*)?([<>]=?|=)?\s*(\d*\.?\d+)\s*(\*?)\s*$", re.IGNORECASE)
_BOLD = re.compile(r"\*\*(.+?)\*\*")


class Interval(NamedTuple):
    delta: float
    low: float
    high: float
    star: bool  # a '*' right after the interval
    p_text: Optional[str]  # the p written in the same cell, if any


class PValue(NamedTuple):
    relation: str  # '=', '<' or '>' (<= / >= read as < / >)
    value: float
    star: bool


class Finding(NamedTuple):
    path: str
    line: int
    row: str
    why: str


def plain(text: str) -> str:
    """A cell without bold markers and with the typographic minus as '-'."""
    return _BOLD.sub(r"\1", text).replace("\u2212", "-").strip()


def split_row(line: str) -> List[str]:
    """The cells of a markdown table row (outer pipes dropped)."""
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|"):
        s = s[:-1]
    return [c.strip() for c in s.split("|")]


def parse_interval(cell: str) -> Optional[Interval]:
    """``+4.30 [+3.56, +5.11]`` (bold allowed, an optional ``, p`` after it) or None."""
    m = _INTERVAL.match(plain(cell))
    if not m:
        return None
    return Interval(float(m.group(1)), float(m.group(2)), float(m.group(3)), m.group(4) == "*", m.group(5))


def parse_p(cell: str) -> Optional[PValue]:
    """``0.001*``, ``<0.002*``, ``0.109``, ``>0.05``, ``p = 0.01`` or None; an empty cell is None too."""
    m = _P.match(plain(cell))
    if not m:
        return None
    rel = (m.group(1) or "=")[0]
    return PValue(rel, float(m.group(2)), m.group(3) == "*")


def zero_side(iv: Interval) -> str:
    """'excludes', 'includes' or 'touches' (an end printed as 0.00: undecidable at 2 decimals)."""
    if iv.low == 0 or iv.high == 0:
        return "touches"
    return "excludes" if iv.low > 0 or iv.high < 0 else "includes"


def p_says(p: PValue, alpha: float = ALPHA) -> Optional[bool]:
    """True: p <= alpha, False: p > alpha, None: the printed bound does not decide (e.g. '<0.1')."""
    if p.relation == "<":
        return True if p.value <= alpha else None
    if p.relation == ">":
        return False if p.value >= alpha else None
    return p.value <= alpha


def row_problems(iv: Interval, p: Optional[PValue], uses_stars: bool) -> List[str]:
    """Why this row's star / p disagree with its interval (empty list: consistent)."""
    out = []
    if iv.low > iv.high:
        out.append(f"interval [{iv.low:+.2f}, {iv.high:+.2f}] has its low end above its high end")
    side = zero_side(iv)
    if side == "touches":
        return out
    star = iv.star or bool(p and p.star)
    ival = f"[{iv.low:+.2f}, {iv.high:+.2f}]"
    if star and side == "includes":
        out.append(f"'*' but the interval {ival} includes 0")
    if not star and side == "excludes" and uses_stars:
        out.append(f"the interval {ival} excludes 0 but the row has no '*' (the table marks with '*')")
    if p is not None:
        sig = p_says(p)
        shown = f"p {'' if p.relation == '=' else p.relation}{p.value:g}"
        if sig is True and side == "includes":
            out.append(f"{shown} <= {ALPHA} but the interval {ival} includes 0")
        if sig is False and side == "excludes":
            out.append(f"{shown} > {ALPHA} but the interval {ival} excludes 0")
    return out


def is_p_header(text: str) -> bool:
    """A column headed ``p``, ``p-value``, ``p (bootstrap)``."""
    return re.match(r"^p(?:[\s-]*value)?\b", plain(text), re.IGNORECASE) is not None


def tables(lines: List[str]) -> List[List[Tuple[int, str]]]:
    """Every markdown table outside code fences: a list of (1-based line number, line)."""
    out, cur, fence = [], [], False
    for i, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and line.lstrip().startswith("|"):
            cur.append((i, line))
            continue
        if cur:
            out.append(cur)
        cur = []
    if cur:
        out.append(cur)
    return [t for t in out if len(t) >= 2 and re.fullmatch(r"[\s|:\-]+", t[1][1].strip())]


def check_table(path: str, table: List[Tuple[int, str]]) -> Tuple[List[Finding], List[Finding], int]:
    """(findings, notes, rows with an interval) of one table."""
    header = split_row(table[0][1])
    body = [(n, line.strip(), split_row(line)) for n, line in table[2:]]
    delta_cols = sorted({j for _, _, cells in body for j, c in enumerate(cells) if parse_interval(c)})
    p_of = {}  # delta column -> the first p column right of it, before the next delta column
    for j, h in enumerate(header):
        left = [d for d in delta_cols if d < j]
        if is_p_header(h) and left and left[-1] not in p_of:
            p_of[left[-1]] = j
    rows = []  # (line number, row, interval, p text, p)
    for n, line, cells in body:
        for d in delta_cols:
            iv = parse_interval(cells[d]) if d < len(cells) else None
            if iv is None:
                continue
            p_text = iv.p_text
            if p_text is None:
                p_text = cells[p_of[d]] if p_of.get(d, len(cells)) < len(cells) else ""
            rows.append((n, line, iv, p_text.strip(), parse_p(p_text) if p_text.strip() else None))
    uses_stars = any(iv.star or (p is not None and p.star) for _, _, iv, _, p in rows)
    findings, notes = [], []
    for n, line, iv, p_text, p in rows:
        if p_text and p is None:
            findings.append(Finding(path, n, line, f"p cell {p_text!r} cannot be read"))
        findings += [Finding(path, n, line, why) for why in row_problems(iv, p, uses_stars)]
        if zero_side(iv) == "touches":
            notes.append(Finding(path, n, line, "an interval end printed as 0.00: its side of 0 is not checked"))
    return findings, notes, len(rows)


def check_file(path: Path, label: Optional[str] = None) -> Tuple[List[Finding], List[Finding], int]:
    """(findings, notes, rows with an interval) over every table of one markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    findings, notes, checked = [], [], 0
    for t in tables(lines):
        f, n, k = check_table(label or str(path), t)
        findings += f
        notes += n
        checked += k
    return findings, notes, checked


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help=f"markdown files (default: {' '.join(DEFAULT_FILES)} of the repository)")
    ap.add_argument("--quiet-notes", action="store_true", help="do not print the notes (unplaceable intervals)")
    args = ap.parse_args(argv)
    paths = [Path(f) for f in args.files] or [REPO / f for f in DEFAULT_FILES]
    findings, notes, checked = [], [], 0
    for p in paths:
        if not p.is_file():
            print(f"check_significance: error: {p}: not found", file=sys.stderr)
            return 2
        f, n, k = check_file(p, shown_path(p))
        findings += f
        notes += n
        checked += k
    if not args.quiet_notes:
        for x in notes:
            print(f"note: {x.path}:{x.line}: {x.why}\n    {x.row}")
    for x in findings:
        print(f"{x.path}:{x.line}: {x.why}\n    {x.row}")
    bad = len({(x.path, x.line) for x in findings})
    print(f"check_significance: {checked} row(s) with a 95% interval in {len(paths)} file(s), {bad} inconsistent"
          + ("" if bad else ": every '*' and p agrees with its interval"))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
