"""Faults: SIGKILL at random points, several times in a row, then a resume; and a full disk.

Kills: a driver process imports the tool once, then forks one child per attempt; the child counts its
durable steps (every ``os.replace`` and ``os.fsync``: each atomic write's flush and publish) and SIGKILLs
itself at step k (seeded random k in the first third of a whole run's steps; each resumed attempt skips
the work already done, so four kills walk through the run); and fresh runs are killed at each of their
last four steps (while they publish). After the kills a child runs to the end.
Truth: the files of one uninterrupted run, byte for byte (wall-clock fields excepted, named below).

Full disk: ``os.fsync`` raising ENOSPC (what a full disk gives the first flush that cannot be placed;
tests/test_reliability_disk.py does the same on a real tmpfs where one can be mounted) while each writing
tool rewrites a previous output (distill and cache: mid-run), and a study: exit 1 or 2 with one line naming the disk error, the previous output
byte-identical, no temporary left behind.
"""
import csv
import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers
from tests.fuzz_helpers import call, snapshot

pytestmark = pytest.mark.integration

DRIVER = r"""
import json, os, random, signal, sys
sys.path.insert(0, os.getcwd())
spec = json.loads(sys.argv[1])
tool = spec["tool"]
if tool == "study":
    from pathlib import Path
    from fairseq_kd import study as S
    from tests.test_study import fake_runner, make_cfg

    def target(argv):
        cfg = make_cfg((Path(spec["raw"]), Path(spec["data"])), argv[0])
        runner = fake_runner([])
        runner.ref = cfg.test_ref
        S.Study(cfg, runner=runner).run(progress=False)
        return 0
else:
    import importlib
    target = importlib.import_module("fairseq_kd.cli." + tool).cli_main


def attempt(argv, k):
    # one run in a forked child that SIGKILLs itself at durable step k (0: never); (status, steps)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        steps = [0]
        real_replace, real_fsync = os.replace, os.fsync

        def tick():
            steps[0] += 1
            if steps[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)

        def replace(*a, **kw):
            tick()
            return real_replace(*a, **kw)

        def fsync(fd):
            tick()
            return real_fsync(fd)

        os.replace, os.fsync = replace, fsync
        try:
            code = target(argv) or 0
        except SystemExit as e:
            code = e.code or 0
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 99
        os.write(w, str(steps[0]).encode())
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    steps = os.read(r, 64).decode()
    os.close(r)
    return status, int(steps) if steps else None


status, steps = attempt(spec["full"], 0)
assert status == 0 and steps, (status, steps)
rng = random.Random(spec["seed"])
result = {"steps": steps, "early": {"kills": []}, "late": []}
for _ in range(4):  # each kill in the first third of a whole run: a resumed attempt starts further on
    k = rng.randint(1, max(1, steps // 3))
    status, _ = attempt(spec["killed"], k)
    result["early"]["kills"].append((k, status))
    if status == 0:
        break  # finished before step k: nothing left to kill
result["early"]["final"] = attempt(spec["killed"], 0)[0]
for j, argv in enumerate(spec["late"]):  # a fresh run killed at each of its last steps (publishing), resumed
    k = steps - j
    result["late"].append({"kills": [(k, attempt(argv, k)[0])], "final": attempt(argv, 0)[0]})
print(json.dumps(result))
"""


LATE = ("late0", "late1", "late2", "late3")  # output dirs of the runs killed at their last, ..., 4th last step


def kill_and_resume(tool: str, argv_for, seed: int, **extra) -> dict:
    """Run ``argv_for("full")`` once; kill-and-resume ``argv_for("killed")`` (four early kills) and each
    ``argv_for(LATE[j])`` (one kill at the j-th last step); all must end with exit 0 after a SIGKILL."""
    spec = {"tool": tool, "full": argv_for("full"), "killed": argv_for("killed"),
            "late": [argv_for(n) for n in LATE], "seed": seed, **extra}
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(spec)], capture_output=True, text=True,
                       cwd=str(helpers.REPO), timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "FAIRSEQ_KD_COMPILE": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for seq in [out["early"], *out["late"]]:
        assert seq["final"] == 0, (out, r.stderr[-3000:])
        assert any(status == 9 for _, status in seq["kills"]), out  # 9: the child's SIGKILL (waitpid)
    return out


def _files(root: Path, skip):
    """Files under ``root`` but ``skip`` and the temporaries a killed write leaves (``*.tmp``: never read)."""
    return sorted(p.relative_to(root) for p in root.rglob("*")
                  if p.is_file() and p.name not in skip and not p.name.endswith(".tmp"))


def same_files(a: Path, b: Path, skip=(), roots=None) -> None:
    """Same files, byte for byte (``roots``: the two run folders, which files may name: read as one)."""
    files_a, files_b = _files(a, skip), _files(b, skip)
    assert files_a == files_b
    for rel in files_a:
        x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
        if roots:
            x = x.replace(str(roots[0]).encode(), b"RUN")
            y = y.replace(str(roots[1]).encode(), b"RUN")
        assert x == y, rel


@pytest.mark.parametrize("seed", [11])
def test_distill_killed_four_times_resumes_byte_identical(tiny_teacher, tmp_path, seed):
    base = ["--data", str(tiny_teacher.data_bin), "--split", "valid", "--teacher", str(tiny_teacher.checkpoint),
            "--cpu", "--no-progress", "--shard-size", "8", "--max-tokens", "40", "--max-len-a", "1.2",
            "--max-len-b", "10", "--decoding", "greedy"]
    kill_and_resume("distill", lambda n: base + ["-o", str(tmp_path / n)], seed)
    for name in ("killed", *LATE):  # published files and shards; summary.json holds decoding wall times
        same_files(tmp_path / "full", tmp_path / name, skip=("summary.json", "timing.json", ".fairseq-kd.lock"))
        assert leftovers(tmp_path / name) == []  # the resumed run deleted its killed writes' temporaries


@pytest.mark.parametrize("seed", [12])
def test_cache_killed_four_times_resumes_byte_identical(tiny_teacher, tmp_path, seed):
    base = [str(tiny_teacher.data_bin), "--teacher-path", str(tiny_teacher.checkpoint), "--split", "valid",
            "--topk", "4", "--batch-size", "4", "--flush-every", "1", "--no-progress", "--device", "cpu"]
    kill_and_resume("cache", lambda n: base + ["--out-dir", str(tmp_path / n)], seed)
    for name in ("killed", *LATE):
        same_files(tmp_path / "full", tmp_path / name, skip=(".fairseq-kd.lock",))
        assert leftovers(tmp_path / name) == []  # the resumed run deleted its killed writes' temporaries


def _without(path: Path, column: str) -> str:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    drop = rows[0].index(column)
    return "\n".join(",".join(c for i, c in enumerate(r) if i != drop) for r in rows)


@pytest.mark.parametrize("seed", [13])
def test_study_killed_four_times_resumes_byte_identical(tmp_path, seed):
    raw = helpers.make_synthetic_corpus(tmp_path / "raw", n_train=60, n_valid=10, n_test=12)
    data = helpers.preprocess(raw, tmp_path / "bin")
    kill_and_resume("study", lambda n: [str(tmp_path / n)], seed, raw=str(raw), data=str(data))
    for name in ("killed", *LATE):
        same_study(tmp_path / "full", tmp_path / name)


def same_study(full: Path, killed: Path) -> None:
    for name in ("results.csv", "curves.csv"):
        if name == "results.csv":  # train_time is the wall time of the (fake) training
            assert _without(full / name, "train_time") == _without(killed / name, "train_time")
        else:
            assert (full / name).read_bytes() == (killed / name).read_bytes()
    same_files(full / "cells", killed / "cells", skip=("train.json",), roots=(full, killed))
    for a in sorted((full / "cells").rglob("train.json")):
        b = killed / a.relative_to(full)
        strip = lambda p: {k: v for k, v in json.loads(p.read_text()).items() if k != "train_time"}  # noqa: E731
        assert strip(a) == strip(b)


# ---------------------------------------------------------------- full disk


class FullDisk:
    """``os.fsync`` fails with ENOSPC from its ``after``-th call on."""

    def __init__(self, monkeypatch, after: int = 0):
        real, calls = os.fsync, [0]

        def fsync(fd):
            calls[0] += 1
            if calls[0] > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


def leftovers(folder: Path):
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def _report_args(tmp_path):
    from tests.test_integrity import write, row

    res = write(tmp_path, row(seed=1), row(seed=2, bleu="31"), row("word", 1, "33"))
    return [res, "--no-plots", "--no-significance", "--out-dir", str(tmp_path / "out")]


WRITERS = {  # tool -> (module, argv builder(tmp_path, tiny_teacher))
    "noise": ("fairseq_kd.cli.noise", lambda t, tt: ["-i", str(t / "in.txt"), "-o", str(t / "out" / "o.txt"),
                                                     "--deletion", "0.5"]),
    "score": ("fairseq_kd.cli.score", lambda t, tt: ["-r", str(t / "in.txt"), "-i", str(t / "in.txt"), "-o",
                                                     str(t / "out" / "s.json")]),
    "report": ("fairseq_kd.cli.report", lambda t, tt: _report_args(t)),
}


def _changed(tool, args, tmp_path):
    """The second run's arguments: a run whose outputs would differ from the first's if it wrote them."""
    if tool == "noise":
        return args + ["--seed", "7"]
    if tool == "score":
        return args + ["--metrics", "bleu"]
    with open(args[0], "a") as f:  # report: one more seed
        f.write(__import__("tests.test_integrity", fromlist=["row"]).row(seed=3, bleu="35") + "\n")
    return args


def one_disk_line(r):
    assert r.rc in (1, 2) and "Traceback" not in r.err and "No space left on device" in r.err, r.err[-2000:]
    assert len([ln for ln in r.err.splitlines() if "No space left" in ln]) == 1, r.err[-2000:]


@pytest.mark.parametrize("tool", sorted(WRITERS))
def test_full_disk_keeps_the_previous_output(tool, tmp_path, monkeypatch):
    module, argv = WRITERS[tool]
    (tmp_path / "in.txt").write_text("ein kleiner Test mit vielen Wörtern\nmit Wörtern und noch mehr\n")
    (tmp_path / "out").mkdir()
    args = argv(tmp_path, None)
    first = call(module, args)
    assert first.rc == 0, first.err[-2000:]
    args = _changed(tool, args, tmp_path)
    before = snapshot([str(tmp_path / "out")])
    FullDisk(monkeypatch)
    one_disk_line(call(module, args))
    assert snapshot([str(tmp_path / "out")]) == before
    assert leftovers(tmp_path) == []
    monkeypatch.undo()  # the disk has room again: the same run now replaces the output
    assert call(module, args).rc == 0 and snapshot([str(tmp_path / "out")]) != before


@pytest.mark.parametrize("tool,argv", [
    ("distill", ["--split", "valid", "--cpu", "--no-progress", "--decoding", "greedy", "--shard-size", "8"]),
    ("cache", ["--split", "valid", "--topk", "4", "--no-progress", "--device", "cpu", "--batch-size", "4",
               "--flush-every", "1"]),
])
def test_full_disk_mid_run_publishes_nothing(tool, argv, tiny_teacher, tmp_path, monkeypatch):
    """The disk fills after a few durable steps: one line, nothing published (distill: no summary.json and no
    text; cache: no SPLIT.meta.json), no temporary left; with room again the run finishes."""
    out = tmp_path / "out"
    io_args = (["--data", str(tiny_teacher.data_bin), "--teacher", str(tiny_teacher.checkpoint), "-o", str(out)]
               if tool == "distill" else [str(tiny_teacher.data_bin), "--teacher-path", str(tiny_teacher.checkpoint),
                                          "--out-dir", str(out)])
    FullDisk(monkeypatch, after=2)
    one_disk_line(call(f"fairseq_kd.cli.{tool}", io_args + argv))
    published = ["summary.json", "valid.src", "valid.tgt"] if tool == "distill" else ["valid.meta.json"]
    assert not any((out / name).exists() for name in published)
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    assert call(f"fairseq_kd.cli.{tool}", io_args + argv).rc == 0
    assert all((out / name).exists() for name in published)


def test_full_disk_during_a_study_keeps_its_results(tmp_path, monkeypatch):
    """A study that gains a seed on a full disk: a disk error (one line through the tools' handler), the
    previous results.csv and curves.csv byte-identical."""
    from fairseq_kd import errors
    from fairseq_kd import study as S
    from tests.test_study import fake_runner, make_cfg

    raw = helpers.make_synthetic_corpus(tmp_path / "raw", n_train=60, n_valid=10, n_test=12)
    corpus = (raw, helpers.preprocess(raw, tmp_path / "bin"))
    runner = fake_runner([])
    cfg = make_cfg(corpus, tmp_path / "study", noise=[0.0])
    runner.ref = cfg.test_ref
    S.Study(cfg, runner=runner).run(progress=False)
    before = snapshot([str(tmp_path / "study" / n) for n in ("results.csv", "curves.csv", "study.json")])
    FullDisk(monkeypatch)
    with pytest.raises(errors.KDDiskError) as err:
        S.Study(make_cfg(corpus, tmp_path / "study", noise=[0.0], seeds=[1, 2]), runner=runner).run(progress=False)
    assert errors.one_line(err.value) is not None and "No space left" in errors.one_line(err.value)[1]
    assert snapshot([str(tmp_path / "study" / n) for n in ("results.csv", "curves.csv", "study.json")]) == before
    assert leftovers(tmp_path / "study") == []
