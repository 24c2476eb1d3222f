"""``--demo`` shows history (issue 14, item 4): DemoService backfills 14 days
of statistics through the hub's late-data entry, with raw CSV off, before its
DAQs connect."""

import datetime
import math
import os
import time
import zoneinfo

import pytest
import pytest_twisted
import requests
from twisted.internet import reactor

from tests.daemon.harness import Daemon
from tests.ingest.helpers import make_config, make_hub, port_of, start_listener, wait_until
from tsrmon.daqside.demo import DEMO_MACHINES, DemoService


@pytest_twisted.inlineCallbacks
def test_backfill_goes_through_the_late_data_path_without_raw_csv(tmp_path):
    config = make_config(tmp_path)
    hub, rec = make_hub(config)
    hub.remember(["AROPump"])  # known from storage: a restarted demo
    demo = DemoService(config, reactor, lambda: None, hub=hub)
    started = reactor.seconds()
    demo.startService()
    try:
        took = yield demo.backfilled
    finally:
        yield demo.stopService()
    assert took is not None and took < 10
    assert rec.raw == [] and hub.raw is rec  # raw CSV off for the backfill only
    assert all(late for *_, late in rec.added)  # every sample as late data
    by_sensor = {}
    for machine, sensor, stype, values, t, late in rec.added:
        by_sensor.setdefault((machine, sensor), []).append(t)
        assert len(values) == demo.per_chunk
    expected = {(m, s) for m, sensors in DEMO_MACHINES.items() if m != "AROPump" for s in sensors}
    assert set(by_sensor) == expected  # AROPump was in storage already: not backfilled twice
    end = math.floor(started / 60) * 60
    for times in by_sensor.values():
        assert len(times) == 14 * 86400 // demo.every  # one short chunk per sensor every 5 minutes
        assert times == sorted(times) and len(set(times)) == len(times)
        assert end - 14 * 86400 <= times[0] < end - 14 * 86400 + demo.every
        assert end - demo.every < times[-1] < end
    assert hub.get("ShotBlast").samples == 2 * 4032 * demo.per_chunk


@pytest_twisted.inlineCallbacks
def test_demo_connects_its_daqs_after_the_backfill(tmp_path):
    svc, hub, rec = start_listener(tmp_path)
    demo = DemoService(svc.config, reactor, lambda: ("127.0.0.1", port_of(svc)),
                                hub=hub, fault_every=0, rate=10)
    demo.startService()
    try:
        yield demo.backfilled
        backfilled = len(rec.added)
        assert backfilled and all(late for *_, late in rec.added)
        yield wait_until(lambda: all(m.connected for m in hub.machines.values())
                         and len(hub.machines) == len(DEMO_MACHINES))
        yield wait_until(lambda: any(not late for *_, late in rec.added))  # live data after the history
        assert all(late for *_, late in rec.added[:backfilled])
    finally:
        yield demo.stopService()
        yield svc.stopService()


def _day_rows(daemon, machine, start, end):
    r = requests.get(daemon.url("/stat/day"), params={"machine": machine, "start": start, "end": end,
                                                      "align": "false"}, timeout=5)
    return r.json()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_demo_daemon_has_14_days_of_history_within_10_s(tmp_path):
    zone = zoneinfo.ZoneInfo("Asia/Seoul")  # the harness's TIME.ZONE
    today = datetime.datetime.now(zone).date()
    start, end = (today - datetime.timedelta(days=20)).isoformat(), today.isoformat()
    daemon = Daemon(tmp_path, demo=True)
    launched = time.monotonic()
    daemon.start()
    try:
        ready = None
        while time.monotonic() - launched < 30:
            rows = {m: _day_rows(daemon, m, start, end) for m in DEMO_MACHINES}
            if all(len({r["time"] for r in rows[m]}) >= 14 for m in rows):
                ready = time.monotonic() - launched
                break
            time.sleep(0.25)
        assert ready is not None, daemon.log_text()[-2000:]
        assert ready < 10, f"history took {ready:.1f} s after launch"
        assert "demo: backfilled 14 days" in daemon.log_text()
        # Raw CSV stayed off for the backfill: only today's files exist.
        data = os.path.join(daemon.workdir, "data")
        names = [n for _, _, files in os.walk(data) for n in files if n.endswith((".csv", ".gz"))]
        assert all(n.startswith(today.strftime("%Y%m%d")) or n.startswith(
            (today - datetime.timedelta(days=1)).strftime("%Y%m%d")) for n in names), names
        counts = {m: sum(r["count"] for r in rows[m]) for m in rows}
    finally:
        assert daemon.stop() == 0
    # A restarted demo on the same folders does not backfill again.
    again = Daemon(tmp_path, demo=True).start()
    try:
        time.sleep(2)
        assert "demo: backfilled" not in again.log_text().split("Site starting")[-1]
        oldest = (today - datetime.timedelta(days=13)).isoformat()
        for m in DEMO_MACHINES:
            before = sum(r["count"] for r in rows[m] if r["time"][:10] < oldest)
            after = sum(r["count"] for r in _day_rows(again, m, start, end) if r["time"][:10] < oldest)
            assert after == before and before > 0, (m, before, after)
        assert counts
    finally:
        assert again.stop() == 0
