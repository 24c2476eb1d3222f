"""The real daemon with its wall clock stepped by ±1 h while a DAQ streams (issue 9).

libfaketime (Debian ``faketime``) is preloaded into the daemon only; its
offset is read from a file at every clock read (``FAKETIME_NO_CACHE``), so
the test steps the daemon's clock by rewriting the file.  The monotonic
clock stays real (``FAKETIME_DONT_FAKE_MONOTONIC``), which is what
ClockJumpService compares the wall clock with.

Bounds: a step is detected within about two ClockJumpService periods (1 s)
and every timer then keeps its remaining real delay, so flushes, pings and
updates resume within a few seconds; without the correction a step back
stalls them for the full hour.  The waits below allow two intervals after
detection plus slack for a loaded CI machine — far below the hour that
separates working from broken.
"""

import datetime
import glob
import time
import zoneinfo

import pytest
import requests

from tests.conftest import require_service
from tests.ops.helpers import VIB1_PER_FRAME, DAQStream, EnvDaemon, LiveWatcher, bucket_rows, stored_count, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]  # ~8-10 s each measured

FLUSH = 2.0          # DATABASE.FLUSH
LIVE_INTERVAL = 1.0  # LIVE.INTERVAL
PING = 1.0           # LIVE.PING_INTERVAL
DETECT = 3.0         # ClockJumpService: sentinel stale after 1.5 periods, thread wakes every period
SLACK = 4.0          # a loaded 2-core CI machine
ZONE = "Asia/Seoul"


def _find_libfaketime():
    for pattern in ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
                    "/usr/local/lib/faketime/libfaketime.so.1"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


@pytest.fixture(scope="module")
def libfaketime():
    # Installed by .ci/install-test-deps (Debian package 'faketime'), never from a test.
    path = _find_libfaketime()
    require_service(path, "libfaketime not found (Debian package 'faketime': run .ci/install-test-deps)")
    return path


def _daemon(tmp_path, libfaketime):
    offset = tmp_path / "faketime.rc"
    offset.write_text("+0\n")
    env = {
        "LD_PRELOAD": libfaketime,
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    d = EnvDaemon(tmp_path, overrides={
        "DATABASE": {"FLUSH": FLUSH},
        "LIVE": {"INTERVAL": LIVE_INTERVAL, "PING_INTERVAL": PING, "PING_TIMEOUT": 10},
        "TIME": {"ZONE": ZONE},
    }, env=env)
    return d, offset


def _hour_start(t):
    # Asia/Seoul is UTC+9 all year: local hours start on UTC hours.
    return int(t // 3600) * 3600


def _local(text):
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=zoneinfo.ZoneInfo(ZONE))


@pytest.mark.parametrize("step", [-3600, 3600], ids=["back_1h", "forward_1h"])
def test_flushes_pings_updates_and_buckets_follow_a_clock_step(tmp_path, libfaketime, step):
    d, offset = _daemon(tmp_path, libfaketime)
    d.start()
    daq = live = None
    try:
        # The daemon's clock really is faked (and still real before the step).
        served = requests.get(d.url("/healthz"), timeout=10).json()["time"]
        assert abs(served - time.time()) < 60
        daq = DAQStream(d.tcp_port, pace=0.02)
        daq.start()
        live = LiveWatcher(d.http_port)
        live.start()
        assert live.connected.wait(20), live.error
        wait_for(lambda: stored_count(d.db) > 0, 2 * FLUSH + SLACK, "first flush")
        t = time.monotonic()
        wait_for(lambda: live.since(t, "update") and live.since(t, "ping"), LIVE_INTERVAL + PING + SLACK,
                 "updates and pings before the step")
        before = set(bucket_rows(d.db))

        offset.write_text(f"{step:+d}\n")
        stepped = time.monotonic()
        wait_for(lambda: abs(requests.get(d.url("/healthz"), timeout=10).json()["time"]
                             - (time.time() + step)) < 60, 5, "the daemon's clock to follow the file")

        # Flushes go on: samples sent after the step reach SQLite.
        mark = time.monotonic()
        sent_at_mark = daq.sent
        wait_for(lambda: stored_count(d.db) >= sent_at_mark * VIB1_PER_FRAME,
                 DETECT + 2 * FLUSH + SLACK, "a flush after the step")
        # Pings and updates go on, and updates carry the new wall time.
        wait_for(lambda: len(live.since(mark, "ping")) >= 2 and len(live.since(mark, "update")) >= 2,
                 DETECT + 2 * max(PING, LIVE_INTERVAL) + SLACK, "pings and updates after the step")
        newest = live.since(mark, "update")[-1]
        assert abs(_local(newest["time"]).timestamp() - (time.time() + step)) < 30, newest
        # New samples go to the hour bucket of the new wall clock.
        shifted_hour = _hour_start(time.time() + step)
        wait_for(lambda: bucket_rows(d.db).get(shifted_hour, ("", 0))[1] > 0,
                 2 * FLUSH + SLACK, "a row in the shifted hour bucket")
        assert shifted_hour not in before
        label = datetime.datetime.fromtimestamp(shifted_hour, zoneinfo.ZoneInfo(ZONE))
        assert bucket_rows(d.db)[shifted_hour][0] == label.strftime("%Y-%m-%d %H:00:00")
        assert live.error is None and not live.closed.is_set(), live.error
        assert time.monotonic() - stepped < 60  # nothing above waited for the hour
    finally:
        try:
            if live is not None:
                live.finish()
            sent = daq.finish() if daq is not None else 0
        finally:
            rc = d.stop()  # even when the DAQ thread failed: no daemon is left behind
    log = d.log_text()
    assert rc == 0, log
    direction = "back" if step < 0 else "forward"
    assert f"wall clock stepped {direction} by 36" in log, log
    # Nothing was lost across the step: every DataUpdate is stored.
    assert stored_count(d.db) == sent * VIB1_PER_FRAME
    assert stored_count(d.db, level="minute") == sent * VIB1_PER_FRAME
    assert "Traceback (most recent call last)" not in log, log
