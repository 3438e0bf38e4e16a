"""Concurrency: children die with the study, one run per output directory."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.reliability_helpers import LIGHT_IMPORT, REPO, alive as _alive


def _wait_for(cond, seconds=20.0):
    end = time.time() + seconds
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.integration
@pytest.mark.parametrize("entry", ["run_logged", "run_ranks"])
def test_kill9_of_the_study_kills_its_trainers(tmp_path, entry):
    """The study's real runner starts a long child (standing in for fairseq-train); kill -9 of
    the study process must take the child with it (it would otherwise keep writing the cell)."""
    pidfile, log = tmp_path / "child.pid", tmp_path / "cell.log"
    child = [sys.executable, "-c", f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
                                   "time.sleep(120)"]
    call = f"run_logged({child!r}, {str(log)!r})" if entry == "run_logged" else f"run_ranks([{child!r}], {str(log)!r})"
    code = LIGHT_IMPORT + f"from fairseq_kd.study.processes import run_logged, run_ranks; {call}"
    study = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: pidfile.exists() and pidfile.read_text()), study.stderr.read1().decode()
        trainer = int(pidfile.read_text())
        assert _alive(trainer)
        os.kill(study.pid, signal.SIGKILL)
        study.wait()
        assert _wait_for(lambda: not _alive(trainer), 10), f"trainer {trainer} outlived the killed study"
    finally:
        if study.poll() is None:
            study.kill()
        if pidfile.exists() and pidfile.read_text() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


@pytest.mark.unit
@pytest.mark.parametrize("module,argv", [
    ("fairseq_kd.cli.study", ["--data", "D", "-s", "de", "-t", "en", "--test-ref", "R", "--out-dir", "{out}"]),
    ("fairseq_kd.cli.distill", ["--data", "D", "--teacher", "T", "--output-dir", "{out}"]),
    ("fairseq_kd.cli.cache", ["D", "--teacher-path", "T", "--out-dir", "{out}"]),
])
def test_second_long_run_on_one_directory_is_refused_with_the_holders_pid(module, argv, tmp_path, capsys):
    import importlib

    from fairseq_kd.guard import DirLock

    out = tmp_path / "out"
    argv = [a.format(out=out) for a in argv]
    with DirLock(out, "first run"):
        try:
            rc = importlib.import_module(module).cli_main(argv)
        except SystemExit as e:
            rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and f"(pid {os.getpid()}" in err and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == [".fairseq-kd.lock"]  # nothing else written


@pytest.mark.integration
def test_second_prepare_run_on_one_out_dir_is_refused(tmp_path):
    """data_prep/*.sh lock --out-dir with flock(1) on the file fairseq_kd.guard.DirLock uses."""
    from fairseq_kd.guard import DirLock

    data = tmp_path / "m30k"
    data.mkdir()
    for name in ("train", "val", "test_2016_flickr"):
        for lang in ("de", "en"):
            (data / f"{name}.{lang}").write_text("ein Haus\n")
    out = tmp_path / "out"
    with DirLock(out, "first run"):
        proc = subprocess.run(["bash", str(REPO / "data_prep" / "prepare_multi30k.sh"), "--data-dir", str(data),
                               "--out-dir", str(out)], capture_output=True, text=True,
                              env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 2 and f"in use by another run (pid {os.getpid()}" in proc.stderr, proc.stderr[-500:]
    assert sorted(p.name for p in out.iterdir()) == [".fairseq-kd.lock"]
