"""Worker slices and their merge, shared by the tools that split a job across processes.

One spelling for every tool: ``--part I/N`` (0-based ``I``, ``0 <= I < N``) makes worker
``I`` of ``N`` produce its part; ``--merge`` checks that all ``N`` parts are there,
finished, made from the same inputs, and cover exactly the expected items, then publishes.

Work is planned globally and identically in every worker (e.g. the length-sorted batches
of a whole split); worker ``I`` takes the contiguous slice ``part_slice(n_units, I, N)`` of
that plan, so each item is computed exactly as a single worker would have computed it (same
batch, same shapes) and a merge of N parts is byte-identical to one worker's output.

A part lives in its own directory ``<root>/parts/I-of-N/`` (so parts never write the same
file) and is finished when its manifest ``PART.json`` exists (written atomically, last):
``{"tool", "part", "of", "fingerprint", "count", "ids_sha256", ...}``.
"""
import hashlib
import json
import os
import re
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from fairseq_kd.errors import KDInputError
from fairseq_kd.fileio import atomic_write_json

MANIFEST = "PART.json"
PART_DIR = re.compile(r"^(\d+)-of-(\d+)$")


class Part(NamedTuple):
    """Worker ``i`` of ``n`` (0-based)."""

    i: int
    n: int

    def slice(self, n_units: int) -> slice:
        return part_slice(n_units, self.i, self.n)

    @property
    def name(self) -> str:
        return f"{self.i}-of-{self.n}"

    def __str__(self) -> str:
        return f"{self.i}/{self.n}"


def parse_part(spec) -> Part:
    """``"I/N"`` -> ``Part(I, N)`` with ``0 <= I < N``. Also an ``argparse`` type: a bad spec is a
    usage error (``KDInputError`` is a ``ValueError``, which argparse reports and exits 2 on)."""
    if isinstance(spec, Part):
        return spec
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if m and int(m.group(2)) > 0 and int(m.group(1)) >= int(m.group(2)):
        n = int(m.group(2))
        raise KDInputError(f"--part {spec}: I counts from 0, so with N = {n} the parts are "
                           f"{', '.join(f'{i}/{n}' for i in range(min(n, 3)))}{' ... ' if n > 3 else ''}"
                           f"{f'{n - 1}/{n}' if n > 3 else ''} (I = 0..{n - 1})")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise KDInputError(f"--part wants I/N with 0 <= I < N (e.g. 0/2 and 1/2), got {spec!r}")
    return Part(int(m.group(1)), int(m.group(2)))


def _part_arg(spec) -> Part:
    """``parse_part`` for argparse, which prints an ``ArgumentTypeError``'s message (a ``ValueError``'s
    it replaces by "invalid value")."""
    import argparse

    try:
        return parse_part(spec)
    except KDInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(group) -> None:
    """``--part I/N`` and ``--merge`` on an argparse group."""
    group.add_argument("--part", type=_part_arg, default=None, metavar="I/N",
                       help="compute only worker I's slice of N (0-based; run I = 0..N-1 anywhere, then --merge)")
    group.add_argument("--merge", action="store_true",
                       help="check that the N parts are complete and consistent, then publish the merged output")


def part_slice(n_units: int, i: int, n: int) -> slice:
    """Worker ``i``'s contiguous share of ``n_units`` planned units (sizes differ by at most one)."""
    return slice(n_units * i // n, n_units * (i + 1) // n)


def part_dir(root: str, part, n: Optional[int] = None) -> str:
    """``<root>/parts/I-of-N``: ``part_dir(root, Part(i, n))`` or ``part_dir(root, i, n)``."""
    part = Part(part, n) if n is not None else parse_part(part)
    return os.path.join(root, "parts", part.name)


def ids_sha256(ids: Sequence[int]) -> str:
    """Identifies the exact set of item ids a part covers (order-independent)."""
    return hashlib.sha256(np.sort(np.asarray(ids, dtype=np.int64)).tobytes()).hexdigest()


def write_manifest(folder: str, tool: str, i: int, n: int, fingerprint: Dict, ids: Sequence[int], **extra) -> str:
    """Mark part ``i`` of ``n`` finished (call after every file of the part is on disk)."""
    manifest = {"tool": tool, "part": i, "of": n, "fingerprint": fingerprint, "count": len(ids),
                "ids_sha256": ids_sha256(ids), **extra}
    path = os.path.join(folder, MANIFEST)
    atomic_write_json(path, manifest)
    return path


def _read_manifest(path: str) -> Optional[Dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def collect(root: str, tool: str, fingerprint: Dict, expected_ids: Optional[List[Sequence[int]]] = None,
            command: str = "the same command", across: Sequence[str] = ()) -> List[Dict]:
    """The N finished, consistent part manifests under ``root/parts`` (in part order), or a clear error.

    Refused: no parts; parts of different N (``0-of-2`` beside ``1-of-3``); a part
    missing or unfinished; a foreign part (made by another tool, or from other inputs:
    ``fingerprint`` differs, the key is named); with ``expected_ids`` (one id list per part,
    from the global plan), a part whose ids or count differ. Keys in ``across`` (how the workers
    computed, e.g. the teacher's dtype and device) are compared among the parts, not with the
    merging process's own ``fingerprint``.
    """
    found = {}
    parts_root = os.path.join(root, "parts")
    if os.path.isdir(parts_root):
        for name in sorted(os.listdir(parts_root)):
            m = PART_DIR.match(name)
            if m:
                found[(int(m.group(1)), int(m.group(2)))] = os.path.join(parts_root, name)
    if not found:
        raise KDInputError(f"--merge: no parts under {parts_root}: run {command} with --part I/N for I = 0..N-1 first")
    ns = sorted({n for _, n in found})
    if len(ns) > 1:
        raise KDInputError(f"--merge: {parts_root} holds parts of different splits into N = {ns} workers: delete "
                           f"the directories of the foreign run (*-of-N) and merge again")
    n = ns[0]
    manifests = []
    for i in range(n):
        folder = found.get((i, n))
        man = _read_manifest(os.path.join(folder, MANIFEST)) if folder else None
        if man is None:
            state = "missing" if folder is None else "not finished"
            raise KDInputError(f"--merge: part {i}/{n} is {state} ({part_dir(root, i, n)}): run {command} "
                               f"with --part {i}/{n} (it resumes), then merge again")
        if man.get("tool") != tool or (man.get("part"), man.get("of")) != (i, n):
            raise KDInputError(f"--merge: {folder} is not part {i}/{n} of {tool} (its manifest says "
                               f"{man.get('tool')} part {man.get('part')}/{man.get('of')}): delete it and re-run")
        have = man.get("fingerprint") or {}
        want = dict(fingerprint)
        for k in across:  # the first part's value, which every other part must share
            want[k] = (manifests[0].get("fingerprint") or {}).get(k) if manifests else have.get(k)
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        if diff:
            shown = "; ".join(f"{k}: {have.get(k)} here, {want.get(k)} in part 0" for k in diff if k in across)
            raise KDInputError(f"--merge: part {i}/{n} ({folder}) is foreign: made from other inputs or settings "
                               f"({', '.join(diff)} differ{': ' + shown if shown else ''}). Delete it and re-run "
                               f"{command} with --part {i}/{n}" + (" on a worker like part 0's" if shown else ""))
        if expected_ids is not None:
            want = expected_ids[i]
            if man.get("count") != len(want) or man.get("ids_sha256") != ids_sha256(want):
                raise KDInputError(f"--merge: part {i}/{n} ({folder}) covers other items than planned "
                                   f"({man.get('count')} items, expected {len(want)}): delete it and re-run "
                                   f"{command} with --part {i}/{n}")
        manifests.append(dict(man, folder=folder))
    return manifests
