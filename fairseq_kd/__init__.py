"""fairseq-kd: knowledge distillation for NMT, loaded with ``--user-dir fairseq_kd``.

Importing the package (which fairseq does for ``--user-dir``) first installs the
checkpoint allowlist (torch >= 2.6 loads with ``weights_only=True``), then registers
every task, criterion and architecture found in the sub-packages. Errors meant for the
user (``KDInputError``, a full disk) that escape a program, ``fairseq-train`` included, are
printed as one line (``errors.install_excepthook``).
"""
from fairseq_kd import checkpoint_safety  # noqa: F401  (must come first)

checkpoint_safety.install()

from fairseq_kd import errors  # noqa: E402

errors.install_excepthook()  # KDInputError / KDRunError / a full disk: one line, not a traceback

from fairseq_kd import tasks, criteria, models  # noqa: F401,E402

__version__ = "0.1.0"
