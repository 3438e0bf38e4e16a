"""fairseq-kd: knowledge distillation for NMT, loaded with ``--user-dir fairseq_kd``.

Importing the package (which fairseq does for ``--user-dir``) first installs the
checkpoint allowlist (torch >= 2.6 loads with ``weights_only=True``), then registers
every task, criterion and architecture found in the sub-packages.
"""
from fairseq_kd import checkpoint_safety  # noqa: F401  (must come first)

checkpoint_safety.install()

from fairseq_kd import tasks, criteria, models  # noqa: F401,E402

__version__ = "0.1.0"
