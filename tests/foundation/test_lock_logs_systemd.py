import datetime
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import LogLevel, LogPublisher

from tsrmon.config import load_config
from tsrmon.lock import InstanceLock, LockError, lock_owner
from tsrmon.logs import DatedLogFile, LogFileService
from tsrmon.ordered import OrderedMultiService
from tsrmon.systemd import SystemdNotifyService


def test_second_lock_is_refused_naming_pid(tmp_path):
    a = InstanceLock([tmp_path / "data", tmp_path / "db"]).acquire()
    try:
        with pytest.raises(LockError) as info:
            InstanceLock([tmp_path / "db"]).acquire()
        assert f"PID {os.getpid()}" in str(info.value)
        assert lock_owner(str(tmp_path / "db")) == str(os.getpid())
    finally:
        a.release()
    assert lock_owner(str(tmp_path / "db")) is None
    InstanceLock([tmp_path / "db"]).acquire().release()


def test_lock_of_a_killed_process_is_not_stale(tmp_path):
    code = textwrap.dedent(f"""
        import os, sys
        from tsrmon.lock import InstanceLock
        lock = InstanceLock([{str(tmp_path)!r}]).acquire()
        print('locked', flush=True)
        sys.stdin.read()
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"locked"
        with pytest.raises(LockError) as info:
            InstanceLock([tmp_path]).acquire()
        assert f"PID {p.pid}" in str(info.value)
    finally:
        p.kill()
        p.wait(10)
    InstanceLock([tmp_path]).acquire().release()  # SIGKILL left no stale lock


def _event(text, t, level=LogLevel.info):
    return {"log_format": text, "log_time": t, "log_level": level, "log_namespace": "test"}


def test_dated_log_files_are_named_as_deployed_and_pruned(tmp_path):
    tz = datetime.timezone.utc
    old = tmp_path / "tsrmon.20000101.log"
    old.write_text("old\n")
    keep_other = tmp_path / "other.20000101.log"
    keep_other.write_text("x\n")
    f = DatedLogFile(str(tmp_path), "tsrmon", retention_days=30, tz=tz)
    day1 = datetime.datetime(2026, 1, 27, 23, 59, tzinfo=tz).timestamp()
    f(_event("first", day1))
    f(_event("second", day1 + 120))
    f.close()
    assert (tmp_path / "tsrmon.20260127.log").read_text().count("first") == 1
    assert "second" in (tmp_path / "tsrmon.20260128.log").read_text()
    assert not old.exists()
    assert keep_other.exists()


def test_log_level_filters_file_output(tmp_path):
    config = load_config(None, base_dir=str(tmp_path))
    config = config.replace(logger={"level": "warn"})
    publisher = LogPublisher()
    svc = LogFileService(config, publisher)
    svc.startService()
    now = datetime.datetime.now().timestamp()
    publisher(_event("quiet info", now))
    publisher(_event("loud warning", now, LogLevel.warn))
    svc.stopService()
    text = "".join(p.read_text() for p in (tmp_path / "log").iterdir())
    assert "loud warning" in text and "quiet info" not in text


class Recorder(service.Service):
    def __init__(self, name, log, delay_clock=None):
        self.setName(name)
        self.events = log
        self.clock = delay_clock

    def stopService(self):
        super().stopService()
        self.events.append(("stop-begin", self.name))
        if self.clock is None:
            self.events.append(("stop-end", self.name))
            return None
        d = task.deferLater(self.clock, 1.0, lambda: self.events.append(("stop-end", self.name)))
        return d


def test_children_stop_one_after_another_in_reverse_order():
    clock = task.Clock()
    events = []
    top = OrderedMultiService()
    for name in ("store", "stats", "daq"):
        Recorder(name, events, clock).setServiceParent(top)
    top.startService()
    d = top.stopService()
    assert events == [("stop-begin", "daq")]
    clock.advance(1)
    assert events[-1] == ("stop-begin", "stats")
    clock.advance(1)
    clock.advance(1)
    assert events == [("stop-begin", "daq"), ("stop-end", "daq"), ("stop-begin", "stats"),
                      ("stop-end", "stats"), ("stop-begin", "store"), ("stop-end", "store")]
    assert d.called


def test_a_failing_child_does_not_stop_the_others_stopping():
    events = []

    class Broken(service.Service):
        name = "broken"

        def stopService(self):
            super().stopService()
            return defer.fail(RuntimeError("disk on fire"))

    top = OrderedMultiService()
    Recorder("store", events).setServiceParent(top)
    Broken().setServiceParent(top)
    top.startService()
    d = top.stopService()
    assert d.called and ("stop-end", "store") in events


def test_sd_notify_datagrams(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    clock = task.Clock()
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    svc = SystemdNotifyService(clock, env)
    try:
        svc.startService()
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1\n") and f"MAINPID={os.getpid()}" in ready
        assert sock.recv(4096) == b"WATCHDOG=1"  # now=True
        clock.advance(1.0)  # half of WatchdogSec
        assert sock.recv(4096) == b"WATCHDOG=1"
        svc.stopService()
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        sock.close()


def test_sd_notify_is_silent_without_systemd():
    svc = SystemdNotifyService(task.Clock(), {})
    svc.startService()
    svc.stopService()
    assert svc._watchdog is None


def test_log_level_changes_on_reconfigure(tmp_path):
    config = load_config(None, base_dir=str(tmp_path))
    publisher = LogPublisher()
    svc = LogFileService(config, publisher)
    svc.startService()
    now = datetime.datetime.now().timestamp()
    publisher(_event("before", now))
    config = config.replace(logger={"level": "error"})
    svc.reconfigure(config)
    publisher(_event("after", now))
    svc.stopService()
    text = "".join(p.read_text() for p in (tmp_path / "log").iterdir())
    assert "before" in text and "after" not in text
