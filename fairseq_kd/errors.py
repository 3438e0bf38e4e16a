"""Exception types the tools print as one line (no traceback): the message names the file and the fix.

``install_excepthook`` (done when ``fairseq_kd`` is imported, e.g. by ``fairseq-train --user-dir``)
turns the same errors into one line when they escape a program that does not catch them
itself: ``KDInputError`` exits 2, ``KDRunError`` and a full or read-only disk exit 1; every
other exception keeps Python's traceback.
"""
import errno
import os
import sys

DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


class KDInputError(ValueError):
    """Bad input from the user: the message names the file and says how to fix it (tools exit 2)."""


class KDRunError(RuntimeError):
    """A run that cannot produce a trustworthy result (e.g. too many failed sentences); tools exit 1."""


class KDDiskError(KDInputError):
    """A write failed because the disk is full or read-only: nothing was replaced (tools exit 2)."""


def is_disk_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in DISK_ERRNOS


def disk_message(err: OSError, path=None) -> str:
    """One line for a failed write: the file, the cause, the fix."""
    where = path or err.filename or "a file"
    fix = "write to a writable disk" if err.errno == errno.EROFS else "free space or write to another disk"
    return (f"cannot write {where}: {err.strerror or os.strerror(err.errno)} ({errno.errorcode.get(err.errno, err.errno)}); "
            f"{fix} and re-run (files already there were left as they were)")


def disk_error(err: OSError, path=None) -> KDDiskError:
    return KDDiskError(disk_message(err, path))


def one_line(exc: BaseException):
    """``(exit code, message)`` for the errors printed without a traceback, else None."""
    if isinstance(exc, KDInputError):
        return 2, str(exc)
    if isinstance(exc, KDRunError):
        return 1, str(exc)
    if is_disk_error(exc):
        return 1, disk_message(exc)
    return None


def _excepthook(exc_type, exc, tb, previous=None):
    found = one_line(exc) if exc is not None else None
    if found is None:
        return (previous or sys.__excepthook__)(exc_type, exc, tb)
    code, message = found
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c") else "fairseq-kd"
    print(f"{prog}: error: {message}", file=sys.stderr)
    import atexit

    atexit._run_exitfuncs()  # what a normal exit would run, then the exit code Python cannot give here
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def install_excepthook() -> None:
    """Print ``KDInputError`` / ``KDRunError`` / disk errors that nobody caught as one line (idempotent)."""
    current = sys.excepthook
    if getattr(current, "__fairseq_kd__", False):
        return

    def hook(exc_type, exc, tb):
        _excepthook(exc_type, exc, tb, current)

    hook.__fairseq_kd__ = True
    sys.excepthook = hook
