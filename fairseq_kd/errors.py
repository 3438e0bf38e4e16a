"""Exception types the tools print as one line (no traceback): the message names the file and the fix."""


class KDInputError(ValueError):
    """Bad input from the user: the message names the file and says how to fix it (tools exit 2)."""


class KDRunError(RuntimeError):
    """A run that cannot produce a trustworthy result (e.g. too many failed sentences); tools exit 1."""
