"""fairseq's early-stopping count, kept in the checkpoint so that a resumed run stops where an
uninterrupted one would.

``fairseq_cli.train.should_stop_early`` keeps the best validation value and the number of
validations without improvement as attributes of the function, which no checkpoint saves: after a
restart the first validation becomes the "best" and the count starts at 0. A run resumed after an
improvement-free stretch then trains up to ``--patience`` validations too long, and a resumed run
whose first validation is below the true best counts improvements over the wrong value (a 1.3M
student resumed twice ran 750 updates past the stop of the same run uninterrupted). The task
registers ``EarlyStopState`` (``CheckpointStateMixin.register_state``): it reads the two
attributes when a checkpoint is saved (right after the validation that updated them) and writes
them back when training resumes.
"""
from typing import Dict


def _stop_fn():
    from fairseq_cli import train

    return train.should_stop_early


class EarlyStopState:
    """``state_dict`` / ``load_state_dict`` of ``should_stop_early``'s ``best`` and ``num_runs``."""

    def state_dict(self) -> Dict:
        fn = _stop_fn()
        best = getattr(fn, "best", None)
        return {"best": None if best is None else float(best), "num_runs": int(getattr(fn, "num_runs", 0))}

    def load_state_dict(self, state: Dict) -> None:
        fn = _stop_fn()
        if state.get("best") is None:  # no validation before the checkpoint: nothing to restore
            return
        fn.best = float(state["best"])
        fn.num_runs = int(state.get("num_runs", 0))
