"""Reading a path with bounded memory, and the atomic writer's temporary files (issue 17, items 0 and 5).

The reader reads exactly the file's size (``fstat``), refuses a file over the format's maximum or the
platform's largest buffer before allocating, and refuses a file that grows or shrinks while it is read.
The writer names its temporary ``.NAME.<pid>.<random>.tmp``; each write removes those of its own
target whose writer is gone, and two writers to one target each rename a complete file.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest

from adt.runtime.format import AdtError, AdtLimitError, AdtReadError, AdtWriter, read_adt, write_atomic
from adt.runtime.format import reader as R
from adt.runtime.format import writer as W

POSIX = os.name == "posix"


def _small(seed: int = 0, n: int = 300) -> bytes:
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    w.add_plain("x", np.random.default_rng(seed).integers(0, 16, n).astype(np.uint16), g)
    w.add_metadata("seed", str(seed))
    return w.to_bytes()


# -- reading -----------------------------------------------------------------------------------
def test_path_read_allocates_about_the_file_size(tmp_path):
    """The old reader asked for MAX_FILE_BYTES + 1 (5 GiB) for any file: under RLIMIT_AS that is a bare
    MemoryError (tests/runtime/test_memory_limits.py); here tracemalloc sees the request."""
    path = tmp_path / "s.adt"
    path.write_bytes(_small())
    read_adt(path)  # warm caches (imports, code tables) outside the measurement
    tracemalloc.start()
    try:
        read_adt(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"reading a {path.stat().st_size}-byte file peaked at {peak} bytes"


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.adt"
    with open(path, "wb") as fh:
        try:
            fh.truncate(R.MAX_FILE_BYTES + 1)   # sparse: no disk space used
        except OSError as exc:
            pytest.skip(f"no sparse files here ({exc})")

    def no_open(*a, **k):
        raise AssertionError("the reader opened a file it should have refused from its size")

    monkeypatch.setattr(R, "open", no_open, raising=False)
    with pytest.raises(AdtLimitError, match="larger than any valid .adt file"):
        read_adt(path)


def test_file_larger_than_the_platform_buffer_is_a_limit_error(tmp_path, monkeypatch):
    """On 32-bit ARM a 3 GiB file cannot be one bytes object: a typed error, not OverflowError."""
    path = tmp_path / "s.adt"
    data = _small()
    path.write_bytes(data)
    monkeypatch.setattr(R, "_MAX_BUFFER", len(data) - 1)
    with pytest.raises(AdtLimitError, match="more than this platform can hold"):
        read_adt(path)


def _fstat_then(action):
    """An os.fstat that changes the file right after its size was taken (the race, made certain)."""
    real = os.fstat

    def fstat(fd):
        st = real(fd)
        action(fd)
        return st
    return fstat


def test_file_that_grows_while_read_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "s.adt"
    path.write_bytes(_small())

    def grow(fd):
        with open(path, "ab") as fh:
            fh.write(b"\0" * 100)

    monkeypatch.setattr(R.os, "fstat", _fstat_then(grow))
    with pytest.raises(AdtReadError, match="changed size while being read"):
        read_adt(path)


def test_file_that_shrinks_while_read_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "s.adt"
    path.write_bytes(_small())
    monkeypatch.setattr(R.os, "fstat", _fstat_then(lambda fd: os.truncate(path, 20)))
    with pytest.raises(AdtReadError, match="changed size while being read"):
        read_adt(path)


def test_memory_error_while_reading_is_typed(tmp_path, monkeypatch):
    path = tmp_path / "s.adt"
    path.write_bytes(_small())
    real_open = open

    class NoMemory:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def fileno(self):
            return self.fh.fileno()

        def read(self, n=-1):
            raise MemoryError

    monkeypatch.setattr(R, "open", lambda p, mode: NoMemory(real_open(p, mode)), raising=False)
    with pytest.raises(AdtReadError, match="do not fit in memory"):
        read_adt(path)


def test_unreadable_paths_are_read_errors(tmp_path):
    for p in (tmp_path / "nope.adt", tmp_path):
        with pytest.raises(AdtReadError) as info:
            read_adt(p)
        assert isinstance(info.value, AdtError)


# -- writing: temporary files ------------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _temps(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


@pytest.mark.skipif(not POSIX, reason="stale temporaries are only removed on POSIX")
def test_stale_temporary_of_a_dead_writer_is_removed_and_others_are_left(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".m.adt.{dead}.abc_1234.tmp"
    stale.write_bytes(b"half a file")
    keep = [
        f".other.adt.{dead}.abc_1234.tmp",    # another target's
        ".m.adt.abc_1234.tmp",                 # no pid: the old naming, nothing says its writer is gone
        f".m.adt.{dead}.abc_1234.tmp.bak",     # not a temporary name
        f"m.adt.{dead}.abc_1234.tmp",          # not hidden
    ]
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
    write_atomic(tmp_path / "m.adt", b"new")
    assert not stale.exists()
    assert (tmp_path / "m.adt").read_bytes() == b"new"
    assert all((tmp_path / name).exists() for name in keep)


@pytest.mark.skipif(not POSIX, reason="stale temporaries are only removed on POSIX")
def test_temporary_of_a_live_writer_is_kept(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".m.adt.{sleeper.pid}.abc_1234.tmp"
        live.write_bytes(b"being written")
        write_atomic(tmp_path / "m.adt", b"new")
        assert live.read_bytes() == b"being written"
    finally:
        sleeper.kill()
        sleeper.wait()
    write_atomic(tmp_path / "m.adt", b"newer")   # its writer is gone now
    assert not live.exists()


@pytest.mark.skipif(getattr(W, "fcntl", None) is None, reason="no flock")
def test_temporary_held_by_a_lock_is_kept_even_if_its_pid_is_gone(tmp_path):
    """A writer in another PID namespace (a container sharing the folder) has a pid that means nothing
    here; its lock on the temporary still says it is alive."""
    held = tmp_path / f".m.adt.{_dead_pid()}.abc_1234.tmp"
    held.write_bytes(b"being written")
    with open(held, "rb") as fh:
        W.fcntl.flock(fh.fileno(), W.fcntl.LOCK_EX)
        write_atomic(tmp_path / "m.adt", b"new")
        assert held.exists()
    write_atomic(tmp_path / "m.adt", b"newer")
    assert not held.exists()


@pytest.mark.skipif(not POSIX, reason="stale temporaries are only removed on POSIX")
def test_a_killed_write_is_cleaned_up_by_the_next(tmp_path):
    """A child dies between writing its temporary and renaming it (as under kill -9): the target keeps
    its old bytes, one temporary is left, and the next write to the target removes it."""
    target = tmp_path / "m.adt"
    old = _small(0)
    target.write_bytes(old)
    code = textwrap.dedent(f"""
        import os
        from adt.runtime.format import writer
        os.replace = lambda *a: os._exit(9)     # die just before the rename
        writer.write_atomic({str(target)!r}, b"x" * 100000)
    """)
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 9
    left = _temps(tmp_path)
    assert len(left) == 1 and left[0].startswith(".m.adt.") and (tmp_path / left[0]).stat().st_size == 100000
    assert target.read_bytes() == old
    new = _small(1)
    write_atomic(target, new)
    assert _temps(tmp_path) == [] and read_adt(target).metadata == {"seed": "1"}


def test_two_threads_writing_one_target_leave_one_complete_file(tmp_path):
    target = tmp_path / "m.adt"
    files = [_small(seed, n=20000) for seed in range(4)]
    errors = []

    def writer(data):
        try:
            for _ in range(15):
                write_atomic(target, data)
                read_adt(target)            # every reader sees a whole file
        except BaseException as exc:        # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(d,)) for d in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_bytes() in files and _temps(tmp_path) == []


def test_two_processes_writing_one_target_leave_one_complete_file(tmp_path):
    target = tmp_path / "m.adt"
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from adt.runtime.format import AdtWriter, read_adt, write_atomic
        seed, target = int(sys.argv[1]), sys.argv[2]
        w = AdtWriter(); g = w.add_group(16, 1.0)
        w.add_plain("x", np.random.default_rng(seed).integers(0, 16, 200000).astype(np.uint16), g)
        w.add_metadata("seed", str(seed))
        data = w.to_bytes()
        for _ in range(25):
            write_atomic(target, data)
            read_adt(target)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(s), str(target)]) for s in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert read_adt(target).metadata["seed"] in ("1", "2") and _temps(tmp_path) == []


def test_without_flock_the_write_still_works(tmp_path, monkeypatch):
    """Where fcntl is missing (Windows) the file is closed before the rename, and nothing is locked."""
    monkeypatch.setattr(W, "fcntl", None)
    write_atomic(tmp_path / "m.adt", b"one")
    write_atomic(tmp_path / "m.adt", b"two")
    assert (tmp_path / "m.adt").read_bytes() == b"two" and os.listdir(tmp_path) == ["m.adt"]
