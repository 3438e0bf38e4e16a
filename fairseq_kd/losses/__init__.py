"""The loss maths of every fairseq-kd criterion, as pure functions.

* ``terms``: the one entry, ``ce_and_divergence`` (label-smoothed CE + T^2 * divergence; T and T^2
  are applied there), and ``KDLossSpec``, the shared loss options;
* ``divergences``: forward / reverse KL, generalized JSD, the top-k + tail view;
* ``basic``: KL from log-probabilities (full, top-k), re-tempering stored top-k probabilities;
* ``fused``: CE + NLL + KL straight from the logits, ``torch.compile``d (eager fallback);
* ``selection``: selective distillation masks and the cross-worker CE queue.
"""
from fairseq_kd.losses.terms import KDLossSpec, LossTerms, ce_and_divergence  # noqa: F401
