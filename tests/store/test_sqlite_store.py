"""The SQLite store behind the real statistics: session truth, upserts,
faults, broken files, backpressure."""

import datetime
import math
import os
import sqlite3
import zoneinfo

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from tests.stats.helpers import Rig, config, epoch
from tsrmon.store import serving
from tsrmon.store.sqlite import SQLiteStore

BERLIN = "Europe/Berlin"
SUMS = 'SUM("count"), SUM("sum"), SUM("sum_abs"), SUM("sum_sq"), MIN("min"), MAX("max")'


def db_rows(path, sql, args=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def make_rig(tmp_path, start, zone=BERLIN, flush=10, **kw):
    cfg = config(tmp_path, zone, flush=flush)
    store = SQLiteStore(cfg, reactor, hub=None, **kw)
    rig = Rig(cfg, start, store=store, machine="ShotBlast")
    store.clock = rig.clock
    store.hub = rig.hub
    rig.hub.faults = store
    store.startService()
    return cfg, store, rig


@defer.inlineCallbacks
def stop(rig, store):
    yield rig.stats.stopService()
    yield store.stopService()


def feed_session(rig, session):
    """A session's messages to the hub one second apart; the time of the
    last fault over its threshold (None without one)."""
    fault_t = None
    for kind, body in session["messages"]:
        if kind == "DataUpdate":
            rig.hub.data(rig.machine, [(s, d["type"], d["data"]) for s, d in body.items()])
            rig.clock.advance(1)
        elif kind == "FaultDetect":
            rig.hub.fault(rig.machine, float(body["score"]), float(body["threshold"]))
            if body["score"] > body["threshold"]:
                fault_t = rig.clock.seconds()
    return fault_t


@pytest_twisted.inlineCallbacks
def test_session_replay_matches_truth(tmp_path, expected_json):
    """session.bin's messages fed to the hub one second apart, across a year
    end in Berlin; SIGTERM-like stop; every level agrees with the truth."""
    session = expected_json["session.bin"]
    cfg, store, rig = make_rig(tmp_path, epoch(BERLIN, "2026-12-31 23:59:00"))
    fault_t = feed_session(rig, session)
    yield stop(rig, store)

    path = os.path.join(cfg.database.path, "ShotBlast.db")
    for sensor, truth in session["per_sensor"].items():
        for level, n_rows in (("hour", 2), ("day", 2), ("month", 2), ("year", 2), ("minute", 2)):
            table = f'"{sensor}_{level}_avg"'
            assert db_rows(path, f"SELECT COUNT(*) FROM {table}")[0][0] == n_rows
            n, s, sa, sq, lo, hi = db_rows(path, f"SELECT {SUMS} FROM {table}")[0]
            assert n == truth["n"]
            figure = sa / n if truth["type"] == "VIB" else s / n
            want = truth["mean_abs"] if truth["type"] == "VIB" else truth["mean"]
            assert abs(figure - want) < 1e-9
            assert abs(math.sqrt(sq / n) - truth["rms"]) < 1e-9
            assert abs(s - truth["sum"]) < 1e-9 * max(1, abs(truth["sum"]))
            assert lo == truth["min"] and hi == truth["max"]
            # data is the count-weighted figure of each row's own sums
            for data, cnt, rs, rsa in db_rows(path, f'SELECT data, "count", "sum", sum_abs FROM {table}'):
                assert data == pytest.approx((rsa if truth["type"] == "VIB" else rs) / cnt, rel=1e-12)
        times = [r[0] for r in db_rows(path, f'SELECT time FROM "{sensor}_year_avg" ORDER BY t0')]
        assert times == ["2026-01-01 00:00:00", "2027-01-01 00:00:00"]
    anomalies = db_rows(path, "SELECT threshold, score, time FROM anomaly")
    over = [(float(b["threshold"]), float(b["score"])) for k, b in session["messages"]
            if k == "FaultDetect" and b["score"] > b["threshold"]]
    assert [(a[0], a[1]) for a in anomalies] == over
    assert len(anomalies) == session["anomalies_over_threshold"]
    assert isinstance(anomalies[0][0], float) and isinstance(anomalies[0][1], float)
    local = datetime.datetime.fromtimestamp(fault_t, zoneinfo.ZoneInfo(BERLIN))
    assert anomalies[0][2] == str(local.replace(tzinfo=None))
    assert db_rows(path, "SELECT COUNT(*) FROM fault_detect")[0][0] == 3
    assert db_rows(path, "PRAGMA journal_mode")[0][0] == "wal"


@pytest_twisted.inlineCallbacks
def test_restart_adds_to_existing_rows(tmp_path):
    """Two daemon lives in one hour: the hour row holds both (upserts add)."""
    start = epoch(BERLIN, "2026-06-01 12:10:00")
    cfg, store, rig = make_rig(tmp_path, start)
    rig.run(30)
    yield stop(rig, store)
    cfg, store2, rig2 = make_rig(tmp_path, start + 600)
    rig2.rng = rig.rng
    rig2.run(30)
    yield stop(rig2, store2)
    path = os.path.join(cfg.database.path, "ShotBlast.db")
    rows = db_rows(path, 'SELECT time, "count", data, "sum_abs" FROM "vib_hour_avg"')
    assert len(rows) == 1 and rows[0][0] == "2026-06-01 12:00:00"
    fed = [v for (_t, s, _ty, vals) in rig.fed + rig2.fed if s == "vib" for v in vals]
    assert rows[0][1] == len(fed)
    assert rows[0][2] == pytest.approx(sum(abs(v) for v in fed) / len(fed), rel=1e-12)
    # sensors keep their first-seen order across lives
    assert [s["name"] for s in serving.sensors(sqlite3.connect(path))] == ["vib", "temp"]


@pytest_twisted.inlineCallbacks
def test_periodic_flush_makes_the_open_hour_visible(tmp_path):
    cfg, store, rig = make_rig(tmp_path, epoch(BERLIN, "2026-06-01 12:10:00"), flush=5)
    rig.run(12)
    # The flush loop ran on the Clock; wait for its commit to land.
    yield store.flush()
    path = os.path.join(cfg.database.path, "ShotBlast.db")
    (count,) = db_rows(path, 'SELECT "count" FROM "vib_hour_avg"')[0]
    assert 0 < count < 12 * 30  # running, not complete: the last seconds are still pending
    yield stop(rig, store)
    (count,) = db_rows(path, 'SELECT "count" FROM "vib_hour_avg"')[0]
    assert count == 12 * 30
    assert store.counters()["rows_written"] > 0 and store.healthy()


@pytest_twisted.inlineCallbacks
def test_corrupt_file_is_refused_with_its_name_and_others_go_on(tmp_path):
    cfg = config(tmp_path, BERLIN)
    os.makedirs(cfg.database.path)
    bad = os.path.join(cfg.database.path, "Broken.db")
    with open(bad, "wb") as f:
        f.write(b"this is not a database" * 100)
    store = SQLiteStore(cfg, reactor)
    store.startService()
    yield store.flush()
    # Existing files are checked at start, before any DAQ sends anything.
    assert not store.healthy()
    assert "Broken.db" in store.broken()["Broken"]
    dropped = store.counters()["dropped_rows"]
    store.ensure_sensor("Broken", "vib", "VIB", "ABS")
    store.upsert_sums("Broken", [("vib", "hour", 0, 0, "1970-01-01 01:00:00", 1, 1.0, 1.0, 1.0, 1.0, 1.0)])
    store.ensure_sensor("Good", "vib", "VIB", "ABS")
    store.upsert_sums("Good", [("vib", "hour", 0, 3600, "1970-01-01 01:00:00", 2, 1.0, 3.0, -1.0, 2.0, 5.0)])
    yield store.flush()
    assert store.counters()["dropped_rows"] == dropped + 2
    assert list(store.broken()) == ["Broken"]
    yield store.stopService()
    good = os.path.join(cfg.database.path, "Good.db")
    assert db_rows(good, 'SELECT data, "count" FROM "vib_hour_avg"') == [(1.5, 2)]
    with open(bad, "rb") as f:
        assert f.read().startswith(b"this is not a database")


@pytest_twisted.inlineCallbacks
def test_backpressure_tells_the_hub(tmp_path):
    cfg = config(tmp_path, BERLIN)
    calls = []

    class Hub:
        def storage_congested(self, flag):
            calls.append(flag)

    store = SQLiteStore(cfg, reactor, hub=Hub(), max_queue_rows=10)
    store.startService()
    store.ensure_sensor("M", "vib", "VIB", "ABS")
    rows = [("vib", "minute", 60 * i, 0, f"t{i}", 1, 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(20)]
    store.upsert_sums("M", rows)
    assert calls == [True] and store.counters()["congested"]
    yield store.flush()
    assert calls == [True, False]
    yield store.stopService()


@pytest_twisted.inlineCallbacks
def test_recent_minutes_and_pruning(tmp_path):
    start = epoch(BERLIN, "2026-06-01 12:10:00")
    cfg, store, rig = make_rig(tmp_path, start)
    rig.run(150)
    yield rig.stats.flush()
    got = yield store.recent_minutes("ShotBlast", start + 60)
    assert set(got) == {"vib", "temp"}
    assert [r["time"] for r in got["vib"]] == ["2026-06-01 12:11:00", "2026-06-01 12:12:00"]
    assert got["vib"][0]["count"] == 60 * 30
    rig.clock.advance(8 * 86400)  # past the 7-day retention; the hourly pruner runs
    yield store.flush()
    got = yield store.recent_minutes("ShotBlast", 0)
    assert got["vib"] == []
    path = os.path.join(cfg.database.path, "ShotBlast.db")
    assert db_rows(path, 'SELECT COUNT(*) FROM "vib_hour_avg"')[0][0] == 1
    yield stop(rig, store)
    missing = yield store.recent_minutes("Nobody", 0)
    assert missing == {}


@pytest_twisted.inlineCallbacks
def test_failed_transaction_is_rolled_back_and_retried_once(tmp_path, monkeypatch):
    import tsrmon.store.sqlite_machine as sqlite_store
    cfg = config(tmp_path, BERLIN)
    store = SQLiteStore(cfg, reactor)
    store.startService()
    real = sqlite_store.apply_sum_rows
    calls = []

    def flaky(conn, catalog, rows):
        calls.append(len(rows))
        real(conn, catalog, rows)  # written, then the transaction fails
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setattr(sqlite_store, "apply_sum_rows", flaky)
    store.ensure_sensor("M", "vib", "VIB", "ABS")
    store.upsert_sums("M", [("vib", "hour", 3600, 3600, "1970-01-01 02:00:00", 2, 1.0, 3.0, -1.0, 2.0, 5.0)])
    yield store.flush()
    c = store.counters()
    assert c["failed_transactions"] == 1 and c["queued_rows"] == 2 and store.healthy()
    yield store.flush()
    yield store.stopService()
    path = os.path.join(cfg.database.path, "M.db")
    assert db_rows(path, 'SELECT "count", data FROM "vib_hour_avg"') == [(2, 1.5)]
    assert store.counters()["queued_rows"] == 0
