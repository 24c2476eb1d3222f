"""Write-behind of the raw CSV files (tsrmon.rawlog.writebehind, DATA.WRITE_BEHIND_MB),
and appends through ``os.writev``.

Real files in ``tmp_path``; the page cache is asked with ``mincore``.
"""

import ctypes
import errno
import mmap
import os
import sys

import numpy as np
import pytest
import pytest_twisted
from twisted.logger import formatEvent

from tests.rawlog.test_rawcsv import Harness, rows
from tests.rawlog.test_rawcsv_workers import needs_shared_memory, process_harness
from tsrmon.config import ConfigError, build_config
from tsrmon.rawlog import writebehind
from tsrmon.rawlog.files import CSVFiles

pytestmark = pytest.mark.timeout(60)
linux_only = pytest.mark.skipif(not writebehind.supported(), reason="sync_file_range is Linux only")

KB = 1024
T0 = 1_795_000_000.0  # 2026-11-18, any day will do


def files(tmp_path, step):
    return CSVFiles(str(tmp_path / "data"), "UTC", "hms", write_behind=step)


def batch(rng, n, t):
    values = rng.normal(0, 0.3, n)
    return {("M", "s"): [(t, values.tolist())]}, values


def csv_path(tmp_path, t=T0):
    import datetime
    day = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y%m%d")
    return tmp_path / "data" / "M" / f"{day}_s.csv"


def resident_pages(path, start, end):
    """How many whole pages of ``[start, end)`` of ``path`` are in the page cache."""
    page = mmap.PAGESIZE
    first = -(-start // page)  # whole pages only: the advice rounds inward too
    last = end // page
    if last <= first:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    length = (last - first) * page
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, first * page)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = ctypes.create_string_buffer(last - first)
            assert libc.mincore(addr, length, vec) == 0, os.strerror(ctypes.get_errno())
            return sum(b & 1 for b in vec.raw)
        finally:
            libc.munmap(addr, length)
    finally:
        os.close(fd)


def drops_clean_pages(tmp_path):
    """Whether this file system lets a clean page go on POSIX_FADV_DONTNEED
    (tmpfs keeps them: its pages are the file)."""
    probe = tmp_path / "probe"
    with open(probe, "wb") as f:
        f.write(b"x" * (256 * KB))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    left = resident_pages(probe, 0, 256 * KB)
    probe.unlink()
    return left == 0


# -- the steps ------------------------------------------------------------------

def test_each_step_starts_the_new_range_and_drops_the_one_before(tmp_path, monkeypatch):
    calls = []
    real = writebehind.advance

    def spy(fd, dropped, started, end):
        calls.append((dropped, started, end))
        return real(fd, dropped, started, end)

    monkeypatch.setattr(writebehind, "advance", spy)
    step = 64 * KB
    f = files(tmp_path, step)
    rng = np.random.default_rng(1)
    sent = []
    for k in range(12):  # about 22 KB of text each: a step every third batch
        b, v = batch(rng, 1000, T0 + k)
        sent.extend(v.tolist())
        result = f.write_batch(b, T0 + k)
        assert result["rows"] == 1000 and not result["notes"]
    size = csv_path(tmp_path).stat().st_size
    assert len(calls) >= 3
    # The ranges tile the file from its first byte (the header) in order,
    # each started range is dropped at the next step, never before.
    assert calls[0][:2] == (0, 0)
    for (d0, s0, e0), (d1, s1, e1) in zip(calls, calls[1:]):
        assert (d1, s1) == (s0, e0)
    for d, s, e in calls:
        assert e - s >= step and d <= s < e <= size
    f.close_all()
    assert [float(v) for _, v in rows(csv_path(tmp_path).read_bytes())] == sent


def test_zero_turns_it_off(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(writebehind, "advance", lambda *a: calls.append(a))
    f = files(tmp_path, 0)
    rng = np.random.default_rng(2)
    for k in range(5):
        f.write_batch(batch(rng, 5000, T0 + k)[0], T0 + k)
    f.close_all()
    assert calls == [] and csv_path(tmp_path).stat().st_size > 100 * KB


@linux_only
def test_written_steps_leave_the_page_cache(tmp_path):
    if not drops_clean_pages(tmp_path):
        pytest.skip("this file system keeps clean pages cached (tmpfs?)")
    step = 256 * KB
    f = files(tmp_path, step)
    rng = np.random.default_rng(3)
    f.write_batch(batch(rng, 15_000, T0)[0], T0)  # > one step: its writing starts
    open_file = f.files[str(csv_path(tmp_path))]
    first = open_file.started
    assert first > step
    os.fsync(open_file.handle.fileno())  # that step is on disk now, its pages clean
    assert resident_pages(csv_path(tmp_path), 0, first) > 0
    f.write_batch(batch(rng, 15_000, T0 + 1)[0], T0 + 1)  # the next step drops the first
    assert open_file.dropped == first
    assert resident_pages(csv_path(tmp_path), 0, first) == 0
    # The newest step stays cached until its own turn comes.
    assert resident_pages(csv_path(tmp_path), first, open_file.started) > 0
    f.close_all()


def test_a_failed_advice_is_said_once_and_costs_no_row(tmp_path, monkeypatch):
    def fail(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writebehind, "advance", fail)
    f = files(tmp_path, 16 * KB)
    rng = np.random.default_rng(4)
    sent, notes = [], []
    for k in range(6):
        b, v = batch(rng, 2000, T0 + k)
        sent.extend(v.tolist())
        result = f.write_batch(b, T0 + k)
        assert result["rows"] == 2000 and not result["errors"] and not result["failed_rows"]
        notes.extend(result["notes"])
    assert len(notes) == 1
    assert "write-behind" in notes[0] and "Input/output error" in notes[0]
    assert str(csv_path(tmp_path)) in notes[0]
    f.close_all()
    assert [float(v) for _, v in rows(csv_path(tmp_path).read_bytes())] == sent


# -- the setting ----------------------------------------------------------------

def test_the_setting_reaches_the_files(tmp_path):
    assert build_config({}).data.write_behind_mb == 8
    h = Harness(tmp_path, WRITER="thread", WRITE_BEHIND_MB=3)
    assert h.svc.files.write_behind == 3 << 20
    h = Harness(tmp_path, WRITER="thread", WRITE_BEHIND_MB=0)
    assert h.svc.files.write_behind == 0


@pytest.mark.parametrize("bad, message", [(-1, "at least 0"), (1025, "at most 1024"),
                                          ("8MB", "integer")])
def test_the_setting_is_a_bounded_count_of_megabytes(bad, message):
    with pytest.raises(ConfigError) as info:
        build_config({"DATA": {"WRITE_BEHIND_MB": bad}})
    assert "DATA.WRITE_BEHIND_MB" in str(info.value) and message in str(info.value)


@needs_shared_memory
@linux_only
@pytest_twisted.inlineCallbacks
def test_the_worker_processes_write_behind_and_every_row_arrives(tmp_path):
    h = process_harness(tmp_path, WRITE_BEHIND_MB=1)
    h.svc.startService()
    rng = np.random.default_rng(6)
    t = h.clock.seconds()
    sent = {"a": [], "b": []}
    for k in range(4):  # about 2 MB of text per sensor and flush
        for s in sent:
            v = rng.normal(0, 0.3, 100_000)
            sent[s].extend(v.tolist())
            h.svc.write("M", s, v, t + k)
        yield h.svc.flush()
    yield h.svc.stopService()
    assert not [m for m in map(formatEvent, h.events) if "write-behind" in m]
    for s, values in sent.items():
        path = h.root / "M" / f"20261126_{s}.csv"
        assert path.stat().st_size > 4 << 20
        assert [float(v) for _, v in rows(path.read_bytes())] == values


def test_the_module_does_nothing_where_the_calls_are_missing(tmp_path, monkeypatch):
    writebehind._sync_file_range.cache_clear()
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: object())  # no sync_file_range in it
    try:
        assert writebehind._sync_file_range() is None and not writebehind.supported()
        with open(tmp_path / "f", "wb") as fh:
            fh.write(b"x" * 1000)
            writebehind.advance(fh.fileno(), 0, 0, 1000)  # no error, nothing done
    finally:
        monkeypatch.undo()
        writebehind._sync_file_range.cache_clear()
    assert sys.platform != "linux" or writebehind.supported()


# -- appends through writev -----------------------------------------------------

def test_short_writev_calls_are_continued_where_they_stopped(tmp_path, monkeypatch):
    # The kernel may write less than asked (a signal, a quota edge): every
    # byte must still land once, in order, with empty pieces skipped.
    from tsrmon.rawlog import files as files_module

    calls = []

    def short_writev(fd, buffers):  # at most 7 bytes a call, across piece ends too
        calls.append(len(buffers))
        return os.write(fd, b"".join(bytes(b) for b in buffers)[:7])

    monkeypatch.setattr(files_module.os, "writev", short_writev)
    monkeypatch.setattr(files_module, "IOV_MAX", 4)
    path = tmp_path / "f.csv"
    pieces = [b"time,data\r\n", b"", memoryview(b"[12:00:00,1.5\r\n12:00:00,2.5]")[1:-1], b"\r\n",
              b"12:00:01,", b"3.25", b"\r\n"]
    with open(path, "a+b", buffering=0) as handle:
        written = files_module._write_all(handle, pieces)
    expected = b"".join(bytes(p) for p in pieces)
    assert path.read_bytes() == expected and written == len(expected)
    assert len(calls) > len(pieces) and max(calls) <= 4


def test_writev_writing_nothing_is_an_error_not_a_loop(tmp_path, monkeypatch):
    from tsrmon.rawlog import files as files_module

    monkeypatch.setattr(files_module.os, "writev", lambda fd, buffers: 0)
    with open(tmp_path / "f.csv", "a+b", buffering=0) as handle:
        with pytest.raises(OSError) as info:
            files_module._write_all(handle, [b"12:00:00,1.0\r\n"])
    assert info.value.errno == errno.EIO
