"""scripts/run_lanes.sh: a queue of long jobs on N lanes, each job once, needs respected, failures
propagated, resumable. Jobs here are shell one-liners that record when they start and end."""
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests import helpers

pytestmark = pytest.mark.integration
SCRIPT = helpers.REPO / "scripts" / "run_lanes.sh"


def lanes(queue: Path, *args, check_rc=None):
    proc = subprocess.run(["bash", str(SCRIPT), "--queue", str(queue), "--poll", "1", *args],
                          capture_output=True, text=True, timeout=120)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


def job(name, out, seconds=0, after=""):
    """A queue line: appends 'start NAME <ns>' and 'end NAME <ns>' to OUT around a sleep."""
    head = f"{name} after={after}" if after else name
    return (f"{head} -- echo start {name} $(date +%s%N) >> {out}; sleep {seconds}; "
            f"echo end {name} $(date +%s%N) >> {out}")


def events(out: Path):
    ev = {}
    for line in out.read_text().splitlines():
        kind, name, ns = line.split()
        ev.setdefault(name, {}).setdefault(kind, []).append(int(ns))
    return ev


def test_every_job_runs_once_after_what_it_needs(tmp_path):
    out = tmp_path / "events"
    q = tmp_path / "queue.txt"
    q.write_text("\n".join(["# two lanes, four jobs", "", job("a", out, 1), job("b", out, 2),
                            job("c", out, 0, after="a,b"), job("d", out, 1),
                            f"env -- echo $OMP_NUM_THREADS $MKL_NUM_THREADS $(pwd) > {tmp_path / 'env'}"]) + "\n")
    lanes(q, "--lanes", "2", check_rc=0)
    ev = events(out)
    assert {n: (len(e["start"]), len(e["end"])) for n, e in ev.items()} == {n: (1, 1) for n in "abcd"}
    assert ev["c"]["start"][0] >= max(ev["a"]["end"][0], ev["b"]["end"][0])  # needs first
    assert ev["b"]["start"][0] < ev["a"]["end"][0]  # two lanes: a and b side by side
    assert (tmp_path / "env").read_text().split() == ["1", "1", str(helpers.REPO)]  # one thread, repo root

    again = lanes(q, "--lanes", "2", check_rc=0)  # everything done: nothing runs again
    assert events(out) == ev and "start" not in again.stderr
    with open(q, "a") as f:
        f.write(job("e", out, 0, after="c") + "\n")  # a job appended later is picked up
    lanes(q, check_rc=0)
    assert set(events(out)) == set("abcde") and events(out)["a"] == ev["a"]


def test_a_failure_fails_what_needs_it_and_nothing_else(tmp_path):
    out = tmp_path / "events"
    q = tmp_path / "queue.txt"
    q.write_text("\n".join(["bad -- exit 3", job("child", out, 0, after="bad"), job("other", out, 0)]) + "\n")
    proc = lanes(q, check_rc=1)
    assert set(events(out)) == {"other"}
    state = tmp_path / ".lanes"
    assert (state / "bad.failed").read_text().startswith("exit 3")
    assert "bad" in (state / "child.failed").read_text()
    assert "bad failed: exit 3" in proc.stderr and "child failed" in proc.stderr
    status = lanes(q, "--status", "1", check_rc=0).stdout.split("\n")
    assert [line.split()[:2] for line in status if line] == [["failed", "bad"], ["failed", "child"], ["done", "other"]]


def test_a_job_killed_by_a_signal_stays_open_and_runs_again(tmp_path):
    out = tmp_path / "events"
    mark = tmp_path / "killed_once"
    q = tmp_path / "queue.txt"
    q.write_text(f"k -- if [ ! -e {mark} ]; then touch {mark}; kill -KILL $$; fi; echo start k 1 >> {out}\n")
    first = lanes(q, "--lanes", "1", check_rc=1)
    assert "killed by signal 9: left open" in first.stderr and not out.exists()
    assert not (tmp_path / ".lanes" / "k.failed").exists()
    lanes(q, check_rc=0)  # the next run finishes it
    assert out.read_text() == "start k 1\n"


@pytest.mark.parametrize("line, says", [
    ("no separator here", "write a job as NAME"),
    ("a b c -- true", "the only option is after="),
    ("a after=zz -- true", "needs zz, which is not in the queue"),
    ("bad/name -- true", "letters, digits"),
])
def test_a_malformed_queue_is_a_usage_error_naming_the_line(tmp_path, line, says):
    q = tmp_path / "queue.txt"
    q.write_text(f"ok -- true\n{line}\n")
    proc = lanes(q, check_rc=2)
    assert says in proc.stderr and ("queue.txt:2" in proc.stderr or "queue.txt:" in proc.stderr)
    assert not (tmp_path / ".lanes" / "ok.done").exists()  # refused before anything ran


@pytest.mark.parametrize("lines, ring", [
    (["x after=x -- true"], "x -> x"),
    (["a after=c -- true", "b after=a -- true", "c after=b -- true"], "a -> c -> b -> a"),
    (["a -- true", "b after=a,d -- true", "c after=b -- true", "d after=c -- true"], "b -> d -> c -> b"),
])
def test_a_cycle_of_after_is_refused_naming_it_not_waited_on_for_ever(tmp_path, lines, ring):
    q = tmp_path / "queue.txt"
    q.write_text("\n".join(["free -- true", *lines]) + "\n")
    proc = lanes(q, check_rc=2)  # before: every lane polled for ever (the 120 s timeout here)
    assert f"after= makes a cycle, {ring}" in proc.stderr
    assert not (tmp_path / ".lanes" / "free.done").exists()  # refused before anything ran


def test_needs_shared_by_two_paths_are_not_a_cycle(tmp_path):
    out = tmp_path / "events"
    q = tmp_path / "queue.txt"
    q.write_text("\n".join([job("a", out), job("b", out, after="a"), job("c", out, after="a,b")]) + "\n")
    lanes(q, check_rc=0)
    ev = events(out)
    assert ev["a"]["end"][0] <= ev["b"]["start"][0] and ev["b"]["end"][0] <= ev["c"]["start"][0]


def test_a_name_twice_and_a_missing_queue_are_refused(tmp_path):
    q = tmp_path / "queue.txt"
    q.write_text("a -- true\na -- false\n")
    assert "also on line 1" in lanes(q, check_rc=2).stderr
    proc = subprocess.run(["bash", str(SCRIPT), "--queue", str(tmp_path / "none.txt")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_two_runners_on_one_queue_share_the_jobs(tmp_path):
    """Started twice by mistake (or on purpose), the runners still give each job to one lane."""
    out = tmp_path / "events"
    q = tmp_path / "queue.txt"
    q.write_text("\n".join(job(n, out, 1) for n in "abcd") + "\n")
    procs = [subprocess.Popen(["bash", str(SCRIPT), "--queue", str(q), "--poll", "1", "--lanes", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert {n: len(e["start"]) for n, e in events(out).items()} == {n: 1 for n in "abcd"}


def test_a_done_job_whose_command_changed_is_refused_not_skipped(tmp_path):
    """NAME.done holds the command that ran: a queue that changes a done job's command (more seeds, another
    flag) is refused at the start, naming the job and the two ways on, instead of the new command never
    running while --status says done; a .done from before commands were recorded (empty) stays done."""
    out = tmp_path / "events"
    q = tmp_path / "queue.txt"
    q.write_text(job("a", out) + "\n" + job("old", out) + "\n")
    lanes(q, check_rc=0)
    state = tmp_path / ".lanes"
    assert (state / "a.done").read_text().splitlines()[0] == job("a", out).split(" -- ", 1)[1]
    (state / "old.done").write_text("")  # written by an earlier run_lanes.sh
    edited = job("a", out).replace("sleep 0", "sleep 0; true")
    q.write_text(edited + "\n" + job("old", out).replace("sleep 0", "sleep 1") + "\n")
    proc = lanes(q, check_rc=1)
    assert "job a is done, but by another command than the queue's now" in proc.stderr
    assert f"delete {state}/a.done to run it again" in proc.stderr and "job old" not in proc.stderr
    status = lanes(q, "--status", "1", check_rc=0).stdout.splitlines()
    assert [line.split()[:2] for line in status] == [["changed", "a"], ["done", "old"]]
    assert len(events(out)["a"]["start"]) == 1  # nothing ran
    (state / "a.done").unlink()
    lanes(q, check_rc=0)
    assert len(events(out)["a"]["start"]) == 2 and len(events(out)["old"]["start"]) == 1
    assert (state / "a.done").read_text().splitlines()[0] == edited.split(" -- ", 1)[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def states(queue: Path):
    return [line.split()[:2] for line in lanes(queue, "--status", "1", check_rc=0).stdout.splitlines()]


def test_a_job_after_a_job_run_again_is_stale_and_refused(tmp_path):
    """NAME.done records the .done of each job NAME ran after: deleting x.done to run x again leaves y
    (after=x) done on x's old outputs, so y is stale, and refused at the start like a changed job (audit F9)."""
    out = tmp_path / "events"
    q = tmp_path / "queue.txt"
    q.write_text(job("x", out) + "\n" + job("y", out, after="x") + "\n")
    lanes(q, check_rc=0)
    state = tmp_path / ".lanes"
    assert f"need x {sha256(state / 'x.done')}" in (state / "y.done").read_text().splitlines()

    (state / "x.done").unlink()  # the documented way to run x again: y would stay done on the old x
    proc = lanes(q, check_rc=1)
    assert (f"job y is done, but x, which it ran after, has no .done now (to run again), so y is stale: "
            f"delete {state}/y.done") in proc.stderr
    assert len(events(out)["x"]["start"]) == 1  # refused before anything ran
    assert states(q) == [["open", "x"], ["stale", "y"]]

    qx = tmp_path / "queue_x.txt"  # x alone run again (same state dir), y left as it was
    qx.write_text(job("x", out) + "\n")
    lanes(qx, check_rc=0)
    assert len(events(out)["x"]["start"]) == 2
    assert states(q) == [["done", "x"], ["stale", "y"]]
    proc = lanes(q, check_rc=1)
    assert (f"job y is done, but x, which it ran after, has run again since, so y is stale: delete "
            f"{state}/y.done to run y again on x's new outputs, or restore x's outputs and the {state}/x.done"
            in proc.stderr)
    assert "job x" not in proc.stderr and len(events(out)["y"]["start"]) == 1

    (state / "y.done").unlink()
    lanes(q, check_rc=0)
    assert len(events(out)["y"]["start"]) == 2 and len(events(out)["x"]["start"]) == 2
    assert states(q) == [["done", "x"], ["done", "y"]]


def test_done_files_without_needs_recorded_are_never_stale(tmp_path):
    """A .done from before needs were recorded (empty, or the command only) says nothing of what the job ran
    after: it stays done whatever its needs do; the jobs run after it now record it."""
    out = tmp_path / "events"
    q = tmp_path / "queue.txt"
    q.write_text("\n".join([job("x", out), job("y", out, after="x"), job("z", out, after="y")]) + "\n")
    state = tmp_path / ".lanes"
    state.mkdir()
    (state / "x.done").write_text("")
    (state / "y.done").write_text(job("y", out).split(" -- ", 1)[1] + "\n")
    lanes(q, check_rc=0)
    assert set(events(out)) == {"z"}  # x and y were done
    assert f"need y {sha256(state / 'y.done')}" in (state / "z.done").read_text().splitlines()
    (state / "x.done").unlink()  # x runs again; y's needs are unknown: not stale, and z stays done
    lanes(q, check_rc=0)
    assert {n: len(e["start"]) for n, e in events(out).items()} == {"x": 1, "z": 1}
    assert states(q) == [["done", "x"], ["done", "y"], ["done", "z"]]


@pytest.mark.parametrize("how", ["changed", "run again"])
def test_a_changed_or_stale_job_is_not_done_for_the_jobs_after_it_while_lanes_run(tmp_path, how):
    """The start refuses a changed or stale job; while lanes run, a job after it is not run on its outputs:
    it waits, and a lane with nothing else it can run stops naming it (the run exits 1)."""
    out = tmp_path / "events"
    gate, started = tmp_path / "gate", tmp_path / "started"
    q = tmp_path / "queue.txt"
    q.write_text(job("a", out) + "\n" + job("b", out, after="a") + "\n")
    lanes(q, check_rc=0)
    lines = [job("a", out), job("b", out, after="a"),
             f"hold -- touch {started}; while [ ! -e {gate} ]; do sleep 0.1; done",
             job("c", out, after="b,hold")]
    q.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(["bash", str(SCRIPT), "--queue", str(q), "--poll", "1", "--lanes", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(300):
        if started.exists():
            break
        time.sleep(0.05)
    assert started.exists()
    state = tmp_path / ".lanes"
    if how == "changed":  # b's command edited while the lanes run (the file replaced whole)
        lines[1] = lines[1].replace("sleep 0", "sleep 0; true")
        (tmp_path / "queue.new").write_text("\n".join(lines) + "\n")
        os.replace(tmp_path / "queue.new", q)
    else:  # a.done deleted while the lanes run: the lane runs a again, and b is stale
        (state / "a.done").unlink()
    gate.touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "c" not in events(out) and len(events(out)["b"]["start"]) == 1
    assert len(events(out)["a"]["start"]) == (2 if how == "run again" else 1)
    assert "not run: c, which waits on b: job b is done, but" in err
    assert dict((n, s) for s, n in states(q))["b"] == ("changed" if how == "changed" else "stale")


@pytest.mark.parametrize("value", ["true", "1"])
def test_status_true_or_1_prints_the_states_and_runs_nothing(tmp_path, value):
    """--status true used to be taken as "not 1" and ran the whole queue."""
    out = tmp_path / "events"
    q = tmp_path / "queue.txt"
    q.write_text(job("a", out) + "\n" + job("b", out, after="a") + "\n")
    proc = lanes(q, "--status", value, check_rc=0)
    assert [line.split()[:2] for line in proc.stdout.splitlines()] == [["open", "a"], ["waiting", "b"]]
    assert not out.exists() and "start" not in proc.stderr
    assert not (tmp_path / ".lanes" / "a.done").exists()


@pytest.mark.parametrize("value", ["maybe", "yes", "2", ""])
def test_status_other_than_a_boolean_is_a_usage_error(tmp_path, value):
    out = tmp_path / "events"
    q = tmp_path / "queue.txt"
    q.write_text(job("a", out) + "\n")
    proc = lanes(q, "--status", value, check_rc=2)
    assert "--status" in proc.stderr and not out.exists()


def test_status_false_runs_the_queue(tmp_path):
    out = tmp_path / "events"
    q = tmp_path / "queue.txt"
    q.write_text(job("a", out) + "\n")
    lanes(q, "--status", "false", check_rc=0)
    assert set(events(out)) == {"a"}
