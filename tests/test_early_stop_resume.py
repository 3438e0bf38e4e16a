"""A resumed run stops where an uninterrupted one would: fairseq's early-stopping count is kept
in the checkpoint's task state (``tasks/_early_stop.py``)."""
from types import SimpleNamespace

from fairseq_cli import train as fairseq_train

from fairseq_kd.study.world import fresh_world
from fairseq_kd.tasks._early_stop import EarlyStopState
from tests import helpers


def cfg(patience, maximize=False):
    return SimpleNamespace(checkpoint=SimpleNamespace(patience=patience, maximize_best_checkpoint_metric=maximize))


def run(values, patience, maximize=False):
    return [fairseq_train.should_stop_early(cfg(patience, maximize), v) for v in values]


def test_restored_count_stops_where_the_uninterrupted_run_stops():
    curve = [5.0, 4.0, 4.5, 4.6, 4.2, 4.1]  # valid loss; best 4.0, then no improvement
    fresh_world()
    assert run(curve, patience=4) == [False, False, False, False, False, True]  # uninterrupted: stops at the 6th
    fresh_world()
    run(curve[:3], patience=4)
    saved = EarlyStopState().state_dict()
    assert saved == {"best": 4.0, "num_runs": 1}
    fresh_world()  # a new process: fairseq forgets
    assert run(curve[3:], patience=4) == [False, False, False]  # without the state: 4.6 becomes "best"
    fresh_world()
    EarlyStopState().load_state_dict(saved)
    assert run(curve[3:], patience=4) == [False, False, True]  # restored: the same stop
    fresh_world()
    EarlyStopState().load_state_dict({"best": None, "num_runs": 0})  # saved before any validation
    assert not hasattr(fairseq_train.should_stop_early, "best")
    fresh_world()


def test_bleu_curve_maximized():
    fresh_world()
    run([30.0, 31.0, 30.5], patience=2, maximize=True)
    saved = EarlyStopState().state_dict()
    fresh_world()
    EarlyStopState().load_state_dict(saved)
    assert run([30.9], patience=2, maximize=True) == [True]
    fresh_world()


def test_kd_translation_saves_and_restores_it_through_a_real_checkpoint(tiny_teacher, tmp_path):
    import torch

    fresh_world()
    save = tmp_path / "ckpt"
    last = helpers.train(tiny_teacher.data_bin, save, task="kd_translation", max_epoch=100,
                         extra=["--max-update", "6", "--validate-interval-updates", "2", "--save-interval-updates", "2",
                                "--patience", "50"])
    fn = fairseq_train.should_stop_early
    expected = {"best": float(fn.best), "num_runs": int(fn.num_runs)}
    assert torch.load(last, map_location="cpu", weights_only=False)["task_state"]["early_stop"] == expected
    fresh_world()  # the resumed process: the task of the run being trained restores it when training starts
    task, model, _ = helpers.build_components(tiny_teacher.data_bin, ["--save-dir", str(save)])
    assert not hasattr(fn, "best")
    task.begin_epoch(1, model)
    assert (fn.best, fn.num_runs) == (expected["best"], expected["num_runs"])
    fresh_world()  # a task built from a checkpoint (a teacher's) never touches the student's count
    from fairseq import checkpoint_utils

    checkpoint_utils.load_model_ensemble_and_task([str(last)])  # its task keeps the state as inert data
    assert not hasattr(fn, "best")
    fresh_world()
