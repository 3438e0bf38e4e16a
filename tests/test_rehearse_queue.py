"""docs/results/tools/rehearse_queue.sh: a lane queue rewritten onto miniature data and small budgets, every job
run in order, the rehearsal failing when one of them fails. The jobs here are shell one-liners (the real queue's
jobs were rehearsed in docs/results.md 7j); the data step is skipped by a prepared WORK/m30k."""
import subprocess

import pytest

from tests import helpers

pytestmark = pytest.mark.integration
SCRIPT = helpers.REPO / "docs" / "results" / "tools" / "rehearse_queue.sh"


def rehearse(queue, work, *args):
    return subprocess.run(["bash", str(SCRIPT), "--queue", str(queue), "--work", str(work), "--export-stages", "",
                           *args], capture_output=True, text=True, timeout=120, cwd=helpers.REPO)


def test_rewrite_moves_every_path_and_adds_the_small_budgets(tmp_path):
    q = tmp_path / "queue.txt"
    q.write_text("# a comment about exp/converged stays a comment\n"
                 "a -- bash s.sh --stage 2 --out-root exp/converged\n"
                 "b after=a -- D=$(cat exp/converged/d.txt) && bash s.sh --student-init "
                 "exp/converged/x/checkpoint_best.pt --out-root exp/converged\n")
    work = tmp_path / "w"
    proc = rehearse(q, work, "--run", "0", "--max-update", "7", "--interval", "3")
    assert proc.returncode == 0, proc.stderr
    small = (f"--prep {work}/m30k --max-update 7 --interval 3 --patience 1 --continue-updates 20 "
             f"--noise-copies 2")
    assert (work / "queue.txt").read_text().splitlines() == [
        f"# a comment about {work}/converged stays a comment",
        f"a -- bash s.sh --stage 2 --out-root {work}/converged {small}",
        f"b after=a -- D=$(cat {work}/converged/d.txt) && bash s.sh --student-init "
        f"{work}/converged/x/checkpoint_best.pt --out-root {work}/converged {small}"]


def test_a_queue_with_no_study_job_is_refused(tmp_path):
    q = tmp_path / "queue.txt"
    q.write_text("a -- echo hello\n")
    proc = rehearse(q, tmp_path / "w", "--run", "0")
    assert proc.returncode == 1
    assert str(q) in proc.stderr and "--out-root exp/converged" in proc.stderr


def test_bad_option_is_a_usage_error(tmp_path):
    q = tmp_path / "queue.txt"
    q.write_text("a -- true --out-root exp/converged\n")
    proc = rehearse(q, tmp_path / "w", "--max-update", "0")
    assert proc.returncode == 2 and "--max-update" in proc.stderr


@pytest.mark.parametrize("second,rc", [("true", 0), ("false", 1)])
def test_the_rehearsal_fails_when_a_job_fails(tmp_path, second, rc):
    q = tmp_path / "queue.txt"
    q.write_text(f"a -- true --out-root exp/converged\nb after=a -- {second} --out-root exp/converged\n"
                 f"c after=b -- true --out-root exp/converged\n")
    work = tmp_path / "w"
    (work / "m30k").mkdir(parents=True)
    (work / "m30k" / "spm.model").write_text("")  # data step done
    proc = rehearse(q, work)
    assert proc.returncode == rc, proc.stderr
    done = sorted(p.name for p in (work / ".lanes").glob("*.done"))
    failed = sorted(p.name for p in (work / ".lanes").glob("*.failed"))
    if rc == 0:
        assert done == ["a.done", "b.done", "c.done"] and failed == [] and "passed" in proc.stdout
    else:
        assert done == ["a.done"] and failed == ["b.failed", "c.failed"] and "2 job(s) failed" in proc.stderr
