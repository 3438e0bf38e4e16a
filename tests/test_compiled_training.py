"""The compiled loss route in a real training run: fairseq-train (in process) of a word_kd student at
T = 2 with FAIRSEQ_KD_COMPILE=1 runs fairseq_kd.losses.fused's torch.compile'd kernels (no eager
fallback) and gives the losses, update by update, of the same run on the eager route
(FAIRSEQ_KD_COMPILE=0, which the rest of the suite uses: tests/conftest.py).

Same formula, other kernels: the losses agree to float32 rounding (rtol 1e-5, as the kernels'
own test in tests/test_fused.py), not bit for bit."""
import pytest
import torch

from tests import helpers


def train_losses(tiny_teacher, save_dir, monkeypatch, mode):
    """Per-update training losses (the value fairseq's trainer backpropagates) of a 6-update run."""
    from fairseq_kd.tasks.kd_translation import KDTranslationTask

    monkeypatch.setenv("FAIRSEQ_KD_COMPILE", mode)
    losses, real = [], KDTranslationTask.train_step

    def recording(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        out = real(self, sample, model, criterion, optimizer, update_num, ignore_grad)
        losses.append(float(out[0]))
        return out

    monkeypatch.setattr(KDTranslationTask, "train_step", recording)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        helpers.train(tiny_teacher.data_bin, save_dir, task="kd_translation", max_epoch=3, extra=[
            "--criterion", "word_kd", "--teacher-path", str(tiny_teacher.checkpoint), "--kd-alpha", "0.5",
            "--kd-temperature", "2", "--label-smoothing", "0.1", "--max-update", "6"])
    finally:
        torch.set_num_threads(threads)
        monkeypatch.setattr(KDTranslationTask, "train_step", real)
    return losses


@pytest.mark.integration
def test_compiled_route_training_equals_eager_route(tiny_teacher, tmp_path, monkeypatch):
    from fairseq_kd.losses import fused

    if not hasattr(torch, "compile"):
        pytest.skip("this torch has no torch.compile")
    if fused.blank_link_dir():  # tests/test_repo_path_with_space.py
        pytest.skip(f"no CPU compilation under a path with a blank: {fused.blank_link_dir()}")
    calls, real_fn = [], fused._fn
    monkeypatch.setattr(fused, "_fn", lambda name: calls.append(name) or real_fn(name))
    monkeypatch.setattr(fused, "_FAILED", set())
    eager = train_losses(tiny_teacher, tmp_path / "eager", monkeypatch, "0")
    assert calls == []  # the eager route never reaches the kernels
    compiled = train_losses(tiny_teacher, tmp_path / "compiled", monkeypatch, "1")
    assert calls and not fused._FAILED, "torch.compile failed: the eager fallback ran instead"
    assert set(calls) <= set(fused._COMPILED)  # every kernel called was a compiled one
    assert len(eager) == len(compiled) == 6
    assert compiled == pytest.approx(eager, rel=1e-5)
    assert len(set(eager)) == 6  # the student trained: every update has its own loss
