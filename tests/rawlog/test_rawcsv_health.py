"""Raw CSV: one bad file degrades only its own sensor and recovers by itself;
idle handles are closed by the clock so a deleted file frees its space."""

import os
import shutil

import pytest_twisted
from twisted.logger import Logger

from tests.rawlog.test_rawcsv import Harness, rows
from tsrmon.rawlog.files import open_for_append
from tsrmon.rawlog.service import RawCSVService

DAY = "20261126"


def ok_health(h):
    return {"ok": True, "state": "ok", "path": str(h.root), "free_mb": None, "min_free_mb": 0,
            "last_error": h.svc.healthy()["last_error"]}


def test_one_bad_sensor_file_degrades_only_that_sensor_and_recovers(tmp_path):
    h = Harness(tmp_path)
    h.svc.startService()
    blocker = h.root / "M" / f"{DAY}_bad.csv"
    blocker.mkdir(parents=True)  # a folder where the file goes: EISDIR
    for _ in range(3):
        t = h.clock.seconds()
        h.svc.write("M", "good", [1.0, 2.0], t)
        h.svc.write("M", "bad", [3.0, 4.0, 5.0], t)
        h.clock.advance(1)
    health = h.svc.healthy()
    assert health["ok"] is True and health["state"] == "degraded"
    assert health["degraded_count"] == 1
    entry = health["degraded"]["M/bad"]
    assert entry["dropped_rows"] == 9 and entry["failures"] == 3 and "directory" in entry["error"]
    assert entry["file"].endswith(f"{DAY}_bad.csv")
    c = h.svc.counters()
    assert c["files_degraded"] == 1 and c["dropped_write_error"] == 9 and not c["failing"]
    assert len(rows(h.file("M", f"{DAY}_good.csv"))) == 6  # the other sensor goes on
    errors = h.messages("error")
    assert len(errors) == 1 and "M/bad" in errors[0] and "3 rows dropped" in errors[0]
    # Fixed: the next write succeeds and the component recovers without a restart.
    shutil.rmtree(blocker)
    h.svc.write("M", "bad", [6.0], h.clock.seconds())
    h.clock.advance(1)
    assert h.svc.healthy() == ok_health(h)
    assert h.svc.counters()["files_degraded"] == 0
    assert any("M/bad is written again; 9 rows were dropped in 3 failed flushes" in m
               for m in h.messages("info"))
    assert rows(h.file("M", f"{DAY}_bad.csv")) == [(b"10:00:03", b"6.0")]
    h.svc.stopService()


def test_a_sensor_name_that_cannot_be_a_file_name_is_not_a_global_failure(tmp_path):
    h = Harness(tmp_path)
    h.svc.startService()
    long_name = "\U0001F600" * 64  # 64 characters, 256 bytes of UTF-8
    h.svc.write("M", long_name, [1.0], h.clock.seconds())
    h.svc.write("M", "good", [1.0], h.clock.seconds())
    h.clock.advance(1)
    health = h.svc.healthy()
    assert health["ok"] is True and health["state"] == "degraded"
    (key,) = health["degraded"]
    assert key.startswith("M/\U0001F600") and len(key) < 100  # cut short for the log and JSON
    assert "too long" in health["degraded"][key]["error"]
    assert rows(h.file("M", f"{DAY}_good.csv")) == [(b"10:00:00", b"1.0")]
    h.svc.stopService()


def test_a_degraded_file_without_rows_is_forgotten_after_the_expiry(tmp_path):
    h = Harness(tmp_path)
    h.svc.startService()
    (h.root / "M" / f"{DAY}_bad.csv").mkdir(parents=True)
    h.svc.write("M", "bad", [1.0], h.clock.seconds())
    h.clock.advance(1)
    assert h.svc.healthy()["state"] == "degraded"
    h.clock.pump([60.0] * int(RawCSVService.DEGRADED_EXPIRE / 60 + 1))
    assert h.svc.healthy()["state"] == "ok"
    assert any("no longer reported" in m and "1 rows dropped" in m for m in h.messages("info"))
    h.svc.stopService()


def test_idle_files_are_closed_by_the_clock_and_a_deleted_file_frees_its_space(tmp_path):
    handles = []

    def opener(path):
        f = open_for_append(path)
        handles.append(f)
        return f

    h = Harness(tmp_path, open_file=opener)
    h.config = h.config.replace(data={"idle_close": 5.0})  # DATA.IDLE_CLOSE, when set
    h.svc = RawCSVService(h.config, h.clock, None, open_file=opener)
    assert h.svc.idle_close == 5.0
    h.svc.startService()
    h.svc.write("M", "s", [1.0], h.clock.seconds())
    h.clock.advance(1)
    assert h.svc.counters()["files_open"] == 1 and not handles[0].closed
    os.remove(h.root / "M" / f"{DAY}_s.csv")  # an operator frees space
    h.clock.advance(1)
    assert not handles[0].closed  # not idle yet
    for _ in range(5):  # no rows at all: only the clock
        h.clock.advance(1)
    assert handles[0].closed
    c = h.svc.counters()
    assert c["files_open"] == 0 and c["idle_closes"] == 1
    # Nothing more to do: no job per tick once every file is closed.
    h.clock.advance(1)
    assert h.svc.counters()["idle_closes"] == 1
    h.svc.stopService()


def test_the_default_idle_close_is_at_most_five_minutes(tmp_path):
    h = Harness(tmp_path)
    assert h.svc.idle_close == h.config.data.idle_close <= 300


@pytest_twisted.inlineCallbacks
def test_the_worker_process_closes_idle_files_too(tmp_path):
    from twisted.internet import reactor

    h = Harness(tmp_path)
    h.config = h.config.replace(data={"idle_close": 5.0})
    h.svc = RawCSVService(h.config, h.clock, reactor, worker="process")
    h.svc.log = Logger(observer=h.events.append)
    h.svc.startService()
    h.svc.write("M", "s", [1.0], h.clock.seconds())
    yield h.svc.flush()
    path = str(h.root / "M" / f"{DAY}_s.csv")
    fd_dir = f"/proc/{h.svc._workers[0].pid}/fd"

    def worker_holds(p):
        out = []
        for fd in os.listdir(fd_dir):
            try:
                out.append(os.readlink(os.path.join(fd_dir, fd)))
            except OSError:
                pass
        return any(link.startswith(p) for link in out)

    assert worker_holds(path)
    os.remove(path)
    h.clock.advance(6)
    yield h.svc.flush()
    assert h.svc.counters()["files_open"] == 0
    assert not worker_holds(path)  # "(deleted)" gone: the space is free
    yield h.svc.stopService()
