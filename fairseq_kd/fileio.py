"""The one home for shared file I/O: atomic writes and line-exact reading.

* **Atomic writes.** Every file a tool publishes is written to a temporary file in the
  same directory (``.NAME.PID.XXXXXXXX.tmp``), flushed and fsync'd, then ``os.replace``-d over
  its final name: a reader (or a re-run after ``kill -9``) sees the old file or the new one,
  never half of one. ``atomic_write_many`` writes several files so that all temporaries are
  complete before the first replace (parallel corpora stay aligned). A writer killed mid-write
  leaves its temporary (``TMP_NAME``) behind: ``guard.remove_stale_temporaries`` deletes those
  whose process is gone (resumable tools call it on the directories they hold).
* **Lines.** Text is split on ``\\n`` only: a lone ``\\r``, U+2028 or a form feed inside
  a sentence stays inside its line (``str.splitlines`` and text-mode universal newlines
  would break it and shift every following line). Input must be UTF-8; anything else
  is refused with a ``KDInputError`` naming the file and the fix; a leading byte-order mark
  (Notepad, Excel) is dropped, never kept as text of the first line. A path ending ``.gz`` is read
  through gzip (hypotheses kept in docs/results are committed compressed).

fairseq-generate's ``H-`` lines are parsed in ``fairseq_kd.hypotheses`` (re-exported here).
"""
import contextlib
import gzip
import json
import os
import re
import sys
import tempfile
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

from fairseq_kd import errors
from fairseq_kd.errors import KDInputError
from fairseq_kd.hypotheses import hypotheses_in_order, order_hypotheses, parse_hypotheses  # noqa: F401 (re-exported)

PathLike = Union[str, "os.PathLike[str]"]

UTF8_FIX = "re-encode it as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8)"


# ---------------------------------------------------------------- atomic writes


def make_dirs(folder: PathLike, what: str = "output directory") -> None:
    """``os.makedirs(folder, exist_ok=True)``, but a regular file in the way is one line naming it."""
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = os.fspath(folder)
        while blocker and not os.path.exists(blocker):
            blocker = os.path.dirname(blocker)
        raise KDInputError(f"{what} {os.fspath(folder)} cannot be created: {blocker} is a file, not a directory; "
                           f"choose another path (or move that file away)") from None


def _tmp_for(path: str) -> str:
    """A fresh temporary file next to ``path`` (same filesystem, so os.replace is atomic)."""
    folder = os.path.dirname(os.path.abspath(path))
    make_dirs(folder, f"the folder of {path}")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return tmp


TMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>[1-9][0-9]{0,8})\.[a-z0-9_]{8}\.tmp")  # _tmp_for's names


def _fsync_dir(folder: str) -> None:
    """Persist a rename (best effort: not every filesystem allows opening a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: Optional[str] = "utf-8", newline: Optional[str] = "\n"):
    """``with atomic_open(p) as f: f.write(...)``: ``p`` appears complete on success, untouched on error.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    path = os.fspath(path)
    tmp = None
    try:
        tmp = _tmp_for(path)
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as err:
        if errors.is_disk_error(err):  # full or read-only disk: one line; the old file stays
            raise errors.disk_error(err, path) from None
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8, newlines as given)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: PathLike, obj, indent: Optional[int] = 1, sort_keys: bool = True) -> None:
    """Write ``obj`` as JSON (with a final newline) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    """Copy ``src``'s bytes to ``dst`` atomically (``dst`` is the old file or the full copy)."""
    import shutil

    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def _write_lines(f, lines: Iterable[str], path: str) -> int:
    n = 0
    for line in lines:
        if "\n" in line:
            raise ValueError(f"line {n} written to {path} contains a newline")  # a bug, not user input
        f.write(line)
        f.write("\n")
        n += 1
    return n


def atomic_write_lines(path: PathLike, lines: Iterable[str]) -> int:
    """Write one ``\\n``-terminated line per item atomically; returns the number of lines."""
    with atomic_open(path, "w") as f:
        return _write_lines(f, lines, os.fspath(path))


def atomic_write_many(files: Dict[PathLike, Sequence[str]]) -> None:
    """Write several line files; every temporary is complete before the first replace."""
    tmps, path = [], None
    try:
        for path, lines in files.items():
            path = os.fspath(path)
            tmp = _tmp_for(path)
            tmps.append((tmp, path))
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                _write_lines(f, lines, path)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in tmps:
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
    except OSError as err:
        if errors.is_disk_error(err):
            raise errors.disk_error(err, path) from None
        raise
    finally:
        for tmp, _ in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)


# ---------------------------------------------------------------- reading lines


def split_lines(text: str) -> List[str]:
    """``text`` split on ``\\n`` only; a final newline does not start an empty line."""
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


def decode_utf8(data: bytes, name: str) -> str:
    """``data`` as UTF-8, or a KDInputError naming ``name``, the byte offset and the fix."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise KDInputError(f"{name}: not valid UTF-8 ({e.reason} at byte {e.start}); {UTF8_FIX}") from None


BOM = "\ufeff"  # a UTF-8 byte-order mark (Notepad, Excel): never part of the first line's text


def check_file(path: PathLike, missing: Optional[str] = None, what: str = "file") -> None:
    """``KDInputError`` unless ``path`` is a file: a directory is called one (not "no such file"); a
    missing path gets ``missing`` (default: names ``what``)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise KDInputError(f"{path} is a directory where a file ({what}) is expected: pass the file itself "
                           f"(one of the files in it?)")
    if not os.path.isfile(path):
        raise KDInputError(missing or f"{path}: no such file ({what} not found); pass an existing file")


def read_text(path: PathLike, what: str = "file") -> str:
    """Whole UTF-8 file (a leading BOM dropped; ``.gz`` decompressed); ``-`` reads stdin. Missing file / bad
    encoding / truncated gzip -> KDInputError."""
    path = os.fspath(path)
    if path == "-":
        text = decode_utf8(sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode(),
                           "<stdin>")
    else:
        check_file(path, what=what)
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as e:
                raise KDInputError(f"{path}: not a complete gzip file ({e}); restore it (git checkout -- {path}) "
                                   f"or pass the uncompressed file") from None
        text = decode_utf8(data, path)
    return text[1:] if text.startswith(BOM) else text


def read_lines(path: PathLike, what: str = "file") -> List[str]:
    """Lines of a UTF-8 file (``-`` = stdin) split on ``\\n`` only, without the newline."""
    return split_lines(read_text(path, what))


def iter_lines(path: PathLike, what: str = "file") -> Iterator[str]:
    """Streaming ``read_lines`` for large files and stdin (``-``): same splitting and errors."""
    path = os.fspath(path)
    if path == "-":
        if not hasattr(sys.stdin, "buffer"):  # a text stream (tests): already decoded
            text = sys.stdin.read()
            yield from split_lines(text[1:] if text.startswith(BOM) else text)
            return
        yield from _decoded(sys.stdin.buffer, "<stdin>")
        return
    check_file(path, what=what)
    with open(path, "rb") as f:
        yield from _decoded(f, path)


def _decoded(binary, name: str) -> Iterator[str]:
    offset = 0
    for raw in binary:  # binary iteration splits on b"\n" only
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise KDInputError(f"{name}: not valid UTF-8 ({e.reason} at byte {offset + e.start}); {UTF8_FIX}") from None
        if offset == 0 and line.startswith(BOM):
            line = line[1:]
        offset += len(raw)
        yield line[:-1] if line.endswith("\n") else line


def count_lines(path: PathLike) -> int:
    """Number of lines as ``read_lines`` sees them (a last line without newline counts)."""
    path = os.fspath(path)
    check_file(path, f"{path}: file not found; check the path")
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")
