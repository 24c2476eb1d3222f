"""The spectra room through a real SQLite file on a driven Clock: a 1 g 50 Hz
tone at 25.6 kHz stores a minute spectrum with its peak at 50 Hz (RMS
convention: 0.7071 g), velocity RMS 22.07 mm/s, an hourly average, an
envelope spectrum; retention prunes old rows; the reader serves them."""

import math
import sqlite3
import threading

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.stats.helpers import config, epoch
from tsrmon.analytics import signals
from tsrmon.hub.machines import MachineHub
from tsrmon.spectra.catalog import SensorCatalog
from tsrmon.spectra.service import SpectraService
from tsrmon.reader.sqlite_reader import SQLiteReader
from tsrmon.store.sqlite import SQLiteStore

ZONE = "Asia/Seoul"
RATE = 25600
VELOCITY = 9806.65 / (2 * math.pi * 50) / math.sqrt(2)   # 22.07 mm/s for 1 g at 50 Hz


def rig(tmp_path, start, thread=False, max_backlog=2**30, max_wait=0.1, **sections):
    cfg = config(tmp_path, ZONE, **sections)
    clock = task.Clock()
    clock.advance(start)
    store = SQLiteStore(cfg, reactor, hub=None, clock=clock)
    store.startService()
    hub = MachineHub(cfg, clock)
    hub.remember(["Fan"])
    catalog = SensorCatalog(cfg)
    spectra = SpectraService(cfg, clock, store, catalog, reactor=reactor, thread=thread,
                             max_backlog_bytes=max_backlog, max_wait=max_wait)
    hub.spectra = spectra
    spectra.startService()
    return cfg, clock, store, hub, spectra


def stream(hub, clock, seconds, f=50.0, amp=1.0, k0=0):
    machine = hub.get("Fan")
    for k in range(k0, k0 + seconds):
        clock.advance(1)   # a live chunk is stamped at arrival, after its last sample
        x = signals.tone(RATE, RATE, f, amp, start=k * RATE)
        hub.data(machine, [("vib", "VIB", x)])


@defer.inlineCallbacks
def read(cfg, fn):
    reader = SQLiteReader(cfg, reactor)
    reader.warm_hour_cache = False
    reader.startService()
    try:
        got = yield fn(reader)
    finally:
        yield reader.stopService()
    return got


@pytest.mark.parametrize("thread", [False, True])
@pytest_twisted.inlineCallbacks
def test_a_50_hz_tone_stores_its_minute_spectrum_and_features(tmp_path, thread):
    start = epoch(ZONE, "2026-12-07 10:00:00")
    cfg, clock, store, hub, spectra = rig(tmp_path, start, thread=thread)
    stream(hub, clock, 130)           # two whole minutes and part of a third
    yield spectra.stopService()       # flushes the open minute too
    yield store.stopService()
    assert spectra.minutes == 3 and spectra.dropped_chunks == 0

    spec = yield read(cfg, lambda r: r.spectrum("Fan", "vib", start + 90))
    assert spec["t0"] == start + 60 and spec["level"] == "minute"
    assert spec["convention"] == "rms" and len(spec["lines"]) == 1600
    assert spec["df"] == pytest.approx(RATE / 2.56 / 1600)
    lines = np.array(spec["lines"])
    k = int(np.argmax(lines))
    assert abs(spec["f0"] + k * spec["df"] - 50.0) <= spec["df"]
    # RMS, not peak: the tone's energy (within its lobe) is A/√2.
    lobe = np.sqrt(np.sum(lines[max(k - 2, 0):k + 3] ** 2))
    assert lobe == pytest.approx(1 / math.sqrt(2), rel=1e-3)

    feats = yield read(cfg, lambda r: r.features("Fan", "vib", start, start + 3600))
    assert [f["t0"] for f in feats] == [start, start + 60, start + 120]
    middle = feats[1]
    assert middle["velocity_rms"] == pytest.approx(VELOCITY, rel=1e-3)
    assert middle["velocity_rms"] == pytest.approx(22.07, abs=0.01)
    assert middle["features"]["peaks"][0][0] == pytest.approx(50.0, abs=RATE / 32768)
    assert middle["features"]["iso"]["zone"] == "D"

    hour = yield read(cfg, lambda r: r.spectrum("Fan", "vib", start + 10, level="hour"))
    assert hour["t0"] == start
    conn = sqlite3.connect(store.path_of("Fan"))
    blocks = [b for (b,) in conn.execute('SELECT blocks FROM "vib_spectrum_minute" ORDER BY t0')]
    (hour_blocks,) = conn.execute('SELECT blocks FROM "vib_spectrum_hour"').fetchone()
    env = conn.execute('SELECT COUNT(*) FROM "vib_envelope_minute"').fetchone()[0]
    conn.close()
    assert hour_blocks == sum(blocks) and env == 3
    # The hour is the blocks-weighted power average of its minutes: a
    # steady tone shows the same total RMS as in each minute.
    hour_lines = np.array(hour["lines"])
    assert hour["blocks"] == hour_blocks
    assert np.sqrt(np.sum(hour_lines[max(k - 2, 0):k + 3] ** 2)) == pytest.approx(lobe, rel=1e-3)

    wf = yield read(cfg, lambda r: r.waterfall("Fan", "vib", start, start + 3600, rows=2, lines=100))
    assert len(wf["rows"]) == 2 and len(wf["rows"][0]) == 100 and wf["convention"] == "rms"


@pytest_twisted.inlineCallbacks
def test_slow_sensors_get_no_spectra_and_config_rate_wins(tmp_path):
    start = epoch(ZONE, "2026-12-07 10:00:00")
    cfg, clock, store, hub, spectra = rig(
        tmp_path, start, SENSORS=[{"match": "Fan/slow", "rate": 30}])
    machine = hub.get("Fan")
    for _ in range(70):
        clock.advance(1)
        # 25,600 values a frame, but SENSORS says 30/s: no spectra for it;
        # the legacy 30-point temperature feed is inferred at 30/s.
        hub.data(machine, [("slow", "VIB", np.zeros(RATE)), ("temp", "TEMP", [40.0] * 30)])
    yield spectra.stopService()
    yield store.stopService()
    assert spectra.chunks == 0 and spectra.minutes == 0
    assert spectra.catalog.meta("Fan", "temp").rate == 30.0
    assert spectra.catalog.meta("Fan", "temp").sources["rate"] == "inferred"
    assert spectra.catalog.meta("Fan", "slow").sources["rate"] == "config"
    assert spectra.catalog.as_dict("Fan")["temp"]["unit"] == "°C"


@pytest_twisted.inlineCallbacks
def test_new_sensors_share_the_rooms_windows(tmp_path):
    # Windows are built once per size, not per sensor and analyser: a frame
    # of many new sensors builds them on the reactor (issue 17).
    start = epoch(ZONE, "2026-12-07 10:00:00")
    cfg, clock, store, hub, spectra = rig(tmp_path, start)
    machine = hub.get("Fan")
    for _ in range(3):
        clock.advance(1)
        hub.data(machine, [(f"vib{i}", "VIB", np.zeros(RATE)) for i in range(8)])
    accs = list(spectra._sensors.values())
    yield spectra.stopService()
    yield store.stopService()
    assert len(accs) == 8
    welch = [a.spectrum.welch for a in accs] + [a.envelope.welch for a in accs]
    assert all(w.window is welch[0].window for w in welch)
    assert all(a.envelope.welch.m_window is accs[0].envelope.welch.m_window for a in accs)
    # The block size and the envelope's decimated size: two windows in all.
    assert len(spectra.windows) == 2


@pytest_twisted.inlineCallbacks
def test_retention_prunes_minutes_and_hours_on_the_clock(tmp_path):
    start = epoch(ZONE, "2026-12-07 10:00:00")
    cfg, clock, store, hub, spectra = rig(
        tmp_path, start, SPECTRA={"MINUTE_DAYS": 1, "HOUR_DAYS": 2})
    stream(hub, clock, 61)
    yield store.flush()
    path = store.path_of("Fan")

    def count(table):
        conn = sqlite3.connect(path)
        try:
            return conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        finally:
            conn.close()
    assert count("vib_spectrum_minute") == 1 and count("vib_spectrum_hour") == 1
    clock.advance(86400 + 3600)        # the hourly prune runs; minutes are a day old
    yield store.flush()
    assert count("vib_spectrum_minute") == 0 and count("vib_features_minute") == 0
    assert count("vib_envelope_minute") == 0 and count("vib_spectrum_hour") == 1
    clock.advance(86400)
    yield store.flush()
    assert count("vib_spectrum_hour") == 0
    yield spectra.stopService()
    yield store.stopService()


@pytest_twisted.inlineCallbacks
def test_a_split_minute_merges_in_the_store(tmp_path):
    """The same minute written twice (late data) is power-averaged by blocks."""
    start = epoch(ZONE, "2026-12-07 10:00:00")
    cfg, clock, store, hub, spectra = rig(tmp_path, start)
    one = np.full(1600, 1.0, dtype="<f4").tobytes()
    two = np.full(1600, 2.0, dtype="<f4").tobytes()
    store.upsert_spectrum("Fan", "vib", "spectrum_minute", start, 32400, "t", 1, RATE, 6.25, 6.25, one)
    store.upsert_spectrum("Fan", "vib", "spectrum_minute", start, 32400, "t", 3, RATE, 6.25, 6.25, two)
    yield store.flush()
    got = yield read(cfg, lambda r: r.spectrum("Fan", "vib", start))
    assert got["blocks"] == 4
    assert got["lines"][0] == pytest.approx(math.sqrt((1 * 1 + 3 * 4) / 4), rel=1e-6)
    yield spectra.stopService()
    yield store.stopService()


@pytest_twisted.inlineCallbacks
def test_a_worker_that_falls_behind_drops_chunks_for_spectra_only(tmp_path):
    start = epoch(ZONE, "2026-12-07 10:00:00")
    cfg, clock, store, hub, spectra = rig(tmp_path, start, thread=True, max_backlog=4 * RATE * 8)
    held = threading.Event()
    spectra._pool.callInThread(held.wait, 30)   # the worker is busy elsewhere
    stream(hub, clock, 40)            # 40 chunks: 4 fit in the backlog, 36 are dropped
    assert spectra.dropped_chunks == 36 and spectra.chunks == 4
    # It waited once for a worker that made no progress, then no more.
    assert spectra.counters()["backlog_waits"] == 1
    assert spectra.counters()["backlog_bytes_now"] == 4 * RATE * 8
    held.set()
    yield spectra.stopService()
    yield store.stopService()
    assert spectra.counters()["chunks_pending"] == 0 and spectra.counters()["backlog_bytes_now"] == 0
    # The 4 analysed seconds hold 5 blocks; no block spans the hole after them.
    feats = yield read(cfg, lambda r: r.features("Fan", "vib", start, start + 3600))
    assert sum(f["blocks"] for f in feats) == (4 * RATE - 32768) // 16384 + 1
    assert spectra.counters()["dropped_chunks"] == spectra.dropped_chunks


@pytest_twisted.inlineCallbacks
def test_sighup_keeps_the_open_minute_unless_the_rate_changes(tmp_path):
    start = epoch(ZONE, "2026-12-07 10:00:00")
    cfg, clock, store, hub, spectra = rig(tmp_path, start)
    stream(hub, clock, 30)
    acc = spectra._sensors[("Fan", "vib", False)]
    new = config(tmp_path, ZONE, SENSORS=[{"match": "Fan/vib", "rpm": 1500}])
    spectra.catalog.reconfigure(new)
    spectra.reconfigure(new)
    stream(hub, clock, 40, k0=30)
    assert spectra._sensors[("Fan", "vib", False)] is acc      # same minute accumulators
    assert acc.meta.rpm == 1500.0
    yield spectra.stopService()
    yield store.stopService()
    feats = yield read(cfg, lambda r: r.features("Fan", "vib", start, start + 3600))
    assert sum(f["blocks"] for f in feats) == (70 * RATE - 32768) // 16384 + 1
    assert "1" in feats[-1]["features"]["orders"]     # rpm known now: orders


@pytest_twisted.inlineCallbacks
def test_late_data_of_a_configured_sensor_lands_in_its_own_minute(tmp_path):
    start = epoch(ZONE, "2026-12-07 10:00:00")
    cfg, clock, store, hub, spectra = rig(tmp_path, start + 3600,
                                          SENSORS=[{"match": "Fan/*", "rate": RATE}])
    machine = hub.get("Fan")
    for k in range(10):   # ten seconds from an hour ago, from the DAQ's buffer
        x = signals.tone(RATE, RATE, 50.0, 1.0, start=k * RATE)
        hub.data(machine, [("vib", "VIB", x)], t=start + k, late=True)
    yield spectra.stopService()
    yield store.stopService()
    spec = yield read(cfg, lambda r: r.spectrum("Fan", "vib", start + 5))
    assert spec["t0"] == start and spec["blocks"] == (10 * RATE - 32768) // 16384 + 1


@pytest_twisted.inlineCallbacks
def test_a_full_backlog_waits_for_the_worker_instead_of_dropping(tmp_path):
    """A sender faster than the analysis is slowed to its pace: nothing dropped."""
    start = epoch(ZONE, "2026-12-07 10:00:00")
    cfg, clock, store, hub, spectra = rig(tmp_path, start, thread=True,
                                          max_backlog=2 * RATE * 8, max_wait=30)
    stream(hub, clock, 40)
    yield spectra.stopService()
    yield store.stopService()
    assert spectra.dropped_chunks == 0 and spectra.chunks == 40
    assert spectra.counters()["backlog_waits"] > 0
    feats = yield read(cfg, lambda r: r.features("Fan", "vib", start, start + 3600))
    assert sum(f["blocks"] for f in feats) == (40 * RATE - 32768) // 16384 + 1
