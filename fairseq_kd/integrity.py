"""Integrity of the tabular and record files the tools read: results/curves CSVs and JSON records.

Every reader of ``results.csv`` / ``curves.csv`` (fairseq-kd-report, the study's resume, the
merge tools) goes through ``read_table``; JSON records (``summary.json``, ``meta.json``,
export metadata, ``study.json``) through ``load_json``. Refused, one line naming the file, the
line and the fix (``KDInputError``):

* CSV syntax: NUL bytes, over-long fields, a repeated column name, a row with more or fewer
  fields than the header (a cut or interleaved write), an empty required cell;
* domains: BLEU / chrF / tok-BLEU / validation BLEU outside [0, 100], NaN or infinite numbers,
  negative or fractional counts (parameters, updates, seed), a noise rate outside [0, 1],
  a learning rate <= 0, a stop rule that is not one of the study's;
* identity: a ``cell`` column that is not the cell of the row's own columns (a hand-edited
  seed or method), two rows of one cell (same key, seed and search) with different values,
  one hypothesis file claimed by two cells, sacrebleu signatures that differ between rows
  compared in one table.

Rows that are exact copies of an earlier row (a resumed run appended twice, two CSVs
concatenated) are collapsed to one with a warning: a copy never counts as another seed.
Unknown extra columns are kept; optional columns may be empty. A leading UTF-8 BOM
(spreadsheet exports) is ignored.
"""
import csv
import io
import json
import logging
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from fairseq_kd import fileio
from fairseq_kd.errors import KDInputError

logger = logging.getLogger(__name__)

KEY = ("method", "noise", "arch", "decoding", "lr", "seed", "teacher")
DEFAULTS = {"teacher": "-", "search": "beam"}  # columns older results files lack
SCORES = ("bleu", "chrf", "tok_bleu", "valid_bleu")  # in [0, 100]
COUNTS = ("parameters", "updates", "best_update", "seed")  # integers >= 0
NONNEG = ("train_time", "valid_loss")
DIVERGED = ("valid_loss",)  # a diverged training's validation loss is recorded as it was (nan / inf)
RESULTS_REQUIRED = ("method", "noise", "arch", "decoding", "lr", "seed", "bleu", "chrf")
CURVES_REQUIRED = ("method", "noise", "arch", "decoding", "lr", "seed", "updates")
NONEMPTY = {"results": (*RESULTS_REQUIRED, "parameters"), "curves": CURVES_REQUIRED}  # a cell's identity and score
DELETE_FIX = "delete or correct that line (re-running the study redoes a deleted cell)"


def kind_of(fields: Sequence[str]) -> str:
    """``results`` (one row per cell and test search) or ``curves`` (one row per validation point)."""
    return "results" if "bleu" in fields else "curves"


def _number(where: str, col: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise KDInputError(f"{where}: {col}={text!r} is not a number; {DELETE_FIX}") from None
    if not math.isfinite(value) and col not in DIVERGED:
        raise KDInputError(f"{where}: {col}={text!r} is not a finite number (a failed run's score?); "
                           f"{DELETE_FIX}")
    return value


def check_value(where: str, col: str, text: str) -> None:
    """One cell against its column's domain (empty cells are the caller's business)."""
    from fairseq_kd.study.config import STOP_RULES

    if col == "stop":
        if text not in STOP_RULES:
            raise KDInputError(f"{where}: stop={text!r} is not one of {', '.join(STOP_RULES)}; {DELETE_FIX}")
        return
    if col not in (*SCORES, *COUNTS, *NONNEG, "noise", "lr"):
        return
    value = _number(where, col, text)
    if col in SCORES and not 0 <= value <= 100:
        raise KDInputError(f"{where}: {col}={text} is outside [0, 100] (sacrebleu scores are percentages); "
                           f"{DELETE_FIX}")
    if col in COUNTS and (value < 0 or not value.is_integer()):
        raise KDInputError(f"{where}: {col}={text} is not a count (an integer >= 0); {DELETE_FIX}")
    if col in NONNEG and not value >= 0 and col not in DIVERGED or col in DIVERGED and value < 0:
        raise KDInputError(f"{where}: {col}={text} is negative; {DELETE_FIX}")
    if col == "noise" and not 0 <= value <= 1:
        raise KDInputError(f"{where}: noise={text} is outside [0, 1] (a per-word rate); {DELETE_FIX}")
    if col == "lr" and value <= 0:
        raise KDInputError(f"{where}: lr={text} is not > 0; {DELETE_FIX}")


def parse_csv(path: str, text: str) -> Tuple[List[str], List[Tuple[str, Dict[str, str]]]]:
    """Header and ("file:line", row) pairs of a CSV text; syntax errors name the file and line."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise KDInputError(f"{path}:{line}: a NUL byte (a binary file, or one cut by a crash); {DELETE_FIX}")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None) or []
        fields = [h.strip() for h in header]
        dup = sorted({f for f in fields if fields.count(f) > 1})
        if dup:
            raise KDInputError(f"{path}:1: column(s) {', '.join(dup)} appear twice in the header; keep one of each")
        rows = []
        for cells in reader:
            line = reader.line_num
            if not cells:
                continue  # a blank line
            if len(cells) != len(fields):
                raise KDInputError(f"{path}:{line}: the row has a different number of fields than the header "
                                   f"({len(cells)}, not {len(fields)}: a cut or interleaved write); {DELETE_FIX}")
            rows.append((f"{path}:{line}", dict(zip(fields, cells))))
    except csv.Error as err:
        raise KDInputError(f"{path}:{reader.line_num + 1}: not a readable CSV row ({err}); {DELETE_FIX}") from None
    return fields, rows


def _canon(row: Dict[str, str], col: str) -> str:
    text = row.get(col) or DEFAULTS.get(col, "")
    if col in ("noise", "lr"):
        return f"{float(text):g}"
    if col == "seed":
        return str(int(float(text)))
    return text


def check_rows(path: str, fields: Sequence[str], rows: List[Tuple[str, Dict[str, str]]],
               required: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    """Validated rows (exact copies collapsed, with a warning); see the module doc for what is refused."""
    kind = kind_of(fields)
    required = tuple(required if required is not None else
                     (RESULTS_REQUIRED if kind == "results" else CURVES_REQUIRED))
    missing = [c for c in required if c not in fields]
    if missing:
        raise KDInputError(f"{path}: missing column(s) {', '.join(missing)}; expected a fairseq-kd-study {kind} "
                           f"file with columns {', '.join(required)}")
    key_cols = (*KEY, "search") if kind == "results" else (*KEY, "updates")
    seen: Dict[Tuple, Tuple[str, Dict[str, str]]] = {}
    hyps: Dict[str, str] = {}
    signature: Optional[Tuple[str, str]] = None
    out, copies = [], []
    for where, row in rows:
        for col in fields:
            if row[col] == "":
                if col in NONEMPTY[kind]:
                    raise KDInputError(f"{where}: {col} is empty; {DELETE_FIX}")
                continue
            check_value(where, col, row[col])
        key = tuple(_canon(row, c) for c in key_cols if c in fields or c in DEFAULTS)
        if key in seen:
            first_where, first = seen[key]
            if first == row:
                copies.append(where)
                continue
            diff = [c for c in fields if first[c] != row[c]]
            raise KDInputError(f"{where}: the same {kind} row as {first_where} (cell "
                               f"{' '.join(key)}) with other values ({', '.join(diff)}): one seed measured twice "
                               f"(a merge of two runs?); delete the wrong line")
        seen[key] = (where, row)
        if kind == "results":
            _check_identity(where, row, hyps)
            sig = row.get("signature") or ""
            if sig and signature is None:
                signature = (where, sig)
            elif sig and sig != signature[1]:
                raise KDInputError(f"{where}: sacrebleu signature {sig!r} differs from {signature[0]}'s "
                                   f"{signature[1]!r}: scores made with other settings or versions cannot be "
                                   f"compared in one table; re-score with one sacrebleu setting or report them apart")
        out.append(row)
    if copies:
        logger.warning("%s repeat(s) an earlier row exactly (a resumed or concatenated run): counted once",
                       ", ".join(copies))
    return out


def _check_identity(where: str, row: Dict[str, str], hyps: Dict[str, str]) -> None:
    """The ``cell`` column must name the row's own cell; one hypothesis file belongs to one cell."""
    from fairseq_kd.study.config import Cell

    if row.get("cell"):
        cell = Cell(row["method"], float(row["noise"]), row["arch"], row["decoding"], float(row["lr"]),
                    int(float(row["seed"])), row.get("teacher") or "-").slug()
        if row["cell"] != cell:
            raise KDInputError(f"{where}: cell {row['cell']!r} is not the cell of the row's own columns "
                               f"({cell!r}): a hand-edited method/seed/arch? correct the columns or delete the line")
    hyp = row.get("hyp")
    if hyp:
        if hyp in hyps:
            raise KDInputError(f"{where}: hypothesis file {hyp} is also the one of {hyps[hyp]} (another cell, seed "
                               f"or search): a copied row with an edited seed never counts as a seed; delete the copy")
        hyps[hyp] = where


def read_table(path: str, what: str = "results file", required: Optional[Sequence[str]] = None
               ) -> Tuple[List[str], List[Dict[str, str]]]:
    """Header and validated rows (strings) of a results/curves CSV."""
    fields, rows = parse_csv(path, fileio.read_text(path, what))
    if not fields:
        return [], []
    return fields, check_rows(path, fields, rows, required)


def merge_rows(sources: Iterable[Tuple[str, List[Dict[str, str]]]]) -> List[Dict[str, str]]:
    """The rows of several validated files as one table: exact copies across files are collapsed (with a
    warning), a row of one cell with other values in another file is refused naming both files."""
    fields: List[str] = []
    rows: List[Tuple[str, Dict[str, str]]] = []
    for path, src_rows in sources:
        for n, r in enumerate(src_rows, 1):
            fields += [c for c in r if c not in fields]
            rows.append((f"{path} (row {n})", r))
    rows = [(w, {c: r.get(c, "") for c in fields}) for w, r in rows]
    return check_rows("merged rows", fields, rows) if rows else []


# ---------------------------------------------------------------- JSON records


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"key(s) {', '.join(dup)} appear twice in one object")
    return dict(pairs)


def _walk_counts(path: str, obj, counts: Sequence[str], where: str = "") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in counts and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                raise ValueError(f"{where}{k}={v!r} is not a count (an integer >= 0)")
            _walk_counts(path, v, counts, f"{where}{k}.")
    elif isinstance(obj, list):
        for v in obj:
            _walk_counts(path, v, counts, where)


def loads_json(path: str, text: str, fix: str, counts: Sequence[str] = ()) -> Dict:
    """A JSON object from ``text``: no NaN/Infinity, no repeated keys, the ``counts`` keys integers >= 0."""
    try:
        obj = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
        if not isinstance(obj, dict):
            raise ValueError(f"a JSON {type(obj).__name__}, not an object")
        _walk_counts(path, obj, counts)
    except json.JSONDecodeError as err:
        raise KDInputError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); {fix}") from None
    except (ValueError, RecursionError) as err:
        raise KDInputError(f"{path}: {err}; {fix}") from None
    return obj


def load_json(path: str, fix: str, counts: Sequence[str] = (), what: str = "record") -> Dict:
    """``loads_json`` of a UTF-8 file (missing file / bad encoding: one line too)."""
    return loads_json(path, fileio.read_text(path, what), fix, counts)


def dumps_json(obj, **kw) -> str:
    """JSON text that is valid JSON (a NaN or infinity is an error, never the invalid token ``NaN``)."""
    return json.dumps(obj, allow_nan=False, **kw)
