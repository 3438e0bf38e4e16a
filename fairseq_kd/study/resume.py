"""What a study's out-dir remembers, and what a resumed run may change (``reconcile``).

``study.json`` records the settings that change results (``StudyConfig.settings_fingerprint``); a run into
an out-dir that has one must use the same settings (flag strings compare as the arguments they parse to,
``same_setting``), or the rows would mix incomparable students. What may change: the grid (more seeds,
methods, teachers); a method's own flags while it has no finished cell; a teacher may join a study of
teacher-free cells, and a teacher-free run may add cells to a study that has one (``teacher_on_resume``).
Checkpoints are compared by content, not by path: the teacher and ``--student-init``
(``preflight.same_checkpoints``) and each teacher of the ``--teachers`` axis (``teachers.reconcile``); so are
the test references (``reference_digests``: a split's reference replaced under its rows is refused) and the
data's dictionaries and binarized splits (``data_digests``: a ``bin/`` rebuilt in place is refused).
"""
import dataclasses
import json
import os
import shlex
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from fairseq_kd import integrity
from fairseq_kd.errors import KDInputError
from fairseq_kd.study import teachers as T
from fairseq_kd.study.config import StudyConfig, method_base, uses_teacher
from fairseq_kd.study.preflight import DIGESTS, check_digest_record, checkpoint_digests, same_checkpoints


def reconcile(settings: Path, cfg: StudyConfig, recorded: Set[str]) -> Tuple[StudyConfig, Dict]:
    """This run's settings against ``settings`` (study.json, if there): refuses a changed setting, naming it;
    returns the config to run (a ``--teachers`` entry may take its recorded name) and what study.json should
    now hold. ``recorded``: the methods with a finished cell (results.csv)."""
    current = json.loads(json.dumps(cfg.settings_fingerprint()))
    needs_teacher = any(uses_teacher(m) for m in cfg.methods)
    used = ("student_init",) + (("teacher",) if needs_teacher else ())  # a teacher-free run does not read it
    previous = integrity.load_json(str(settings), "restore it, or use a new --out-dir") if settings.exists() else {}
    current[T.DIGESTS] = previous.get(T.DIGESTS, {})
    if cfg.teachers and needs_teacher:  # the teacher axis, by content (a teacher moved keeps its name)
        teachers, current[T.DIGESTS] = T.reconcile(str(settings), current[T.DIGESTS], cfg.teachers)
        cfg = dataclasses.replace(cfg, teachers=tuple(teachers))
    if not current[T.DIGESTS]:
        del current[T.DIGESTS]
    current[REFERENCES] = reference_digests(str(settings), previous.get(REFERENCES) or {}, cfg)
    current[DATA] = data_digests(str(settings), previous.get(DATA) or {}, cfg)
    if not settings.exists():
        current[DIGESTS] = checkpoint_digests(current, used)
        return cfg, current
    joins, teacher = teacher_on_resume(previous.get("teacher"), current.get("teacher"), needs_teacher,
                                       any(used_teacher(m) for m in recorded))
    if joins:  # recorded as one setting, so a later resume compares against it
        previous["teacher"] = current["teacher"] = teacher
    same_checkpoints(str(settings), previous, current, used)
    changed = sorted(k for k in set(previous) | set(current) if k not in ("method_args", DIGESTS, T.DIGESTS, REFERENCES, DATA)
                     and not same_setting(k, previous.get(k), current.get(k)))
    changed += changed_method_args(previous.get("method_args", {}), current["method_args"], recorded, cfg.methods)
    if changed:
        raise KDInputError(f"{settings} was written with different settings ({', '.join(changed)}): "
                           f"resume with the same settings or use a new --out-dir")
    current["method_args"] = {**previous.get("method_args", {}), **current["method_args"]}
    return cfg, current


REFERENCES = "reference_sha256"  # study.json key: {split: sha256 of the raw reference its rows were scored with}


def reference_digests(where: str, recorded: Dict, cfg: StudyConfig) -> Dict[str, str]:
    """The references' digests to record: the recorded ones, with this run's splits added; a split whose
    reference now has other bytes is refused (its rows were scored against the recorded one)."""
    from fairseq_kd.fingerprint import files_fingerprint

    check_digest_record(where, REFERENCES, recorded, "splits", "record the references again")
    now = {split: files_fingerprint([ref]) for split, ref in [(cfg.gen_subset, cfg.test_ref), *cfg.extra_tests]
           if ref and os.path.isfile(ref)}
    for split, digest in now.items():
        if split in recorded and recorded[split] != digest:
            flag = "--test-ref " if split == cfg.gen_subset else f"--extra-test {split}="
            ref = cfg.test_ref if split == cfg.gen_subset else dict(cfg.extra_tests)[split]
            raise KDInputError(f"{where}: {flag}{ref} is not the reference this study's {split} rows were scored "
                               f"with (sha256 {recorded[split][:12]}; this file: {digest[:12]}): pass that "
                               f"reference, or use a new --out-dir")
    return {**recorded, **now}


DATA = "data_sha256"  # study.json key: {file of --data: sha256} (dictionaries and binarized splits)


def data_files(data: str) -> Dict[str, str]:
    """``{name: path}`` of what the students are trained and tested on: each ``--data`` dir's dictionaries
    and binarized splits (``a:b``, fairseq's sharded data: the second dir's names start ``1/``)."""
    out = {}
    for i, folder in enumerate(p for p in data.split(":") if p):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.endswith((".bin", ".idx")) or (name.startswith("dict.") and name.endswith(".txt")):
                    out[f"{i}/{name}" if i else name] = os.path.join(folder, name)
    return out


def data_digests(where: str, recorded: Dict, cfg: StudyConfig) -> Dict[str, str]:
    """The data's digests to record: the recorded ones, with files added since; a recorded file with other
    bytes now is refused (the finished cells, distilled corpora and noisy copies were made from the old
    ones: a ``bin/`` rebuilt in place under the same path). A study recorded before this has none: adopted."""
    from fairseq_kd.fingerprint import file_sha256

    check_digest_record(where, DATA, recorded, "files", "record the data again")
    now = {name: file_sha256(path) for name, path in data_files(cfg.data).items()}
    changed = [name for name, digest in now.items() if name in recorded and recorded[name] != digest]
    if changed:
        raise KDInputError(f"{where}: --data {cfg.data} is not the data this study was run on ({', '.join(changed[:4])}"
                           f"{' ...' if len(changed) > 4 else ''} changed since: sha256 {recorded[changed[0]][:12]}, "
                           f"now {now[changed[0]][:12]}): restore that data, or use a new --out-dir")
    return {**recorded, **now}


def changed_method_args(previous: Dict[str, str], current: Dict[str, str], recorded: Set[str],
                        methods: List[str]) -> List[str]:
    """Per-method flags may be added for a method with no finished cell (a new method or variant joins the
    study); flags of a method that has results (``recorded``) must stay as they were."""
    trained = set(recorded) | {method_base(m) for m in recorded}
    return [f"method_args[{m}]" for m in sorted(set(previous) | set(current))
            if not same_setting("method_args", previous.get(m), current.get(m)) and (m in previous or m in trained)
            and (m in current or m in set(methods))]


def teacher_on_resume(previous: Optional[str], current: Optional[str], needs_teacher: bool,
                      recorded_with_teacher: bool) -> Tuple[bool, Optional[str]]:
    """Whether a resumed study may go on with this run's teacher, and the teacher it then records.

    A teacher may join a study whose recorded cells used none (CE students first, the KD cells later in
    the same out-dir, as on a new machine while the teacher trains); a run whose methods need no
    teacher may add cells to a study that has one, which keeps it. Otherwise the teacher must be the
    one recorded (``(False, current)``: refused as any changed setting is)."""
    if current == previous:
        return True, current
    if not current and not needs_teacher:
        return True, previous
    if not previous and not recorded_with_teacher:
        return True, current
    return False, current


def used_teacher(method: str) -> bool:
    """A recorded row's method read the teacher (an unknown method: assumed to)."""
    try:
        return uses_teacher(method)
    except KeyError:
        return True


def same_setting(key: str, a, b) -> bool:
    """Whether two recorded values of a setting are the same; flag strings compare as the argument
    lists they parse to (a resume with the flags re-wrapped over lines is the same study)."""
    if key in ("train_args", "gen_args", "distill_args", "method_args") and isinstance(a, str) and isinstance(b, str):
        try:
            return shlex.split(a) == shlex.split(b)
        except ValueError:
            return a == b
    return a == b
