"""What bench/bench_export.py, bench/qat_ladder.py and bench/int8_isa.py reuse on a rerun: a trained student
or branch only when its training finished with the settings asked for (a killed run's checkpoint_last.pt,
another --updates / --budget / --more-updates is trained again), an export only when it was made from the
same checkpoint bytes, dictionaries and sentencepiece model, and prepared data only when prepare_multi30k.sh's
settings check passes. Training and decoding are faked (the reuse decision is under test): the fake
fairseq-train writes a copy of the tiny teacher's checkpoint at the update count its command asks for."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name):
    sys.path.insert(0, str(REPO / "bench"))  # qat_ladder imports bench_export by name, as when run
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _last(cmd, flag):
    return cmd[len(cmd) - 1 - cmd[::-1].index(flag) + 1]  # argparse takes an option's last value


def _write_checkpoint(src: Path, dst: Path, num_updates: int):
    import torch

    state = torch.load(str(src), map_location="cpu", weights_only=False)
    state["optimizer_history"][-1]["num_updates"] = num_updates
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, str(dst))


def _num_updates(ckpt: Path) -> int:
    import torch

    return torch.load(str(ckpt), map_location="cpu", weights_only=False)["optimizer_history"][-1]["num_updates"]


class FakeTrain:
    """``sh`` of the benches: a fairseq-train command writes ``checkpoint_last.pt`` at its --max-update
    (``stop_at``: at that many updates, then fails like a killed run, or exits 0 when ``exit_ok``)."""

    def __init__(self, teacher_ckpt: Path):
        self.teacher, self.calls, self.stop_at, self.exit_ok = teacher_ckpt, [], None, False

    def __call__(self, cmd, log=None, nice=True):
        cmd = [str(c) for c in cmd]
        assert cmd[0].endswith("fairseq-train"), cmd
        save, budget = Path(_last(cmd, "--save-dir")), int(_last(cmd, "--max-update"))
        self.calls.append((save.name, budget))
        _write_checkpoint(self.teacher, save / "checkpoint_last.pt", self.stop_at or budget)
        if self.stop_at and not self.exit_ok:
            raise SystemExit(f"failed: {' '.join(cmd)}")


@pytest.fixture
def bench_export(monkeypatch, tiny_teacher):
    mod = _load("bench_export")
    fake = FakeTrain(tiny_teacher.checkpoint)
    monkeypatch.setattr(mod, "sh", fake)
    mod.fake = fake
    return mod


def test_prepare_runs_the_prep_scripts_settings_check(tmp_path):
    """prepare() used to skip when bin/dict.de.txt existed, so another --vocab-size was silently ignored."""
    mod = _load("bench_export")
    data, out = tmp_path / "data", tmp_path / "m30k"
    data.mkdir()
    for name in ("train", "val", "test_2016_flickr"):
        for lang in ("de", "en"):
            (data / f"{name}.{lang}").write_text("ein hund\n")
    (out / "bin").mkdir(parents=True)
    (out / "bin" / "dict.de.txt").write_text("hund 1\n")
    (out / ".prep_settings").write_text(f"data_dir={data} vocab_size=4000 spm_model_type=unigram "
                                        f"test_sets=test_2016_flickr src=de tgt=en min_len=1 max_len=250 ratio=2.0")
    with pytest.raises(SystemExit, match="other settings"):
        mod.prepare(data, out, 8000)


@pytest.mark.integration
def test_killed_student_training_is_trained_again(bench_export, tmp_path):
    """A killed run's checkpoint_last.pt (saved at an epoch end, 56 of 300 updates) was benchmarked."""
    work = tmp_path / "work"
    work.mkdir()
    bench_export.fake.stop_at = 56
    with pytest.raises(SystemExit):
        bench_export.train_student(tmp_path / "m30k", work, "glu_3m", 300)
    bench_export.fake.stop_at = None
    ckpt = bench_export.train_student(tmp_path / "m30k", work, "glu_3m", 300)
    assert len(bench_export.fake.calls) == 2
    assert _num_updates(ckpt) == 300
    assert ckpt == work / "glu_3m" / "checkpoint_last.pt"
    # finished: reused as it is
    assert bench_export.train_student(tmp_path / "m30k", work, "glu_3m", 300) == ckpt
    assert len(bench_export.fake.calls) == 2


@pytest.mark.integration
def test_fairseq_train_exiting_short_of_the_budget_is_not_reused(bench_export, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    bench_export.fake.stop_at, bench_export.fake.exit_ok = 56, True
    with pytest.raises(SystemExit, match="stopped at 56 updates, not the 300"):
        bench_export.train_student(tmp_path / "m30k", work, "glu_3m", 300)
    assert not (work / "glu_3m").exists()


@pytest.mark.integration
def test_student_budget_is_in_the_reuse_key(bench_export, tmp_path):
    """--updates / --budget NAME=N were not in the key: a rerun with another budget got the old model."""
    work = tmp_path / "work"
    work.mkdir()
    first = bench_export.train_student(tmp_path / "m30k", work, "glu_3m", 300)
    other = bench_export.train_student(tmp_path / "m30k", work, "glu_3m", 500)
    assert [c[1] for c in bench_export.fake.calls] == [300, 500]
    assert other != first and _num_updates(other) == 500 and _num_updates(first) == 300


@pytest.mark.integration
def test_student_trained_otherwise_or_without_a_record_is_refused(bench_export, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    ckpt = bench_export.train_student(tmp_path / "m30k", work, "glu_3m", 300)
    marker = ckpt.parent / "trained.json"
    record = json.loads(marker.read_text())
    record["settings"]["command"] = [c.replace("0.003", "0.001") for c in record["settings"]["command"]]
    marker.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="trained with other settings"):
        bench_export.train_student(tmp_path / "m30k", work, "glu_3m", 300)
    marker.unlink()  # as left by the script before this check, or a run killed before it
    with pytest.raises(SystemExit, match="without trained.json"):
        bench_export.train_student(tmp_path / "m30k", work, "glu_3m", 300)
    assert len(bench_export.fake.calls) == 1


@pytest.fixture
def qat_ladder(monkeypatch, tiny_teacher):
    import fairseq_kd.export.evaluate as evaluate

    mod = _load("qat_ladder")
    fake = FakeTrain(tiny_teacher.checkpoint)
    monkeypatch.setattr(mod, "sh", fake)
    monkeypatch.setattr(sys.modules["bench_export"], "sh", fake)  # the base student's training
    evaluated = []

    def evaluate_export(ckpt, data_bin, ref, split, quantization, **kw):
        evaluated.append((ckpt, _num_updates(Path(ckpt)), quantization, split))
        return {"bleu": 1.0, "sent_per_s": 1.0, "quantization": quantization, "export_dir": "x"}

    monkeypatch.setattr(evaluate, "evaluate_export", evaluate_export)
    mod.fake, mod.evaluated = fake, evaluated
    return mod


def _run_ladder(mod, monkeypatch, tmp_path, more):
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["qat_ladder.py", "--prepared", str(tmp_path / "m30k"), "--work-dir",
                                      str(tmp_path / "work"), "--students", "glu_3m", "--splits", "valid",
                                      "--more-updates", str(more), "--json", str(out)])
    mod.main()
    return json.loads(out.read_text())


@pytest.mark.integration
def test_qat_ladder_more_updates_is_in_the_branch_and_row_keys(qat_ladder, monkeypatch, tmp_path):
    """Branches and rows were keyed without --more-updates: a rerun with 200 kept the 100-update branches and
    their rows (the new rows would have said updates_after_base 200)."""
    _run_ladder(qat_ladder, monkeypatch, tmp_path, 100)
    rows = _run_ladder(qat_ladder, monkeypatch, tmp_path, 200)
    assert sorted(r["updates_after_base"] for r in rows) == [100] * 4 + [200] * 4
    for r in rows:
        assert _num_updates(Path(r["checkpoint"])) == 300 + r["updates_after_base"]
    assert [budget for _, budget in qat_ladder.fake.calls] == [300, 400, 400, 500, 500]
    assert len({r["checkpoint"] for r in rows}) == 4  # the 100-update branches are kept beside the new ones
    # a third run has nothing to do
    n = len(qat_ladder.evaluated)
    assert _run_ladder(qat_ladder, monkeypatch, tmp_path, 200) == rows
    assert len(qat_ladder.evaluated) == n and len(qat_ladder.fake.calls) == 5


@pytest.mark.integration
def test_qat_ladder_killed_branch_is_trained_again(qat_ladder, monkeypatch, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    base = qat_ladder.train_student(tmp_path / "m30k", work, "glu_3m")
    qat_ladder.fake.stop_at = 320
    with pytest.raises(SystemExit):
        _run_ladder(qat_ladder, monkeypatch, tmp_path, 100)
    qat_ladder.fake.stop_at = None
    rows = _run_ladder(qat_ladder, monkeypatch, tmp_path, 100)
    assert {_num_updates(Path(r["checkpoint"])) for r in rows} == {400}
    assert _num_updates(base) == 300


def _fake_isa_run(exports):
    def run(cmd, env=None, stderr=False):
        cmd = [str(c) for c in cmd]
        tool = Path(cmd[0]).name
        if tool == "fairseq-kd-export":
            out = Path(cmd[2])
            out.mkdir(parents=True, exist_ok=True)
            model = Path(cmd[1]).read_bytes()
            (out / "model.bin").write_bytes(model)
            (out / "fairseq_kd_export.json").write_text(json.dumps({"files": {"model.bin": len(model)}}))
            exports.append((cmd[1], out.name))
            return ""
        if tool == "fairseq-kd-translate":
            Path(cmd[cmd.index("-o") + 1]).write_text("a\n")
            return json.dumps({"sent_per_s": 1.0, "seconds": 1.0}) + "\n"
        assert tool == "fairseq-kd-score", cmd
        return json.dumps({"bleu": {"score": 1.0, "signature": "s"}})
    return run


def test_int8_isa_exports_are_keyed_by_checkpoint_and_complete(monkeypatch, tmp_path):
    """Exports were reused by flavour name: another checkpoint in the same --work-dir got the first one's
    exports (and a cut directory with a model.bin was trusted)."""
    mod = _load("int8_isa")
    exports = []
    monkeypatch.setattr(mod, "run", _fake_isa_run(exports))
    data = tmp_path / "m30k"
    (data / "bin").mkdir(parents=True)
    for lang in ("de", "en"):
        (data / "bin" / f"dict.{lang}.txt").write_text("hund 1\nein 1\n")
    (data / "spm.model").write_bytes(b"spm")
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"checkpoint a")
    b.write_bytes(b"checkpoint b")

    def bench(ckpt):
        monkeypatch.setattr(sys, "argv", ["int8_isa.py", str(ckpt), "--data-bin", str(data / "bin"), "--raw",
                                          str(data / "raw"), "--splits", "valid", "--work-dir", str(tmp_path / "w"),
                                          "--json", str(tmp_path / "out.json")])
        mod.main()
        return list(exports)

    assert [e[0] for e in bench(a)] == [str(a)] * 3
    assert [e[0] for e in bench(b)] == [str(a)] * 3 + [str(b)] * 3  # b's own exports
    assert len({e[1] for e in exports}) == 6
    assert len(bench(a)) == 6  # a's exports reused
    first = tmp_path / "w" / exports[0][1] / "model.bin"
    first.write_bytes(b"cut")  # shorter than its metadata says
    assert bench(a)[-1] == exports[0] and len(exports) == 7
    # another sentencepiece model (or dictionary) is another export too
    (data / "spm.model").write_bytes(b"spm 2")
    assert len(bench(a)) == 10
