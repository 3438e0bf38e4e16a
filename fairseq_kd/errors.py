"""One exception type for bad user input, so tools can print it without a traceback."""


class KDInputError(ValueError):
    """Bad input from the user: the message names the file and says how to fix it."""
