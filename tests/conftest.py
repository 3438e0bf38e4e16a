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


def pytest_collection_modifyitems(config, items):
    """Tests without a tier marker are unit tests."""
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("unit", "integration", "slow")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """A tiny transformer trained in-process on a synthetic copy task (shared by tests)."""
    from tests import helpers

    root = tmp_path_factory.mktemp("tiny_teacher")
    return helpers.make_tiny_teacher(root)
