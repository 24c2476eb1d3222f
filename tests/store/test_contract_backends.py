"""The store contract run against both backends: SQLite (a tmp dir) and
PostgreSQL (a database of its own per test).  The same test functions:
an upsert adds a delta, reads equal the merge, the feed announces commits;
then what only a shared store must do (concurrent writers, other nodes'
commits, refusals)."""

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from zope.interface.verify import verifyObject

from tests.store.pg_fixtures import fresh_database
from tests.web.conftest import make_config
from tsrmon.store import contract
from tsrmon.reader.backends import build_reader
from tsrmon.store.backends import build_store
from tsrmon.store.feed import FAULTS, SENSORS

T0 = 1_796_025_600  # 2026-11-30 17:00 Asia/Seoul (TEXT is a bucket text of its own)
TEXT = "2026-12-01 10:00:00"


def row(sensor, level, t0, text, values, moments=None):
    n = len(values)
    out = (sensor, level, t0, 32400, text, n, float(sum(values)), float(sum(map(abs, values))),
           float(min(values)), float(max(values)), float(sum(v * v for v in values)))
    if moments is not None:
        out += (n, moments) + tuple(float(sum((v - moments) ** k for v in values)) for k in (1, 2, 3, 4))
    return out


@pytest.fixture
def pg_dsn():
    dsn, drop = fresh_database()
    yield dsn
    drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """``(config, store, reader)`` started; stopped afterwards."""
    cfg = make_config(tmp_path)
    if request.param == "postgresql":
        dsn = request.getfixturevalue("pg_dsn")
        cfg = cfg.replace(database={"backend": "postgresql", "dsn": dsn})
    store, feed = build_store(cfg, reactor)
    reader = build_reader(cfg, reactor, feed)
    reader.warm_hour_cache = False
    store.startService()
    reader.startService()
    yield cfg, store, reader
    pytest_twisted.blockon(defer.maybeDeferred(reader.stopService))
    pytest_twisted.blockon(defer.maybeDeferred(store.stopService))
    feed.close()


def _hours(series):
    return {s.sensor: [i for c in s.chunks for i in c.items] for s in series}


@pytest.mark.timeout(60)
def test_the_backends_provide_the_contract(backend):
    _, store, reader = backend
    for iface in (contract.IAggregateStore, contract.ISpectraStore, contract.ISpool):
        assert verifyObject(iface, store)
    assert verifyObject(contract.IChangeFeed, store.feed)
    assert verifyObject(contract.IStatsReader, reader)
    assert verifyObject(contract.IAnalyticsReader, reader)
    assert reader.feed is store.feed


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_an_upsert_adds_a_delta_and_reads_equal_the_merge(backend):
    _, store, reader = backend
    a = row("vib", "hour", T0, TEXT, [1.0, -2.0, 3.5], moments=0.5)
    b = row("vib", "hour", T0, TEXT, [4.0, 0.25], moments=0.5)
    merged = row("vib", "hour", T0, TEXT, [1.0, -2.0, 3.5, 4.0, 0.25], moments=0.5)
    for machine in ("Apart", "Merged"):
        store.ensure_sensor(machine, "vib", "VIB", "ABS")
    store.upsert_sums("Apart", [a])
    yield store.flush()
    first = _hours((yield reader.stats("Apart", "hour", align=False)))
    store.upsert_sums("Apart", [b])
    store.upsert_sums("Merged", [merged])
    yield store.flush()
    apart = _hours((yield reader.stats("Apart", "hour", align=False)))
    whole = _hours((yield reader.stats("Merged", "hour", align=False)))
    assert first["vib"][0][5] == 3
    assert apart["vib"][0][5] == 5
    assert apart["vib"][0][0] == TEXT
    assert apart["vib"][0][1] == pytest.approx(whole["vib"][0][1])
    assert apart["vib"][0][2:5] == pytest.approx(whole["vib"][0][2:5])
    assert store.reference("Apart", "vib") == 0.5
    assert sorted((yield reader.machines())) == ["Apart", "Merged"]


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_minutes_faults_and_anomalies_read_back(backend):
    _, store, reader = backend
    store.ensure_sensor("M", "vib", "VIB", "REAL")
    store.upsert_sums("M", [row("vib", "minute", T0, TEXT, [1.0, 3.0]),
                            row("vib", "minute", T0 + 60, "2026-12-01 10:01:00", [2.0])])
    store.record_fault("M", 0.5, 1.0, T0 + 5)
    store.record_fault("M", 2.0, 1.0, T0 + 65)
    yield store.flush()
    recent = yield reader.recent_minutes("M", T0)
    assert [(s, t0, p.count) for s, _, t0, p in recent] == [("vib", T0, 2), ("vib", T0 + 60, 1)]
    minutes = yield reader.minutes("M", T0, T0 + 60)
    assert [i[1] for s in minutes for c in s.chunks for i in c.items] == [2.0]
    faults = yield reader.faults("M", "2026-11-30", "2026-11-30")
    assert [f[2] for f in faults] == [0.5, 2.0]
    anomalies = yield reader.anomalies("M", "2026-11-30", None)
    assert [(a[0], a[2]) for a in anomalies] == [("M", 2.0)]
    assert [a[2] for a in (yield reader.all_anomalies())] == [2.0]


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_the_feed_announces_each_commit_and_the_cache_follows(backend):
    _, store, reader = backend
    seen = []
    store.feed.subscribe(seen.append)
    store.ensure_sensor("M", "vib", "VIB", "ABS")
    store.upsert_sums("M", [row("vib", "hour", T0, TEXT, [1.0])])
    yield store.flush()
    before = _hours((yield reader.stats("M", "hour", align=False)))
    assert len(seen) == 1 and seen[0].machine == "M"
    assert seen[0].spans[("vib", "hour")] == (T0, T0, "2026-12-01", "2026-12-01")
    assert ("vib", SENSORS) in seen[0].spans
    store.upsert_sums("M", [row("vib", "hour", T0, TEXT, [3.0])])
    store.record_fault("M", 2.0, 1.0, T0)
    yield store.flush()
    assert (None, FAULTS) in seen[-1].spans
    after = _hours((yield reader.stats("M", "hour", align=False)))
    assert (before["vib"][0][5], after["vib"][0][5]) == (1, 2)
    assert after["vib"][0][1] == pytest.approx(2.0)


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_side_tables_keep_alarms_and_attempts(backend):
    from tsrmon.alarms.engine import Alarm
    from tsrmon.store.backends import build_alarm_table, build_attempt_table

    cfg, _, _ = backend
    alarms = build_alarm_table(cfg, reactor)
    attempts = build_attempt_table(cfg, reactor)
    assert verifyObject(contract.IAlarmTable, alarms)
    assert verifyObject(contract.IAttemptTable, attempts)
    try:
        assert (yield alarms.open(T0)) == []
        yield attempts.open(T0)
        a = Alarm(id="a1", rule="hot", kind="threshold", machine="M", sensor="vib", severity="warning",
                  raised_t=T0 + 1.0, level=3.0, value=3.5)
        b = Alarm(id="b1", rule="hot", kind="threshold", machine="N", sensor="vib", severity="critical",
                  raised_t=T0 + 2.0, level=3.0, value=9.0)
        yield alarms.insert(a)
        yield alarms.insert(b)
        b.state, b.cleared_t, b.clear_reason = "cleared", T0 + 3.0, "value"
        yield alarms.update(b, "state", "cleared_t", "clear_reason")
        a.peak = b.peak = 10.0
        yield alarms.update_many([a, b], "peak")
        rows = yield alarms.query(T0, T0 + 10)
        assert [(r.id, r.state, r.peak) for r in rows] == [("a1", "active", 10.0), ("b1", "cleared", 10.0)]
        assert [r.id for r in (yield alarms.query(T0, T0 + 10, machine="N"))] == ["b1"]
        yield alarms.close()
        alarms = build_alarm_table(cfg, reactor)
        assert [x.id for x in (yield alarms.open(T0 + 20))] == ["a1"]   # an active alarm resumes
        yield attempts.add({"t": T0 + 5.0, "event_id": "e1", "event_t": T0, "machine": "M", "kind": "anomaly",
                            "channel": "fcm", "target": "topic:anomaly", "result": "sent", "attempts": 1,
                            "suppressed": 0})
        got = yield attempts.query(T0, T0 + 10)
        assert [(r["event_id"], r["result"], r["attempts"]) for r in got] == [("e1", "sent", 1)]
    finally:
        yield alarms.close()
        yield defer.maybeDeferred(attempts.close)


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_moments_spectra_and_features_read_back(backend):
    import numpy as np

    _, store, reader = backend
    store.ensure_sensor("M", "vib", "VIB", "REAL")
    store.upsert_sums("M", [row("vib", "hour", T0, TEXT, [1.0, 2.0, 4.0], moments=1.0)])
    a = np.array([1.0, 2.0, 3.0, 4.0], dtype="<f4").tobytes()
    b = np.array([3.0, 2.0, 1.0, 0.0], dtype="<f4").tobytes()
    store.upsert_spectrum("M", "vib", "spectrum_minute", T0, 32400, TEXT, 2, 25600.0, 0.0, 10.0, a)
    store.upsert_spectrum("M", "vib", "spectrum_minute", T0, 32400, TEXT, 2, 25600.0, 0.0, 10.0, b)
    store.upsert_spectrum("M", "vib", "spectrum_minute", T0 + 60, 32400, TEXT, 1, 25600.0, 0.0, 10.0, a)
    store.upsert_features("M", "vib", T0, 32400, TEXT, 3, 1.5, '{"bands": {"low": 2.0}}')
    store.upsert_features("M", "vib", T0, 32400, TEXT, 1, 9.0, '{"bands": {"low": 9.0}}')  # fewer blocks: kept
    yield store.flush()
    moments = yield reader.moment_stats("M", "hour")
    m = moments["vib"][0]
    assert (m["count"], m["moments_count"]) == (3, 3)
    assert m["mean"] == pytest.approx(7.0 / 3)
    assert m["std"] == pytest.approx(np.std([1.0, 2.0, 4.0]))
    spec = yield reader.spectrum("M", "vib", T0 + 30)
    assert spec["blocks"] == 4 and spec["t0"] == T0
    assert spec["lines"] == pytest.approx(list(np.sqrt((np.array([1, 2, 3, 4.0]) ** 2 + np.array([3, 2, 1, 0.0]) ** 2) / 2)),
                                          rel=1e-6)
    assert (yield reader.spectrum("M", "vib"))["t0"] == T0 + 60
    fall = yield reader.waterfall("M", "vib", T0, T0 + 120)
    assert fall["t0"] == [T0, T0 + 60] and len(fall["rows"]) == 2
    feats = yield reader.features("M", "vib")
    assert [(f["blocks"], f["velocity_rms"], f["features"]) for f in feats] == [(3, 1.5, {"bands": {"low": 2.0}})]
    hours = yield reader.features("M", "vib", level="hour")
    assert hours[0]["minutes"] == 1 and hours[0]["bands"] == {"low": 2.0}
