"""Per-update cross-worker state of criteria, kept in the checkpoint: ``CheckpointStateMixin`` gives a
fairseq task ``register_update_hook`` (``fn()`` once per optimizer step on every worker, e.g. the
global selection queue's all-gather) and ``register_state`` (an object's ``state_dict()`` in the
checkpoint's task state, restored when training resumes). ``kd_translation`` mixes it in.
"""
import logging
import os

logger = logging.getLogger(__name__)


class CheckpointStateMixin:
    """Update hooks and checkpointed state for a ``FairseqTask`` (list it before the task class)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._update_hooks = []  # called once per optimizer step on every worker
        self._stateful = {}  # name -> object with state_dict/load_state_dict, kept in the checkpoint
        self._restored = None  # task_state read back from the checkpoint training resumed from

    def optimizer_step(self, optimizer, model, update_num):
        for hook in self._update_hooks:  # e.g. the global selection queue all-gathers this update's values
            hook()
        super().optimizer_step(optimizer, model, update_num)

    def register_update_hook(self, fn) -> None:
        """``fn()`` runs once per update on every worker (before the optimizer step)."""
        self._update_hooks.append(fn)

    def register_state(self, name: str, obj) -> None:
        """Keep ``obj.state_dict()`` in the checkpoint's task state; restored on resume."""
        self._stateful[name] = obj
        state = self._restored_state().get(name)
        if state is not None:
            obj.load_state_dict(state)
            logger.info("restored %s from the checkpoint", name)

    def state_dict(self):
        state = dict(super().state_dict())
        state.update({name: obj.state_dict() for name, obj in self._stateful.items()})
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        for name in [k for k in state_dict if k in self._stateful]:
            self._stateful[name].load_state_dict(state_dict.pop(name))
        super().load_state_dict(state_dict)

    def _restored_state(self):
        """The task state of the checkpoint fairseq-train resumes from (its own path rule).

        fairseq's trainer restores model, optimizer and criterion parameters but not the
        task state, so the task reads it back itself (memory-mapped, tensors only).
        """
        if self._restored is None:
            self._restored = {}
            restore = str(getattr(self.cfg, "restore_file", None) or "")
            save_dir = getattr(self.cfg, "save_dir", None)
            suffix = str(getattr(self.cfg, "checkpoint_suffix", "") or "")
            if restore == "checkpoint_last.pt" and save_dir:
                path = os.path.join(str(save_dir), f"checkpoint_last{suffix}.pt")
            else:
                path = restore.replace(".pt", suffix + ".pt") if restore else ""
            if path and os.path.isfile(path):
                import torch

                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                self._restored = dict(state.get("task_state") or {})
        return self._restored
