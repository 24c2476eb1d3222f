"""A run of k same-shape frames handed to the spectra room as one array
(``data(..., frames=k)``, the hub's ``DataFrame(frames=k)``) gives exactly
what k calls of one chunk each give, each chunk stamped when it would have
arrived alone (one frame = one second): the stored minute and hour spectra,
envelopes and features, the inferred rate, the counters.  The runs start
while the catalog is still learning the rate from chunk lengths."""

import json
import sqlite3

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.stats.helpers import config, epoch
from tsrmon.analytics import signals
from tsrmon.spectra.catalog import SensorCatalog
from tsrmon.spectra.service import SpectraService
from tsrmon.store.sqlite import SQLiteStore

ZONE = "Asia/Seoul"
RATE = 25600
# Frames per run: single frames, short runs while the rate is learned, a
# long run across a minute boundary.
RUNS = [3, 1, 4, 2, 16, 1, 7, 30, 5, 12]
TABLES = ("spectrum_minute", "spectrum_hour", "envelope_minute", "features_minute")


def signal(k0, frames):
    rng = np.random.default_rng(k0)
    x = np.concatenate([signals.tone(RATE, RATE, 50.0, 1.0, start=k * RATE)
                        for k in range(k0, k0 + frames)])
    return x + 0.01 * rng.standard_normal(x.size)


def rig(tmp_path, start, thread, **sections):
    cfg = config(tmp_path, ZONE, **sections)
    clock = task.Clock()
    clock.advance(start)
    store = SQLiteStore(cfg, reactor, hub=None, clock=clock)
    store.startService()
    catalog = SensorCatalog(cfg)
    spectra = SpectraService(cfg, clock, store, catalog, reactor=reactor, thread=thread,
                             max_backlog_bytes=2**30)
    spectra.startService()
    return clock, store, spectra


def rows(store, sensor):
    """Each table's rows without the row id; spectra as float32 arrays,
    features as dicts."""
    conn = sqlite3.connect(store.path_of("Fan"))
    try:
        out = {}
        for table in TABLES:
            cur = conn.execute(f'SELECT * FROM "{sensor}_{table}" ORDER BY t0')
            names = [d[0] for d in cur.description]
            out[table] = [{k: (np.frombuffer(v, "<f4").tolist() if k == "lines" else
                               json.loads(v) if k == "json" else v)
                           for k, v in zip(names, row) if k != "id"} for row in cur]
        return out
    finally:
        conn.close()


def same(a, b, exact):
    """Equal; without ``exact``, floats to 1e-5 relative (the worker sums a
    minute's blocks in batches of its own choosing, so the last bits of an
    average depend on its timing)."""
    if exact:
        return a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k], False) for k in a)
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(same(x, y, False) for x, y in zip(a, b)))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-5, abs=1e-9)
    return a == b


@defer.inlineCallbacks
def feed(tmp_path, start, thread, whole, late=False, **sections):
    """Feed RUNS; ``whole``: each run in one call, else chunk by chunk."""
    clock, store, spectra = rig(tmp_path, start, thread, **sections)
    k0 = 0
    learned = []
    for frames in RUNS:
        clock.advance(frames)   # the run arrives at once, stamped at its arrival
        x = signal(k0, frames)
        # Late data carries its own time; all frames of a run share it.
        t = start + k0 if late else clock.seconds()
        if whole:
            spectra.data("Fan", "vib", "VIB", x, t, late, frames=frames)
        else:
            # Each chunk at the time it would have arrived alone (a frame is
            # one second); late ones all at the run's time.
            for i, chunk in enumerate(x.reshape(frames, -1)):
                spectra.data("Fan", "vib", "VIB", chunk, t if late else t - (frames - 1 - i), late)
        # A legacy feed going from 30 to 20 points a frame: the catalog
        # learns the new rate only from the second short frame (a single
        # short frame is a tie, which the longer frame wins), also within a run.
        points = 30 if k0 < 9 else 20
        y = np.full(frames * points, 40.0)
        if whole:
            spectra.data("Fan", "temp", "TEMP", y, t, late, frames=frames)
        else:
            for i, chunk in enumerate(y.reshape(frames, -1)):
                spectra.data("Fan", "temp", "TEMP", chunk, t if late else t - (frames - 1 - i), late)
        if not late:
            learned.append(spectra.catalog.meta("Fan", "temp").rate)
        k0 += frames
    yield spectra.stopService()
    yield store.stopService()
    meta = spectra.catalog.meta("Fan", "vib")
    counters = spectra.counters()
    counters.pop("work_seconds")
    counters.pop("backlog_wait_seconds")
    return rows(store, "vib"), (meta.rate, meta.sources.get("rate")), counters, learned


@pytest.mark.parametrize("thread", [False, True])
@pytest_twisted.inlineCallbacks
def test_a_run_in_one_call_equals_its_frames_one_by_one(tmp_path, thread):
    start = epoch(ZONE, "2026-12-07 10:00:30")
    one_by_one = yield feed(tmp_path / "frames", start, thread, whole=False)
    runs = yield feed(tmp_path / "runs", start, thread, whole=True)
    assert same(runs, one_by_one, exact=not thread)
    stored, rate, counters, learned = runs
    assert rate == (RATE, "inferred")
    assert learned == [30, 30, 30, 30, 20, 20, 20, 20, 20, 20]
    assert counters["chunks"] == sum(RUNS) and counters["dropped_chunks"] == 0
    # 81 s of samples from 10:00:30: 30 s in the first minute, 51 s in the second.
    assert [(r["t0"] - start, r["blocks"]) for r in stored["spectrum_minute"]] == [(-30, 45), (30, 80)]
    assert [r["t0"] for r in stored["features_minute"]] == [start - 30, start + 30]
    assert stored["envelope_minute"] and stored["spectrum_hour"]
    peak = np.argmax(stored["spectrum_minute"][1]["lines"])
    assert peak * stored["spectrum_minute"][1]["df"] == pytest.approx(50.0, abs=6.25)


@pytest_twisted.inlineCallbacks
def test_a_late_run_in_one_call_equals_its_frames_one_by_one(tmp_path):
    start = epoch(ZONE, "2026-12-07 10:00:30")
    sensors = {"SENSORS": [{"match": "Fan/vib", "rate": RATE}]}
    one_by_one = yield feed(tmp_path / "frames", start, False, whole=False, late=True, **sensors)
    runs = yield feed(tmp_path / "runs", start, False, whole=True, late=True, **sensors)
    assert runs == one_by_one
    assert runs[1] == (RATE, "config") and runs[2]["chunks"] == sum(RUNS)
    assert runs[0]["spectrum_minute"]
