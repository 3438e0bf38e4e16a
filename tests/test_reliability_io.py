"""fileio / fingerprint / guard: the shared reliability modules (unit tests, no fairseq)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from fairseq_kd import fileio, fingerprint, guard, hypotheses
from fairseq_kd.errors import KDInputError
from tests.reliability_helpers import LIGHT_IMPORT, alive as _alive, killed_atomic_write


pytestmark = pytest.mark.unit


# ---------------------------------------------------------------- fileio


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text("old\n")
    with pytest.raises(RuntimeError):
        with fileio.atomic_open(p) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert p.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.txt"]  # no temporary left behind


def test_atomic_writes_text_bytes_json_lines(tmp_path):
    fileio.atomic_write_text(tmp_path / "a", "x\ny")
    fileio.atomic_write_bytes(tmp_path / "b", b"\x00\xff")
    fileio.atomic_write_json(tmp_path / "c", {"b": 1, "a": 2})
    assert fileio.atomic_write_lines(tmp_path / "sub" / "d", ["a\rb", "c"]) == 2
    assert (tmp_path / "a").read_text() == "x\ny"
    assert (tmp_path / "b").read_bytes() == b"\x00\xff"
    assert (tmp_path / "c").read_text() == '{\n "a": 2,\n "b": 1\n}\n'
    assert (tmp_path / "sub" / "d").read_bytes() == b"a\rb\nc\n"
    with pytest.raises(ValueError):
        fileio.atomic_write_lines(tmp_path / "e", ["a\nb"])
    assert not (tmp_path / "e").exists()


def test_atomic_write_many_all_or_nothing(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("old a\n")
    with pytest.raises(ValueError):
        fileio.atomic_write_many({a: ["new"], b: ["bad\nline"]})
    assert a.read_text() == "old a\n" and not b.exists()
    fileio.atomic_write_many({a: ["1", "2"], b: ["3", "4"]})
    assert a.read_text() == "1\n2\n" and b.read_text() == "3\n4\n"


@pytest.mark.parametrize("text,lines", [
    ("", []), ("a", ["a"]), ("a\n", ["a"]), ("a\n\n", ["a", ""]), ("a\rb\nc", ["a\rb", "c"]),
    ("x\u2028y\x0cz\x85\n", ["x\u2028y\x0cz\x85"]), ("a\r\nb\n", ["a\r", "b"]),
])
def test_lines_split_on_newline_only(tmp_path, text, lines):
    p = tmp_path / "t"
    p.write_bytes(text.encode("utf-8"))
    assert fileio.read_lines(p) == lines
    assert list(fileio.iter_lines(p)) == lines
    assert fileio.count_lines(p) == len(lines)


def test_non_utf8_and_missing_are_refused(tmp_path):
    p = tmp_path / "latin.de"
    p.write_bytes("ok\nSch\xf6n\n".encode("latin-1"))
    for fn in (fileio.read_lines, lambda x: list(fileio.iter_lines(x))):
        with pytest.raises(KDInputError, match=r"latin\.de: not valid UTF-8 .*at byte 6.*iconv"):
            fn(p)
    with pytest.raises(KDInputError, match="nope: no such file"):
        fileio.read_lines(tmp_path / "nope")


def test_parse_hypotheses():
    text = "S-1\tb\nH-1\t-0.5\tx\ry\nH-0\t-0.1\tfirst\nH-0\t-0.9\tsecond\nD-0\t-0.1\tfirst\nH-2\t-1.0\n"
    assert hypotheses.parse_hypotheses(text) == {0: "first", 1: "x\ry", 2: ""}
    assert hypotheses.hypotheses_in_order(text) == ["first", "x\ry", ""]
    with pytest.raises(KDInputError, match="ids 0..3 .*1 are missing"):
        hypotheses.hypotheses_in_order(text, n=4)
    with pytest.raises(KDInputError, match="line 2 is not a fairseq-generate hypothesis"):
        hypotheses.parse_hypotheses(["H-0\t-1\ta", "H-1x\t-1\tb"], source="gen.log")
    for name in ("parse_hypotheses", "order_hypotheses", "hypotheses_in_order"):  # still importable from fileio
        assert getattr(fileio, name) is getattr(hypotheses, name)


# ---------------------------------------------------------------- fingerprint


def test_file_fingerprint_sees_content_not_name(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"abc" * 1000)
    b.write_bytes(b"abc" * 1000)
    assert fingerprint.file_sha256(str(a)) == fingerprint.file_sha256(str(b))
    before = fingerprint.files_fingerprint([str(a)])
    time.sleep(0.01)
    a.write_bytes(b"abd" * 1000)  # same size, new content: the memo must not hide it
    assert fingerprint.files_fingerprint([str(a)]) != before
    empty = tmp_path / "e"
    empty.write_bytes(b"")
    assert fingerprint.file_sha256(str(empty)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_dictionary_fingerprint_is_order_sensitive():
    class D:
        def __init__(self, symbols):
            self.symbols = symbols

    assert fingerprint.dictionary_fingerprint(D(["a", "b"])) != fingerprint.dictionary_fingerprint(D(["b", "a"]))
    assert fingerprint.dictionary_fingerprint(D(["a", "b"])) == fingerprint.dictionary_fingerprint(D(["a", "b"]))


def test_dataset_fingerprint_sees_tokens_behind_wrappers(tmp_path):
    class Mem:  # an in-memory dataset: hashed token by token
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    class Wrap:
        def __init__(self, dataset):
            self.dataset = dataset

    class Pair:
        def __init__(self, src, tgt):
            self.src, self.tgt = src, tgt

        def __len__(self):
            return len(self.src)

    same_lengths = fingerprint.dataset_fingerprint(Pair(Mem([[1, 2]]), Mem([[3, 4]])))
    assert same_lengths != fingerprint.dataset_fingerprint(Pair(Mem([[1, 2]]), Mem([[4, 3]])))

    prefix = tmp_path / "train.de-en.en"
    for ext, data in ((".bin", b"1234"), (".idx", b"ix")):
        (tmp_path / f"train.de-en.en{ext}").write_bytes(data)
    disk = Mem([[0]])
    disk._path = str(prefix)
    fp = fingerprint.indexed_fingerprint(Wrap(disk))
    assert fp == fingerprint.indexed_fingerprint(Wrap(disk))
    (tmp_path / "train.de-en.en.bin").write_bytes(b"1243")
    assert fingerprint.indexed_fingerprint(Wrap(disk)) != fp


# ---------------------------------------------------------------- guard


def _spellings(tmp_path):
    """(input, output) pairs naming one file or an input inside an output, spelled differently."""
    data = tmp_path / "exp" / "bin"
    data.mkdir(parents=True)
    (data / "train.en").write_text("x\n")
    (tmp_path / "link").symlink_to(tmp_path / "exp")
    os.link(data / "train.en", tmp_path / "hard.en")
    return [
        (str(data / "train.en"), str(data / "train.en")),
        (str(data / "train.en"), str(data / ".." / "bin" / "train.en")),
        (str(data / "train.en"), str(tmp_path / "link" / "bin" / "train.en")),
        (str(data / "train.en"), str(tmp_path / "hard.en")),
        (str(data), str(tmp_path / "exp")),  # output dir contains the input
        (str(data), str(tmp_path / "link")),
        (str(data), str(data / "distilled")),  # output inside the input dir
        (str(tmp_path / "link" / "bin"), str(data / "x" / "y")),
    ]


def test_guard_refuses_every_spelling(tmp_path, monkeypatch):
    for inp, out in _spellings(tmp_path):
        with pytest.raises(KDInputError, match="refusing to write"):
            guard.check_paths({"--in": inp}, {"--out": out}, "tool")
    monkeypatch.chdir(tmp_path / "exp" / "bin")
    with pytest.raises(KDInputError, match="refusing to write"):
        guard.check_paths({"--in": "train.en"}, {"--out": str(tmp_path / "exp" / "bin" / "train.en")})
    with pytest.raises(KDInputError, match="name the same file"):
        guard.check_paths({}, {"-o": "a.txt", "--out2": "./a.txt"})
    # safe layouts pass: siblings, a shared parent, stdio
    guard.check_paths({"--data": str(tmp_path / "exp" / "bin")},
                      {"--out": str(tmp_path / "exp" / "distilled"), "-o": "-", "--x": None},
                      "tool")
    guard.check_paths({"-i": "-"}, {"-o": "-"})


def test_dir_lock_refuses_second_holder_and_takes_over_stale(tmp_path):
    with guard.DirLock(tmp_path / "out", "fairseq-kd-cache") as lock:
        assert lock.holder() == os.getpid()
        with pytest.raises(guard.KDLockedError, match=rf"pid {os.getpid()}.*\.fairseq-kd\.lock"):
            guard.DirLock(tmp_path / "out", "fairseq-kd-cache").acquire()
    with guard.DirLock(tmp_path / "out"):  # released: free again
        pass
    # a holder killed with SIGKILL leaves a stale pid behind: taken over
    code = (LIGHT_IMPORT + "import sys,time; from fairseq_kd.guard import DirLock; DirLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(guard.KDLockedError, match=f"pid {proc.pid}"):
            guard.DirLock(tmp_path / "out").acquire()
    finally:
        proc.kill()
        proc.wait()
    with guard.DirLock(tmp_path / "out") as lock:
        assert lock.holder() == os.getpid()


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old\n")
    stale = killed_atomic_write(out)  # a writer SIGKILLed between its write and its replace
    assert stale.read_text() == "half a file" and out.read_text() == "old\n"
    assert fileio.TMP_NAME.fullmatch(stale.name)["name"] == "out.txt"
    for other in ("notes.tmp", ".out.txt.abcdefgh.tmp", ".out.txt.12.tmp"):  # no name fileio gives
        (tmp_path / other).write_text("not ours")
    with fileio.atomic_open(tmp_path / "live.txt") as f:  # a live writer's temporary (this process): kept
        f.write("x")
        assert guard.remove_stale_temporaries(tmp_path) == [stale.name]
        assert len(list(tmp_path.glob(f".live.txt.{os.getpid()}.*.tmp"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.txt.12.tmp", ".out.txt.abcdefgh.tmp", "live.txt",
                                                           "notes.tmp", "out.txt"]
    assert out.read_text() == "old\n" and guard.remove_stale_temporaries(tmp_path / "missing") == []


def test_child_dies_with_parent(tmp_path):
    """kill -9 of a parent that started a child through guard.popen_child kills the child too."""
    pidfile = tmp_path / "child.pid"
    code = (LIGHT_IMPORT + "import sys; from fairseq_kd.guard import popen_child; "
            "p = popen_child([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); p.wait()")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text():
                break
            time.sleep(0.05)
        child = int(pidfile.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        for _ in range(100):
            if not _alive(child):
                break
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_iter_lines_reads_stdin_bytes_split_on_newline_only(monkeypatch):
    import io

    class Stdin:
        def __init__(self, data):
            self.buffer = io.BytesIO(data)

    monkeypatch.setattr(sys, "stdin", Stdin("a\rb\nc".encode("utf-8")))
    assert list(fileio.iter_lines("-")) == ["a\rb", "c"]
    monkeypatch.setattr(sys, "stdin", Stdin(b"ok\n\xf6\n"))
    with pytest.raises(KDInputError, match="<stdin>: not valid UTF-8 .*at byte 3"):
        list(fileio.iter_lines("-"))
