"""One cell, one world: reset the process-wide state that fairseq keeps between runs.

Run in one Python process (``fairseq-kd-study --in-process``), fairseq's tools share
module-level state that a new process would not have:

* ``fairseq.checkpoint_utils.save_checkpoint.best``: the best validation loss so far. Left
  over from the previous cell, it becomes the next cell's ``best_loss`` and decides whether
  ``checkpoint_best.pt`` is written (it was not, when the previous cell had a lower loss);
* ``fairseq_cli.train.should_stop_early.best`` / ``.num_runs``: the early-stopping (``--patience``)
  state; left over, the next cell compares its first validation with the previous cell's best
  and may stop at once;
* ``fairseq.logging.metrics`` aggregators and meters (``fairseq_cli.train.main`` resets them,
  ``fairseq-generate`` does not);
* the random number generators (``random``, NumPy's and torch's global generators).

``fresh_world()`` puts each back as a new process has it (torch's default seed) before
every in-process tool call. torch's thread count is the caller's choice; a tool that
changes it (``fairseq-kd-distill --threads``) gets it restored by ``kept_threads()``.
"""
import contextlib
import random

import numpy as np
import torch

TORCH_DEFAULT_SEED = 67280421310721  # torch.initial_seed() of a new process


def fresh_world() -> None:
    """Reset fairseq's module-level state and the RNGs."""
    from fairseq import checkpoint_utils
    from fairseq.logging import metrics

    if hasattr(checkpoint_utils.save_checkpoint, "best"):
        del checkpoint_utils.save_checkpoint.best
    from fairseq_cli import train as fairseq_train

    for attr in ("best", "num_runs"):
        if hasattr(fairseq_train.should_stop_early, attr):
            delattr(fairseq_train.should_stop_early, attr)
    metrics.reset()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(TORCH_DEFAULT_SEED)


@contextlib.contextmanager
def kept_threads():
    """torch's intra-op thread count as it was, whatever the body sets."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
