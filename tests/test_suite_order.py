"""The order conftest.py gives the suite (scripts/test.sh's pytest-xdist workers take whole files in this
order): every file's tests together and in their own order, the slow tier's files first, the files that take
minutes at the head. Truths: the collection of each file alone (its own order) and the tier markers."""
import subprocess
import sys
from pathlib import Path

from tests.conftest import LONGEST

REPO = Path(__file__).resolve().parents[1]


def collect(*args) -> list:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", *args],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_files_run_whole_slow_tier_first_longest_at_the_head():
    ids = collect()
    files = [i.split("::")[0] for i in ids]
    order = list(dict.fromkeys(files))
    assert sum(1 for a, b in zip(files, files[1:]) if a != b) == len(order) - 1  # each file contiguous
    slow = set(f.split("::")[0] for f in collect("-m", "slow"))
    assert slow and set(order[:len(slow)]) == slow  # the slow tier's files first
    assert [Path(f).name for f in order[:len(LONGEST)]] == list(LONGEST)
    mixed = "tests/test_distill.py"  # unit and integration tests interleaved: a per-test sort would reorder it
    assert [i for i in ids if i.startswith(mixed + "::")] == collect(mixed)
