"""Guards shared by every tool that writes: output paths, directory locks, stale temporaries, children
that die with us.

* ``check_paths(inputs, outputs)``: before anything is written, refuse an output that
  equals, contains or lies inside an input, under any spelling (relative, ``..``,
  symlinks, hard links), and two outputs naming one file.
* ``DirLock(folder)``: one run per output directory. The lock is an ``flock`` on
  ``folder/.fairseq-kd.lock``, which holds the holder's pid; the kernel releases it when
  the holder dies (even by ``kill -9``), so a stale lock is simply taken over, and a second
  live run is refused with the holder's pid.
* ``remove_stale_temporaries(folder)``: what writers killed mid-write left in a directory this run
  holds: ``fileio``'s temporaries whose process is gone (a live writer's stay).
* ``die_with_parent``: ``preexec_fn`` for subprocesses (e.g. ``fairseq-train``) that
  kills the child when this process dies, however it dies (Linux ``PR_SET_PDEATHSIG``).
"""
import ctypes
import errno
import fcntl
import os
import signal
import subprocess
import sys
from typing import List, Mapping, Optional, Sequence, Tuple, Union

from fairseq_kd.errors import KDInputError

Paths = Union[None, str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]
STD_STREAM = "-"
LOCK_NAME = ".fairseq-kd.lock"


class KDLockedError(KDInputError):
    """Another live run holds the lock on this output directory."""


# ---------------------------------------------------------------- output-path guard


def resolve(path) -> str:
    """Absolute path with ``~``, ``..`` and every symlink (also of missing leaves' parents) resolved."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _items(named: Mapping[str, Paths]) -> List[Tuple[str, str]]:
    out = []
    for name, value in named.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        for v in values:
            if v is None or os.fspath(v) in ("", STD_STREAM, "/dev/null", "/dev/stdout", "/dev/stderr"):
                continue
            out.append((name, os.fspath(v)))
    return out


def _same(a: str, b: str) -> bool:
    """Same file by resolved name, or by inode (hard links, case-insensitive filesystems)."""
    if resolve(a) == resolve(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: str, parent: str) -> bool:
    """``child`` lies strictly inside directory ``parent`` (both resolved)."""
    c, p = resolve(child), resolve(parent)
    if c == p:
        return False
    try:
        return os.path.commonpath([c, p]) == p
    except ValueError:  # different drives
        return False


def path_conflicts(inputs: Mapping[str, Paths], outputs: Mapping[str, Paths]) -> List[str]:
    """Human-readable conflicts (empty when the outputs are safe)."""
    ins, outs = _items(inputs), _items(outputs)
    problems = []
    for oname, opath in outs:
        for iname, ipath in ins:
            if _same(opath, ipath):
                problems.append(f"{oname} {opath} is the input {iname} {ipath}")
            elif _inside(ipath, opath):
                problems.append(f"{oname} {opath} contains the input {iname} {ipath}")
            elif _inside(opath, ipath):
                problems.append(f"{oname} {opath} lies inside the input {iname} {ipath}")
    for k, (aname, apath) in enumerate(outs):
        for bname, bpath in outs[k + 1:]:
            if _same(apath, bpath):
                problems.append(f"{aname} {apath} and {bname} {bpath} name the same file")
    return problems


def check_paths(inputs: Mapping[str, Paths], outputs: Mapping[str, Paths], tool: str = "") -> None:
    """Raise ``KDInputError`` (before anything is written) if an output could overwrite an input.

    ``inputs`` / ``outputs`` map an option name (``"--data"``) to a path, a list of paths or
    None; ``-`` (stdin/stdout) is ignored."""
    problems = path_conflicts(inputs, outputs)
    if problems:
        who = f"{tool}: " if tool else ""
        raise KDInputError(f"{who}refusing to write: {'; '.join(problems)} (paths resolved through "
                           f"symlinks and '..'). Writing there could destroy the input; choose an output "
                           f"path outside every input.")


CHECKPOINT_PATH_KEYS = ("data", "teacher_path", "teacher_data", "teacher_cache", "spm_model")


def named_by_checkpoint(cfg, label: str = "checkpoint") -> dict:
    """Every path a checkpoint's config names (its data dirs, teacher files, cache): inputs for
    ``check_paths``, so that no output can replace what the checkpoint was made from.

    ``cfg``: a loaded checkpoint (dict with ``cfg`` or ``args``), its ``cfg``, or its task config."""
    def get(obj, key):
        return obj.get(key) if hasattr(obj, "get") and not hasattr(obj, key) else getattr(obj, key, None)

    if isinstance(cfg, Mapping) and ("cfg" in cfg or "args" in cfg):
        cfg = cfg.get("cfg") or cfg.get("args")
    task = get(cfg, "task") if cfg is not None else None
    task = task if task is not None else cfg
    named = {}
    for key in CHECKPOINT_PATH_KEYS:
        value = get(task, key) if task is not None else None
        if isinstance(value, str) and value:
            named[f"{label}'s {key}"] = [v for v in value.split(os.pathsep) if v]
    return named


# ---------------------------------------------------------------- directory lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


class DirLock:
    """Exclusive lock on an output directory for the lifetime of a run (context manager).

    ``DirLock(folder, tool)`` creates ``folder`` if needed. A second holder, in this or
    another process, gets ``KDLockedError`` naming the holder's pid and the lock file."""

    def __init__(self, folder, tool: str = "fairseq-kd"):
        self.folder, self.tool = os.fspath(folder), tool
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.fd: Optional[int] = None

    def holder(self) -> Optional[int]:
        """pid recorded in the lock file (None if empty or unreadable)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def acquire(self) -> "DirLock":
        from fairseq_kd.fileio import make_dirs

        make_dirs(self.folder)  # a regular file in the way: one line, not a traceback
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid = self.holder()
            alive = "" if pid is None or _pid_alive(pid) else " (not alive here: another machine?)"
            raise KDLockedError(
                f"{self.folder} is in use by another {self.tool} run (pid {pid}{alive}, lock {self.path}); "
                f"wait for it to finish or stop it, or choose another output directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.tool}\n".encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # the file stays: unlinking it would race with a waiting run
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_stale_temporaries(folder) -> List[str]:
    """Delete the temporaries of atomic writes killed midway in ``folder`` (not its subfolders): only the
    names ``fileio`` gives them (``fileio.TMP_NAME``), and only when the process named in them is gone.
    For a directory this run holds (``DirLock``); returns the names removed."""
    from fairseq_kd.fileio import TMP_NAME

    removed: List[str] = []
    if not os.path.isdir(folder):
        return removed
    with os.scandir(folder) as entries:
        for entry in entries:
            m = TMP_NAME.fullmatch(entry.name)
            if m and entry.is_file(follow_symlinks=False) and not _pid_alive(int(m["pid"])):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed.append(entry.name)
    return removed


# ---------------------------------------------------------------- children die with their parent

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL):
    """A ``preexec_fn``: the child gets ``sig`` when the process that started it dies.

    On Linux this is ``prctl(PR_SET_PDEATHSIG)`` (fires even when the parent is killed with
    ``kill -9``); elsewhere it is a no-op (children are then stopped by ``terminate_group``)."""
    parent = os.getpid()

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return preexec


def popen_child(cmd: Sequence[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` whose child dies with this process (and its own process group).

    Call it from the main thread: Linux sends the parent-death signal when the *thread*
    that forked the child exits."""
    return subprocess.Popen(list(cmd), preexec_fn=die_with_parent(), **kwargs)


def run_child(cmd: Sequence[str], **kwargs) -> int:
    """Run ``cmd`` to completion as a ``popen_child``; on any exception here (Ctrl-C, ...) kill it."""
    proc = popen_child(cmd, **kwargs)
    try:
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
