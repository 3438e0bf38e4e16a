"""``fairseq_kd.parts``: the --part I/N bookkeeping shared by fairseq-kd-cache and fairseq-kd-distill."""
import argparse

import pytest

from fairseq_kd import parts
from fairseq_kd.errors import KDInputError


def test_parse_part_and_slices_cover_the_plan_once():
    assert parts.parse_part("1/3") == (1, 3) and str(parts.parse_part(" 0 / 2 ")) == "0/2"
    for bad in ("2/2", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(KDInputError):
            parts.parse_part(bad)
    for n_units in (0, 1, 5, 17):
        for n in (1, 2, 3, 7):
            covered = [u for i in range(n) for u in range(n_units)[parts.parse_part(f"{i}/{n}").slice(n_units)]]
            assert covered == list(range(n_units))  # contiguous, disjoint, complete, in order
    p = argparse.ArgumentParser()
    parts.add_arguments(p)
    assert p.parse_args(["--part", "1/2"]).part == (1, 2)
    with pytest.raises(SystemExit) as err:
        p.parse_args(["--part", "2/2"])
    assert err.value.code == 2  # a usage error


def test_collect_refuses_missing_unfinished_foreign_and_mixed_parts(tmp_path):
    fp = {"data": "d1", "teacher": "t1"}
    plan = [[0, 1, 2], [3, 4]]
    with pytest.raises(KDInputError, match="no parts"):
        parts.collect(str(tmp_path), "tool", fp)
    parts.write_manifest(parts.part_dir(str(tmp_path), 0, 2), "tool", 0, 2, fp, plan[0])
    with pytest.raises(KDInputError, match=r"part 1/2 is missing.*--part 1/2"):
        parts.collect(str(tmp_path), "tool", fp, plan)
    (tmp_path / "parts" / "1-of-2").mkdir()
    with pytest.raises(KDInputError, match="part 1/2 is not finished"):
        parts.collect(str(tmp_path), "tool", fp, plan)
    parts.write_manifest(parts.part_dir(str(tmp_path), 1, 2), "tool", 1, 2, {"data": "d2", "teacher": "t1"}, plan[1])
    with pytest.raises(KDInputError, match=r"part 1/2 .* is foreign.*data differ"):
        parts.collect(str(tmp_path), "tool", fp, plan)
    parts.write_manifest(parts.part_dir(str(tmp_path), 1, 2), "tool", 1, 2, fp, [3])
    with pytest.raises(KDInputError, match="covers other items"):
        parts.collect(str(tmp_path), "tool", fp, plan)
    parts.write_manifest(parts.part_dir(str(tmp_path), 1, 2), "tool", 1, 2, fp, plan[1])
    assert [m["part"] for m in parts.collect(str(tmp_path), "tool", fp, plan)] == [0, 1]
    with pytest.raises(KDInputError, match="not part 0/2 of other"):
        parts.collect(str(tmp_path), "other", fp, plan)
    parts.write_manifest(parts.part_dir(str(tmp_path), 0, 3), "tool", 0, 3, fp, [0])
    with pytest.raises(KDInputError, match="different splits"):
        parts.collect(str(tmp_path), "tool", fp, plan)
