"""fairseq-kd-cache split across workers: --part I/N then --merge equals one worker, byte for byte."""
from pathlib import Path

import pytest
import torch

import fairseq_kd  # noqa: F401  (checkpoint allowlist)
from fairseq_kd.cli import cache as cache_cli
from fairseq_kd.errors import KDInputError
from tests import helpers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_parts")
    raw = helpers.make_synthetic_corpus(root / "raw", n_train=60, n_valid=20, n_test=4)
    data_bin = helpers.preprocess(raw, root / "bin", splits=("train", "valid"))
    teacher = helpers.train(data_bin, root / "teacher", max_epoch=1, max_tokens=400)
    return root, data_bin, teacher


def run(data_bin, teacher, out, *extra):
    return cache_cli.main(cache_cli.get_parser().parse_args(
        [str(data_bin), "--teacher-path", str(teacher), "--out-dir", str(out), "--topk", "4", "--max-tokens", "60",
         "--no-progress", "--split", "train", "--split", "valid", *extra]))


def published(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and not p.name.startswith(".")}


def test_two_parts_and_merge_are_byte_identical_to_one_worker(tiny, tmp_path):
    _, data_bin, teacher = tiny
    run(data_bin, teacher, tmp_path / "one")
    out = tmp_path / "two"
    summary = run(data_bin, teacher, out, "--part", "0/2")
    assert [s["status"] for s in summary] == ["part written"] * 2 and 0 < summary[0]["sentences"] < 60
    with pytest.raises(KDInputError, match=r"part 1/2 is missing.*--part 1/2"):
        run(data_bin, teacher, out, "--merge")
    assert run(data_bin, teacher, out, "--part", "1/2")[0]["sentences"] == 60 - summary[0]["sentences"]
    assert [s["status"] for s in run(data_bin, teacher, out, "--merge")] == ["merged"] * 2
    one, two = published(tmp_path / "one"), published(out)
    assert sorted(one) == sorted(two) and any(n.startswith("train.probs") for n in one)
    assert all(one[n] == two[n] for n in one), [n for n in one if one[n] != two[n]]
    assert not (out / "train").exists()  # parts removed once published


def test_merge_refuses_a_foreign_part(tiny, tmp_path):
    root, data_bin, teacher = tiny
    state = torch.load(str(teacher), map_location="cpu", weights_only=True)  # raw, as fairseq saved it
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key] = state["model"][key] + 0.01
    other = root / "other_teacher.pt"
    torch.save(state, other)  # another teacher (same dictionaries, other weights)
    out = tmp_path / "mixed"
    run(data_bin, teacher, out, "--part", "0/2")
    run(data_bin, other, out, "--part", "1/2")
    with pytest.raises(KDInputError, match=r"part 1/2 .* is foreign.*teacher"):
        run(data_bin, teacher, out, "--merge")
    run(data_bin, teacher, out, "--part", "0/3")
    with pytest.raises(KDInputError, match="different splits"):
        run(data_bin, teacher, out, "--merge")
    assert not (out / "train.meta.json").exists()  # nothing published
