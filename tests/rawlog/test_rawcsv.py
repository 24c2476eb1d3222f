"""The raw CSV writer service (tsrmon.rawlog.service), driven by a Clock.

Most tests run the file jobs inline (no reactor given); one runs them in the
reactor's thread pool.  Files are real, in ``tmp_path``.
"""

import datetime
import errno
import gzip
import os
import struct
import zoneinfo

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.logger import Logger

from tsrmon.config import build_config
from tsrmon.rawlog.files import open_for_append
from tsrmon.rawlog.service import RawCSVService

MB = 1024 * 1024
SEOUL = zoneinfo.ZoneInfo("Asia/Seoul")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def epoch(zone, *args, fold=0):
    return datetime.datetime(*args, tzinfo=zone, fold=fold).timestamp()


def make(tmp_path, zone="Asia/Seoul", start=None, **data):
    """A config for ``tmp_path/data`` and a Clock at ``start`` (default 2026-11-26 10:00 local)."""
    data.setdefault("MIN_FREE_MB", 0)
    config = build_config({"DATA": {"PATH": str(tmp_path / "data"), **data}, "TIME": {"ZONE": zone}})
    clock = task.Clock()
    clock.advance(start if start is not None else epoch(zoneinfo.ZoneInfo(zone), 2026, 11, 26, 10, 0, 0))
    return config, clock


class Harness:
    """A service plus its clock, captured log events and file opens."""

    def __init__(self, tmp_path, zone="Asia/Seoul", start=None, reactor=None, free_space=None,
                 open_file=None, **data):
        self.config, self.clock = make(tmp_path, zone, start, **data)
        self.root = tmp_path / "data"
        self.events = []
        self.opens = []

        def opener(path):
            self.opens.append(path)
            return (open_file or open_for_append)(path)

        self.svc = RawCSVService(self.config, self.clock, reactor, free_space=free_space,
                                 open_file=opener)
        self.svc.log = Logger(observer=self.events.append, namespace="rawcsv-test")

    def messages(self, level=None):
        from twisted.logger import formatEvent
        return [formatEvent(e) for e in self.events
                if level is None or e["log_level"].name == level]

    def file(self, machine, name):
        return (self.root / machine / name).read_bytes()


def rows(text):
    lines = text.split(b"\r\n")
    assert lines[0] == b"time,data"
    assert lines[-1] == b""
    return [tuple(line.split(b",")) for line in lines[1:-1]]


# -- layout ---------------------------------------------------------------------

def test_rows_header_and_crlf_exact(tmp_path):
    h = Harness(tmp_path)
    h.svc.startService()
    t = h.clock.seconds()  # 2026-11-26 10:00:00 in Seoul
    h.svc.write("ShotBlast", "shot_blast_vib1", [0.5, -1.25], t + 0.2)
    h.svc.write("ShotBlast", "shot_blast_vib1", [3.0], t + 1.7)
    h.svc.write("ShotBlast", "shot_blast_vib2", [0.125], t + 0.3)
    h.svc.flush()
    assert h.file("ShotBlast", "20261126_shot_blast_vib1.csv") == (
        b"time,data\r\n10:00:00,0.5\r\n10:00:00,-1.25\r\n10:00:01,3.0\r\n")
    assert h.file("ShotBlast", "20261126_shot_blast_vib2.csv") == b"time,data\r\n10:00:00,0.125\r\n"
    c = h.svc.counters()
    assert c["rows_written"] == 4 and c["files_open"] == 2
    assert c["bytes_written"] == sum(
        os.path.getsize(h.root / "ShotBlast" / n) for n in os.listdir(h.root / "ShotBlast"))
    h.svc.stopService()


def test_iso_time_format(tmp_path):
    h = Harness(tmp_path, TIME_FORMAT="iso")
    h.svc.startService()
    t = h.clock.seconds()
    h.svc.write("M", "s", [1.0, 2.0], t + 0.0421)
    h.svc.flush()
    assert h.file("M", "20261126_s.csv") == (
        b"time,data\r\n2026-11-26T10:00:00.042+09:00,1.0\r\n2026-11-26T10:00:00.042+09:00,2.0\r\n")
    h.svc.stopService()


def test_restart_appends_without_a_second_header(tmp_path):
    for value in (1.0, 2.0):
        h = Harness(tmp_path)
        h.svc.startService()
        h.svc.write("M", "s", [value], h.clock.seconds())
        h.svc.stopService()
    assert h.file("M", "20261126_s.csv") == b"time,data\r\n10:00:00,1.0\r\n10:00:00,2.0\r\n"


def test_a_partial_last_row_from_a_crash_is_cut(tmp_path):
    folder = tmp_path / "data" / "M"
    folder.mkdir(parents=True)
    (folder / "20261126_s.csv").write_bytes(b"time,data\r\n09:59:59,1.5\r\n09:59:59,0.12")
    h = Harness(tmp_path)
    h.svc.startService()
    h.svc.write("M", "s", [2.5], h.clock.seconds())
    h.svc.flush()
    assert h.file("M", "20261126_s.csv") == b"time,data\r\n09:59:59,1.5\r\n10:00:00,2.5\r\n"
    assert any("partial row" in m for m in h.messages("warn"))
    h.svc.stopService()


def test_floats_round_trip_through_the_file(tmp_path):
    values = [0.0, -0.0, 1e-5, 1e-7, 5e-324, 1.7976931348623157e308, -2.2250738585072014e-308,
              1e16, 0.1, 1 / 3, -123456.789]
    h = Harness(tmp_path)
    h.svc.startService()
    h.svc.write("M", "s", values, h.clock.seconds())
    h.svc.stopService()
    back = [float(v) for _, v in rows(h.file("M", "20261126_s.csv"))]
    assert struct.pack("<11d", *back) == struct.pack("<11d", *values)


def test_escaping_path_is_refused(tmp_path):
    h = Harness(tmp_path)
    h.svc.startService()
    h.svc.write("..", "s", [1.0], h.clock.seconds())
    h.svc.write("M", "s", [1.0], h.clock.seconds())
    h.svc.flush()
    assert h.svc.counters()["dropped_refused"] == 1
    assert sorted(os.listdir(tmp_path)) == ["data"]
    assert sorted(os.listdir(h.root)) == ["M"]
    h.svc.stopService()


# -- midnight -------------------------------------------------------------------

def test_midnight_switch_in_seoul_driven_by_the_clock(tmp_path):
    start = epoch(SEOUL, 2026, 11, 26, 23, 59, 58)
    h = Harness(tmp_path, start=start)
    h.svc.startService()
    for _ in range(5):  # 23:59:58 .. 00:00:02, flushed by the timer
        h.svc.write("M", "s", [1.5], h.clock.seconds())
        h.clock.advance(1)
    assert rows(h.file("M", "20261126_s.csv")) == [(b"23:59:58", b"1.5"), (b"23:59:59", b"1.5")]
    assert rows(h.file("M", "20261127_s.csv")) == [
        (b"00:00:00", b"1.5"), (b"00:00:01", b"1.5"), (b"00:00:02", b"1.5")]
    # Yesterday's file is closed once idle.
    assert h.svc.counters()["files_open"] == 2
    h.clock.advance(h.svc.idle_close)
    h.svc.write("M", "s", [1.5], h.clock.seconds())
    h.clock.advance(1)
    assert h.svc.counters()["files_open"] == 1
    h.svc.stopService()


def test_dst_days_in_berlin(tmp_path):
    # Spring forward 2026-03-29 (23 h) and fall back 2026-10-25 (25 h).
    h = Harness(tmp_path, zone="Europe/Berlin", start=epoch(BERLIN, 2026, 3, 28, 23, 59, 59))
    h.svc.startService()
    t = h.clock.seconds()
    h.svc.write("M", "s", [1.0], t)
    h.svc.write("M", "s", [2.0], t + 1)                                           # 00:00:00 CET
    h.svc.write("M", "s", [3.0], epoch(BERLIN, 2026, 3, 29, 3, 0, 0))             # after the gap
    h.svc.write("M", "s", [4.0], epoch(BERLIN, 2026, 3, 29, 23, 59, 59))
    h.svc.write("M", "s", [5.0], epoch(BERLIN, 2026, 3, 30, 0, 0, 0))
    h.svc.write("M", "s", [6.0], epoch(BERLIN, 2026, 10, 25, 2, 30, 0, fold=0))    # CEST
    h.svc.write("M", "s", [7.0], epoch(BERLIN, 2026, 10, 25, 2, 30, 0, fold=1))    # CET, 1 h later
    h.svc.write("M", "s", [8.0], epoch(BERLIN, 2026, 10, 25, 23, 59, 59))
    h.svc.write("M", "s", [9.0], epoch(BERLIN, 2026, 10, 26, 0, 0, 0))
    h.svc.stopService()
    assert rows(h.file("M", "20260328_s.csv")) == [(b"23:59:59", b"1.0")]
    assert rows(h.file("M", "20260329_s.csv")) == [
        (b"00:00:00", b"2.0"), (b"03:00:00", b"3.0"), (b"23:59:59", b"4.0")]
    assert rows(h.file("M", "20260330_s.csv")) == [(b"00:00:00", b"5.0")]
    assert rows(h.file("M", "20261025_s.csv")) == [
        (b"02:30:00", b"6.0"), (b"02:30:00", b"7.0"), (b"23:59:59", b"8.0")]
    assert rows(h.file("M", "20261026_s.csv")) == [(b"00:00:00", b"9.0")]


# -- buffering ------------------------------------------------------------------

def test_writes_only_buffer_and_files_stay_open_between_flushes(tmp_path):
    h = Harness(tmp_path)
    h.svc.startService()
    t = h.clock.seconds()
    for i in range(1000):
        h.svc.write("M", "s", [float(i)], t + i / 2000)
    assert h.opens == []
    assert not (h.root / "M").exists()
    assert h.svc.counters()["buffered_frames"] == 1000
    h.clock.advance(RawCSVService.FLUSH_INTERVAL)  # the timer flushes
    assert len(h.opens) == 1
    assert len(rows(h.file("M", "20261126_s.csv"))) == 1000
    for second in range(5):
        h.svc.write("M", "s", [1.0, 2.0], h.clock.seconds())
        h.clock.advance(RawCSVService.FLUSH_INTERVAL)
    assert len(h.opens) == 1  # the same handle, every flush
    assert len(rows(h.file("M", "20261126_s.csv"))) == 1010
    assert h.svc.counters()["flushes"] == 6
    h.svc.stopService()


def test_stop_service_flushes_and_closes(tmp_path):
    h = Harness(tmp_path)
    h.svc.startService()
    h.svc.write("M", "s", [4.25], h.clock.seconds())
    d = h.svc.stopService()
    assert isinstance(d, defer.Deferred)
    assert d.called
    assert rows(h.file("M", "20261126_s.csv")) == [(b"10:00:00", b"4.25")]
    assert h.svc.counters()["files_open"] == 0
    assert h.svc.files.files == {}
    h.svc.write("M", "s", [1.0, 2.0], h.clock.seconds())
    assert h.svc.counters()["dropped_stopped"] == 2


def test_disabled_writes_and_drops_nothing(tmp_path):
    h = Harness(tmp_path, ENABLED=False)
    h.svc.startService()
    h.svc.write("M", "s", [1.0], h.clock.seconds())
    h.clock.advance(5)
    h.svc.stopService()
    assert not (h.root / "M").exists()
    c = h.svc.counters()
    assert c["rows_written"] == 0
    assert sum(v for k, v in c.items() if k.startswith("dropped_")) == 0
    assert h.svc.healthy()["state"] == "disabled"


def test_disk_behind_drops_buffers_and_counts(tmp_path):
    h = Harness(tmp_path)
    stuck = []

    def run_in_thread(fn, *args):
        d = defer.Deferred()
        stuck.append((d, fn, args))
        return d

    h.svc._run_in_thread = run_in_thread
    h.svc.MAX_BACKLOG_FRAMES = 10
    h.svc.startService()
    h.svc.write("M", "s", [1.0], h.clock.seconds())
    h.clock.advance(1)  # flush starts and hangs
    assert len(stuck) == 1
    for _ in range(11):
        h.svc.write("M", "s", [1.0, 2.0], h.clock.seconds())
    h.clock.advance(1)  # still writing: 11 frames waiting > 10
    assert h.svc.counters()["dropped_backlog"] == 22
    assert h.svc.healthy()["state"] == "disk behind"
    assert any("not keeping up" in m for m in h.messages("error"))
    d, fn, args = stuck.pop()
    d.callback(fn(*args))
    assert h.svc.healthy()["ok"]
    assert rows(h.file("M", "20261126_s.csv")) == [(b"10:00:00", b"1.0")]


# -- free space -----------------------------------------------------------------

def test_low_space_pauses_and_resumes(tmp_path):
    free = {"bytes": 500 * MB}
    h = Harness(tmp_path, MIN_FREE_MB=100, free_space=lambda path: free["bytes"])
    h.svc.startService()  # measures once at start: plenty
    h.svc.write("M", "s", [1.0], h.clock.seconds())
    free["bytes"] = 50 * MB
    h.clock.advance(RawCSVService.SPACE_INTERVAL)  # flushes, then measures: too little
    assert h.svc.counters()["paused"]
    h.svc.write("M", "s", [2.0, 3.0], h.clock.seconds())
    h.clock.advance(RawCSVService.SPACE_INTERVAL)
    errors = [m for m in h.messages("error") if "PAUSED" in m]
    assert len(errors) == 1 and "50 MB free" in errors[0]
    assert h.svc.counters()["dropped_low_space"] == 2
    assert h.svc.healthy()["state"] == "paused: low disk space"
    free["bytes"] = 101 * MB  # above the floor but not above the resume margin
    h.clock.advance(RawCSVService.SPACE_INTERVAL)
    assert h.svc.counters()["paused"]
    free["bytes"] = 200 * MB
    h.clock.advance(RawCSVService.SPACE_INTERVAL)
    assert not h.svc.counters()["paused"]
    assert any("resumed" in m and "2 samples were dropped" in m for m in h.messages("warn"))
    h.svc.write("M", "s", [4.0], h.clock.seconds())
    h.svc.stopService()
    assert [v for _, v in rows(h.file("M", "20261126_s.csv"))] == [b"1.0", b"4.0"]


def test_pause_drops_what_was_buffered(tmp_path):
    free = {"bytes": 10 * MB}
    h = Harness(tmp_path, MIN_FREE_MB=100, free_space=lambda path: free["bytes"])
    h.svc.write("M", "s", [1.0, 2.0, 3.0], h.clock.seconds())  # buffered before start
    h.svc.startService()
    assert h.svc.counters()["dropped_low_space"] == 3
    h.svc.stopService()
    assert not (h.root / "M").exists()


# -- write errors ---------------------------------------------------------------

class FullDisk:
    """A file whose writes fail with ENOSPC after writing part of the data."""

    full = False

    def __init__(self, path):
        self.raw = open_for_append(path)

    def write(self, data):
        if FullDisk.full:
            self.raw.write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.raw.write(data)

    def __getattr__(self, name):
        return getattr(self.raw, name)


def test_enospc_is_logged_once_counted_cut_back_and_recovers(tmp_path):
    FullDisk.full = False
    h = Harness(tmp_path, open_file=FullDisk)
    h.svc.startService()
    t = h.clock.seconds()
    h.svc.write("M", "s", [1.0], t)
    h.clock.advance(1)
    FullDisk.full = True
    for i in range(3):
        h.svc.write("M", "s", [2.0, 3.0, 4.0], h.clock.seconds())
        h.clock.advance(1)
    c = h.svc.counters()
    assert c["dropped_write_error"] == 9 and c["write_errors"] == 3 and c["failing"]
    errors = h.messages("error")
    assert len(errors) == 1
    assert "20261126_s.csv" in errors[0] and "No space left on device" in errors[0]
    assert h.svc.healthy()["state"] == "write errors"
    # No half row was left behind.
    assert rows(h.file("M", "20261126_s.csv")) == [(b"10:00:00", b"1.0")]
    FullDisk.full = False
    h.svc.write("M", "s", [5.0], h.clock.seconds())
    h.clock.advance(1)
    assert not h.svc.counters()["failing"]
    assert any("succeed again" in m and "9 rows" in m for m in h.messages("info"))
    assert [v for _, v in rows(h.file("M", "20261126_s.csv"))] == [b"1.0", b"5.0"]
    h.svc.stopService()


# -- gzip and retention -------------------------------------------------------------

def seed(root, machine, name, text=b"time,data\r\n00:00:00,1.0\r\n"):
    folder = root / machine
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(text)


def test_gzip_and_retention_by_file_date(tmp_path):
    h = Harness(tmp_path, GZIP_AFTER_DAYS=2, RETENTION_DAYS=5)  # today: 20261126
    for day in ("20261126", "20261125", "20261124", "20261123", "20261121", "20261120"):
        seed(h.root, "M", f"{day}_s.csv", f"time,data\r\n00:00:00,{day}.0\r\n".encode())
    seed(h.root, "M", "20261119_s.csv.gz", gzip.compress(b"x"))
    seed(h.root, "M", "notes.txt", b"keep me")
    h.svc.startService()  # maintenance runs at start
    names = sorted(os.listdir(h.root / "M"))
    assert names == ["20261121_s.csv.gz", "20261123_s.csv.gz", "20261124_s.csv",
                     "20261125_s.csv", "20261126_s.csv", "notes.txt"]
    with gzip.open(h.root / "M" / "20261123_s.csv.gz") as f:
        assert f.read() == b"time,data\r\n00:00:00,20261123.0\r\n"
    c = h.svc.counters()
    assert c["gzipped_files"] == 2 and c["removed_files"] == 2
    # The next local day runs it again, driven by the clock.
    h.clock.advance(epoch(SEOUL, 2026, 11, 27, 0, 0, 0) - h.clock.seconds())
    assert sorted(os.listdir(h.root / "M"))[:2] == ["20261123_s.csv.gz", "20261124_s.csv.gz"]
    h.svc.stopService()


def test_late_rows_for_a_gzipped_day_become_a_second_member(tmp_path):
    h = Harness(tmp_path, GZIP_AFTER_DAYS=1)
    seed(h.root, "M", "20261120_s.csv", b"time,data\r\n10:00:00,1.0\r\n")
    h.svc.startService()
    assert os.listdir(h.root / "M") == ["20261120_s.csv.gz"]
    h.svc.write("M", "s", [2.0], epoch(SEOUL, 2026, 11, 20, 11, 0, 0))  # a late sample
    h.svc.flush()
    h.svc.maintain()
    assert sorted(os.listdir(h.root / "M")) == ["20261120_s.csv.gz"]
    with gzip.open(h.root / "M" / "20261120_s.csv.gz") as f:
        assert f.read() == b"time,data\r\n10:00:00,1.0\r\n11:00:00,2.0\r\n"
    h.svc.stopService()


# -- threads ------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_jobs_run_in_the_reactor_thread_pool(tmp_path):
    from twisted.internet import reactor
    import threading

    threads_seen = []
    h = Harness(tmp_path, reactor=reactor)

    def opener(path):
        threads_seen.append(threading.get_ident())
        return open_for_append(path)

    h.svc.files.open_file = opener
    h.svc.startService()
    h.svc.write("M", "s", [1.0, 2.0], h.clock.seconds())
    yield h.svc.flush()
    assert threads_seen and threads_seen[0] != threading.get_ident()
    h.svc.write("M", "s", [3.0], h.clock.seconds())
    yield h.svc.stopService()
    assert [v for _, v in rows(h.file("M", "20261126_s.csv"))] == [b"1.0", b"2.0", b"3.0"]


@pytest.mark.parametrize("fmt", ["hms", "iso"])
def test_counters_and_health_are_flat(tmp_path, fmt):
    h = Harness(tmp_path, TIME_FORMAT=fmt)
    h.svc.startService()
    h.svc.write("M", "s", [1.0], h.clock.seconds())
    h.svc.flush()
    c = h.svc.counters()
    assert all(isinstance(v, (int, bool, type(None))) for v in c.values())
    assert h.svc.healthy() == {"ok": True, "state": "ok", "path": str(h.root), "free_mb": None,
                               "min_free_mb": 0, "last_error": None}
    h.svc.stopService()


# -- the worker process -----------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_process_worker_writes_the_same_files(tmp_path):
    from twisted.internet import reactor

    import numpy as np

    h = Harness(tmp_path, TIME_FORMAT="iso")
    h.svc = RawCSVService(h.config, h.clock, reactor, worker="process")
    h.svc.log = Logger(observer=h.events.append)
    h.svc.startService()
    t = h.clock.seconds()
    h.svc.write("M", "s", [0.5, -0.0, 1e-7], t + 0.25)
    h.svc.write("M", "s", np.array([2.0, 3.5]), t + 0.5)  # not marshallable as is
    yield h.svc.flush()
    pid = h.svc._workers[0].pid
    assert pid is not None and pid != os.getpid()
    assert h.svc.counters()["rows_written"] == 5
    h.svc.write("M", "s", [4.0], t + 1)
    yield h.svc.stopService()
    assert not h.svc._workers[0].running
    assert rows(h.file("M", "20261126_s.csv")) == [
        (b"2026-11-26T10:00:00.250+09:00", b"0.5"), (b"2026-11-26T10:00:00.250+09:00", b"-0.0"),
        (b"2026-11-26T10:00:00.250+09:00", b"1e-7"), (b"2026-11-26T10:00:00.500+09:00", b"2.0"),
        (b"2026-11-26T10:00:00.500+09:00", b"3.5"), (b"2026-11-26T10:00:01.000+09:00", b"4.0")]


@pytest_twisted.inlineCallbacks
def test_a_dead_worker_costs_one_batch_and_is_restarted(tmp_path):
    import signal

    from twisted.internet import reactor

    h = Harness(tmp_path, GZIP_AFTER_DAYS=3)
    seed(h.root, "M", "20261101_s.csv", b"time,data\r\n10:00:00,1.0\r\n")
    h.svc = RawCSVService(h.config, h.clock, reactor, worker="process")
    h.svc.log = Logger(observer=h.events.append)
    h.svc.startService()  # maintenance at start runs in the worker
    h.svc.write("M", "s", [1.0], h.clock.seconds())
    yield h.svc.flush()
    yield h.svc.maintain()  # joins the run started by startService
    assert sorted(os.listdir(h.root / "M")) == ["20261101_s.csv.gz", "20261126_s.csv"]
    assert h.svc.counters()["gzipped_files"] == 1
    worker = h.svc._workers[0]
    ended = defer.Deferred()
    worker._ended = [ended]
    os.kill(worker.pid, signal.SIGKILL)
    yield ended
    h.svc.write("M", "s", [2.0, 3.0], h.clock.seconds())
    yield h.svc.flush()  # restarts the worker
    assert worker.starts == 2
    assert h.svc.counters()["rows_written"] == 3
    assert h.svc.counters()["dropped_write_error"] == 0  # it died between jobs
    yield h.svc.stopService()
    assert [v for _, v in rows(h.file("M", "20261126_s.csv"))] == [b"1.0", b"2.0", b"3.0"]


@pytest_twisted.inlineCallbacks
def test_a_worker_dying_mid_job_drops_and_counts_that_batch(tmp_path):
    from twisted.internet import reactor

    h = Harness(tmp_path)
    h.svc = RawCSVService(h.config, h.clock, reactor, worker="process")
    h.svc.log = Logger(observer=h.events.append)
    h.svc.startService()
    h.svc.write("M", "s", [1.0], h.clock.seconds())
    yield h.svc.flush()
    worker = h.svc._workers[0]
    # The worker dies as the next batch is sent: whether the write still
    # lands in the pipe or fails (EPIPE), the batch is never processed.
    original = worker._write
    pid = worker.pid

    def die_then_write(generation, data):
        os.kill(pid, 9)
        original(generation, data)

    worker._write = die_then_write
    h.svc.write("M", "s", [2.0, 3.0], h.clock.seconds())
    yield h.svc.flush()
    c = h.svc.counters()
    assert c["dropped_write_error"] == 2 and c["failing"]
    assert any("write job failed" in m for m in h.messages("critical"))
    worker._write = original
    h.svc.write("M", "s", [4.0], h.clock.seconds())
    yield h.svc.flush()
    assert not h.svc.counters()["failing"]
    yield h.svc.stopService()
    assert [v for _, v in rows(h.file("M", "20261126_s.csv"))] == [b"1.0", b"4.0"]


def test_fed_by_the_machine_hub(tmp_path):
    from tsrmon.hub.machines import MachineHub

    class Connection:
        peer_host = "127.0.0.1"

        def takeover(self, reason):
            pass

        def storage_congested(self, congested):
            pass

    h = Harness(tmp_path)
    hub = MachineHub(h.config, h.clock)
    hub.raw = h.svc
    h.svc.startService()
    machine = hub.claim("ShotBlast", Connection())
    hub.data(machine, [("shot_blast_vib1", "VIB", [0.5, 0.25]), ("shot_blast_vib2", "VIB", [1.0])])
    h.clock.advance(1)
    assert rows(h.file("ShotBlast", "20261126_shot_blast_vib1.csv")) == [
        (b"10:00:00", b"0.5"), (b"10:00:00", b"0.25")]
    assert rows(h.file("ShotBlast", "20261126_shot_blast_vib2.csv")) == [(b"10:00:00", b"1.0")]
    h.svc.stopService()


def test_a_file_deleted_while_open_is_started_again(tmp_path):
    h = Harness(tmp_path)
    h.svc.startService()
    h.svc.write("M", "s", [1.0], h.clock.seconds())
    h.clock.advance(1)
    os.remove(h.root / "M" / "20261126_s.csv")
    h.svc.write("M", "s", [2.0], h.clock.seconds())
    h.clock.advance(1)
    assert rows(h.file("M", "20261126_s.csv")) == [(b"10:00:01", b"2.0")]
    assert any("deleted while open" in m for m in h.messages("warn"))
    h.svc.stopService()


@pytest_twisted.inlineCallbacks
def test_a_worker_that_cannot_start_fails_jobs_not_the_timer(tmp_path):
    from twisted.internet import reactor

    h = Harness(tmp_path)
    h.svc = RawCSVService(h.config, h.clock, reactor, worker="process")
    h.svc.log = Logger(observer=h.events.append)
    starts = []

    def no_fork(*args, **kwargs):
        starts.append(args)
        raise OSError(11, "Resource temporarily unavailable")

    h.svc._workers[0].reactor = type("NoFork", (), {"spawnProcess": staticmethod(no_fork)})()
    h.svc.startService()
    h.svc.write("M", "s", [1.0, 2.0], h.clock.seconds())
    h.clock.advance(1)  # the timer's flush fails...
    h.svc.write("M", "s", [3.0], h.clock.seconds())
    h.clock.advance(1)  # ...and the timer goes on
    yield h.svc.flush()
    assert len(starts) >= 2
    c = h.svc.counters()
    assert c["dropped_write_error"] == 3 and c["failing"]
    assert len(h.messages("critical")) == 1
    h.svc._workers[0].reactor = reactor
    h.svc.write("M", "s", [4.0], h.clock.seconds())
    yield h.svc.stopService()
    assert [v for _, v in rows(h.file("M", "20261126_s.csv"))] == [b"4.0"]
