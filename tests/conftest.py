"""Shared fixtures: real-data location and tiny trained models reused across tests."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The tempered KL is compiled (torch.compile, ~25 s per kernel and process) in training; the tests run
# its eager version (the same formula) in every process they start, and tests/test_fused.py compiles it once.
os.environ.setdefault("FAIRSEQ_KD_COMPILE", "0")


def _shared_data_dir() -> Path:
    """Real corpora: $FAIRSEQ_KD_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("FAIRSEQ_KD_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real data folder; skips the test with a reason when absent."""
    path = _shared_data_dir()
    if not (path / "multi30k" / "train.de").exists():
        pytest.skip(f"real data not found at {path} (set FAIRSEQ_KD_DATA to the folder holding multi30k/)")
    return path


TIERS = ("slow", "integration", "unit")  # the order files run in: the longest first
# within the slow tier, the three files that take minutes each (CI's --durations) start first
LONGEST = ("test_system_multi30k.py", "test_converged_recipe.py", "test_export_slow.py")


def pytest_collection_modifyitems(config, items):
    """Tests without a tier marker are unit tests. Files run slowest tier first, each file's tests kept
    together and in order, so that scripts/test.sh's workers (pytest-xdist, one file at a time) start the
    long system tests at once instead of after the unit tests."""
    for item in items:
        if not any(item.get_closest_marker(m) for m in TIERS):
            item.add_marker(pytest.mark.unit)
    file_key = {}  # file -> (its best tier, its place among LONGEST, its first test's index): one key per file
    for i, item in enumerate(items):
        tier = min(t for t, m in enumerate(TIERS) if item.get_closest_marker(m))
        name = item.path.name
        rank, _, first = file_key.get(item.path, (tier, None, i))
        file_key[item.path] = (min(rank, tier), LONGEST.index(name) if name in LONGEST else len(LONGEST), first)
    items.sort(key=lambda item: file_key[item.path])  # stable: each file's tests stay together and in order


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """A tiny transformer trained in-process on a synthetic copy task (shared by tests)."""
    from tests import helpers

    root = tmp_path_factory.mktemp("tiny_teacher")
    return helpers.make_tiny_teacher(root)
