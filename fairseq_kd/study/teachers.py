"""The teacher axis of a study (``--teachers``): each teacher's name and path, and which checkpoint it is.

A teacher is written ``PATH`` or ``NAME=PATH`` (``a.pt:b.pt``: an ensemble). Its name is its grid
coordinate: the ``teacher`` column of results.csv, part of its cells' dir names and of the dirs of the data
distilled and cached with it. Without ``NAME=`` the name is the path's last two parts
(``big/checkpoint_best.pt``), so two teachers in fairseq's own layout (``RUN/checkpoints/checkpoint_best.pt``)
need names: ``check_names`` refuses two teachers of one name before anything runs (they would share one
cell dir, and the second teacher's rows would be the first one's student). A path whose first part holds
``=`` is written ``./run=1/checkpoint_best.pt``.

On every run ``reconcile`` compares the teachers with those recorded in study.json by content (sha256 of
the files' bytes): a recorded name now reaching another checkpoint is refused (its rows came from the
recorded one: a teacher retrained in place), and a recorded checkpoint reached under another name (moved,
copied, linked) takes its recorded name, so its cells resume instead of training again.
"""
import logging
import os
import re
from typing import Dict, List, Sequence, Tuple

from fairseq_kd.errors import KDInputError
from fairseq_kd.study.preflight import check_digest_record

logger = logging.getLogger("fairseq_kd.study")

NAMED = re.compile(r"^([A-Za-z0-9._+-]+)=(.+)$")  # NAME=PATH
DIGESTS = "teachers_sha256"  # study.json key: {teacher name: sha256 of its files' bytes}


def split_spec(spec: str) -> Tuple[str, str]:
    """(name, path) of a teacher written ``PATH`` or ``NAME=PATH``."""
    m = NAMED.match(spec)
    if m and m.group(1) not in (".", "..", "-"):
        return m.group(1), m.group(2)
    parts = os.path.normpath(spec).split(os.sep)
    return "/".join(parts[-2:]) if len(parts) > 1 else parts[-1], spec


def teacher_path(spec: str) -> str:
    """The checkpoint file(s) of a teacher (``a:b`` for an ensemble), without its ``NAME=``."""
    return split_spec(spec)[1]


def teacher_name(spec: str) -> str:
    """The teacher's grid coordinate ('-' for none)."""
    return split_spec(spec)[0] if spec and spec != "-" else "-"


def dir_name(spec: str) -> str:
    """The teacher's name as a part of a file name (cell dirs, distilled data, caches)."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "", teacher_name(spec).replace("/", "-"))


def check_names(specs: Sequence[str]) -> None:
    """Two teachers of one name (or one dir name), or one listed twice, would share cells, distilled data and
    caches: refuse them."""
    seen: Dict[str, str] = {}
    for spec in specs:
        for key in dict.fromkeys((teacher_name(spec), dir_name(spec))):
            if key in seen and seen[key] == spec:
                raise KDInputError(f"--teachers: {spec} is listed twice: list each teacher once")
            if key in seen:
                raise KDInputError(
                    f"--teachers {seen[key]} and {spec} are both named {key!r} (a teacher's name is its path's last "
                    f"two parts): their cells would share one dir and one row. Name them, e.g. --teachers "
                    f"big={teacher_path(seen[key])} small={teacher_path(spec)}")
            seen[key] = spec


def reconcile(where: str, recorded: Dict, specs: Sequence[str]) -> Tuple[List[str], Dict[str, str]]:
    """This run's teachers against those ``recorded`` ({name: sha256}) in ``where`` (study.json): returns the
    teachers (a recorded checkpoint under a new name gets its recorded name back) and the digests to record
    (the recorded ones, with this run's added)."""
    from fairseq_kd.fingerprint import files_fingerprint

    check_digest_record(where, DIGESTS, recorded, "teacher names", "record the teachers again")
    named_by_digest = {digest: name for name, digest in recorded.items()}
    out: List[str] = []
    now: Dict[str, str] = {}
    for spec in specs:
        name, path = split_spec(spec)
        digest = files_fingerprint(path.split(":"))
        if name in recorded and recorded[name] != digest:
            raise KDInputError(
                f"{where}: teacher {name} ({path}, sha256 {digest[:12]}) is not the checkpoint this study's "
                f"{name} rows came from (sha256 {recorded[name][:12]}). Pass that checkpoint, give this one "
                f"another name (--teachers NEW={path}), or use a new --out-dir")
        if name not in recorded and digest in named_by_digest:
            old = named_by_digest[digest]
            logger.info("teacher %s is the checkpoint this study knows as %s: its cells keep that name", spec, old)
            name, spec = old, f"{old}={path}"
        twin = next((n for n, d in now.items() if d == digest or n == name), None)
        if twin is not None:
            raise KDInputError(f"--teachers: {spec} and the teacher named {twin} are the same checkpoint "
                               f"(sha256 {digest[:12]}): pass it once")
        now[name] = digest
        out.append(spec)
    return out, {**recorded, **now}
