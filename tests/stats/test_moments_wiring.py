"""Issue 17: skewness, kurtosis, peak, peak-to-peak and crest through the real
statistics and the real SQLite store, at every level, against numpy on the
concatenated samples; the fixed reference c is stored once and reused after
a restart; an old database migrates and keeps its answers."""

import math
import sqlite3

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from tests.stats.helpers import LEVELS, Rig, config, epoch
from tsrmon.analytics.moments import Moments
from tsrmon.stats.memory import MemoryStore
from tsrmon.store import migrate, schema, serving
from tsrmon.reader.sqlite_reader import SQLiteReader
from tsrmon.store.sqlite import SQLiteStore

ZONE = "Europe/Berlin"


def truth(values):
    x = np.asarray(values, dtype=np.float64)
    m = x.mean()
    d = x - m
    m2 = np.mean(d ** 2)
    return {"mean": m, "std": math.sqrt(m2), "skewness": np.mean(d ** 3) / m2 ** 1.5,
            "kurtosis": np.mean(d ** 4) / m2 ** 2, "peak": np.max(np.abs(x)),
            "peak_to_peak": x.max() - x.min(), "rms": math.sqrt(np.mean(x * x)),
            "crest": np.max(np.abs(x)) / math.sqrt(np.mean(x * x))}


def signals(rng, t_index, n=2560):
    """A 1 g 50 Hz tone with a little noise (rate 2,560/s), and a temperature
    near 40 °C with variance 1e-4 (std 0.01)."""
    i = np.arange(t_index * n, (t_index + 1) * n)
    vib = np.sin(2 * np.pi * 50 * i / n) + rng.normal(0, 0.05, n)
    temp = 40.0 + rng.normal(0, 0.01, 30)
    return vib, temp


def make(tmp_path, start):
    cfg = config(tmp_path, ZONE, flush=10)
    store = SQLiteStore(cfg, reactor, hub=None)
    rig = Rig(cfg, start, store=store, machine="Press")
    store.clock = rig.clock
    store.hub = rig.hub
    store.startService()
    return cfg, store, rig


@defer.inlineCallbacks
def stop(rig, store):
    yield rig.stats.stopService()
    yield store.stopService()


def run(rig, fed, rng, seconds, k0):
    for k in range(seconds):
        vib, temp = signals(rng, k0 + k)
        rig.hub.data(rig.machine, [("vib", "VIB", vib), ("temp", "TEMP", temp.tolist())])
        fed.setdefault("vib", []).append((rig.clock.seconds(), vib))
        fed.setdefault("temp", []).append((rig.clock.seconds(), temp))
        rig.clock.advance(1)


def check_level(rows, fed_sensor, level, tol):
    """Every row of a level equals numpy on the samples of its bucket."""
    import datetime
    import zoneinfo
    tz = zoneinfo.ZoneInfo(ZONE)
    fmt = {"minute": "%Y-%m-%d %H:%M:00", "hour": "%Y-%m-%d %H:00:00", "day": "%Y-%m-%d 00:00:00",
           "month": "%Y-%m-01 00:00:00", "year": "%Y-01-01 00:00:00"}[level]
    buckets = {}
    for t, values in fed_sensor:
        key = datetime.datetime.fromtimestamp(math.floor(t), tz).strftime(fmt)
        buckets.setdefault(key, []).append(np.asarray(values))
    assert sorted(r["time"] for r in rows) == sorted(buckets), level
    for r in rows:
        x = np.concatenate(buckets[r["time"]])
        want = truth(x)
        assert r["count"] == x.size and r["moments_count"] == x.size
        for k, v in want.items():
            assert r[k] == pytest.approx(v, rel=tol, abs=1e-12), (level, r["time"], k)


@pytest_twisted.inlineCallbacks
def test_moments_match_numpy_at_every_level_across_a_restart(tmp_path):
    start = epoch(ZONE, "2026-12-31 23:59:10")
    rng = np.random.default_rng(7)
    fed = {}
    cfg, store, rig = make(tmp_path, start)
    run(rig, fed, rng, 40, 0)           # crosses minute, hour, day, month and year
    yield stop(rig, store)
    path = store.path_of("Press")
    conn = sqlite3.connect(path)
    refs = dict(conn.execute("SELECT name, ref FROM tsrmon_sensors"))
    conn.close()
    # c is the mean of the first chunk (6 significant digits), stored once.
    assert refs["temp"] == pytest.approx(40.0, abs=0.01) and refs["temp"] != 40.0
    assert abs(refs["vib"]) < 0.1

    # A restart: the new process's first data has another mean; the stored
    # c stays and the rows stay exact.
    _cfg, store2, rig2 = make(tmp_path, rig.clock.seconds() + 5)
    rig2.stats._refs[("Press", "temp")] = 40.5   # as if chosen before the store had loaded c
    run(rig2, fed, rng, 10, 40)
    yield stop(rig2, store2)
    conn = sqlite3.connect(path)
    assert dict(conn.execute("SELECT name, ref FROM tsrmon_sensors")) == refs
    conn.close()

    reader = SQLiteReader(cfg, reactor)
    reader.warm_hour_cache = False
    reader.startService()
    try:
        for level in LEVELS:
            got = yield reader.moment_stats("Press", level)
            check_level(got["vib"], fed["vib"], level, 1e-9)
            check_level(got["temp"], fed["temp"], level, 1e-6)
            assert all(r["kurtosis"] == pytest.approx(3, abs=1.5) for r in got["temp"])
        one = yield reader.moment_stats("Press", "year", sensors=["temp"])
        assert list(one) == ["temp"]
    finally:
        yield reader.stopService()


def test_the_sine_figures_per_second_reach_the_live_layer(tmp_path):
    """A second handed to the live sink carries the moments: crest √2 and kurtosis 1.5 for a tone."""
    cfg = config(tmp_path, ZONE)
    rig = Rig(cfg, epoch(ZONE, "2026-06-01 12:00:00"), store=MemoryStore())
    i = np.arange(25600)
    tone = np.sin(2 * np.pi * 50 * i / 25600)
    rig.hub.data(rig.machine, [("vib", "VIB", tone)])
    rig.clock.advance(1.1)
    (_m, _s, _t, _ts, sums), = rig.live.seconds
    m = sums.moments
    assert m.count == 25600
    assert m.kurtosis == pytest.approx(1.5, abs=1e-6)
    assert m.crest == pytest.approx(math.sqrt(2), abs=1e-6)
    assert m.rms == pytest.approx(1 / math.sqrt(2), abs=1e-9)


def test_memory_store_shifts_rows_to_the_first_reference(tmp_path):
    store = MemoryStore()
    x = 40 + np.random.default_rng(1).normal(0, 0.01, 1000)
    a, b = Moments.of(x[:500], 40.0), Moments.of(x[500:], 40.003)
    rows = [("t", "minute", 0, 0, "t", 500, 1.0, 1.0, 0.0, 1.0, 1.0, *a.as_columns()[:6]),
            ("t", "minute", 0, 0, "t", 500, 1.0, 1.0, 0.0, 1.0, 1.0, *b.as_columns()[:6])]
    store.upsert_sums("M", rows)
    store.flush()
    (_t0, _off, _text, sums), = store.table("M", "t", "minute")
    assert sums.moments.ref == 40.0
    assert sums.moments.kurtosis == pytest.approx(Moments.of(x).kurtosis, rel=1e-9)


def old_v1_database(path):
    """A version-1 tsrmon database (the layout before issue 17) with one row."""
    v1 = [c for c in schema.ADDED_STAT_COLUMNS if c[0] not in schema.MOMENT_COLUMNS]
    conn = sqlite3.connect(path)
    for sql in schema.BASE_DDL:
        conn.execute(sql)
    conn.execute(f"INSERT INTO {schema.VERSION_TABLE} VALUES (1)")
    conn.execute(f"INSERT INTO {schema.SENSORS_TABLE} VALUES ('vib', 'VIB', 'ABS', 0.0, 0)")
    added = ", ".join(f'"{c}" {t}' for c, t in v1)
    for level in schema.LEVELS:
        conn.execute(f'CREATE TABLE "vib_{level}_avg" (id INTEGER PRIMARY KEY AUTOINCREMENT, '
                     f'time TIMESTAMP, data REAL, {added})')
        conn.execute(schema.unique_t0_index_sql(f"vib_{level}_avg"))
    conn.execute('INSERT INTO "vib_hour_avg" (time, data, t0, utc_offset, "count", "sum", '
                 '"sum_abs", "min", "max", "sum_sq") VALUES '
                 "('2026-12-01 10:00:00', 0.3, 1796115600, 3600, 30, 1.5, 9.0, -1.0, 2.0, 4.25)")
    conn.commit()
    conn.close()


def test_migration_from_version_1_adds_columns_and_keeps_answers(tmp_path):
    path = str(tmp_path / "M.db")
    old_v1_database(path)
    conn = sqlite3.connect(path)
    before = serving.served_rows(conn, "vib", "hour")
    conn.close()
    conn = migrate.open_database(path)
    try:
        assert migrate.schema_version(conn) == schema.SCHEMA_VERSION == 2
        for level in schema.LEVELS:
            assert set(schema.MOMENT_COLUMNS) <= set(migrate.columns(conn, f"vib_{level}_avg"))
        assert "ref" in migrate.columns(conn, schema.SENSORS_TABLE)
        assert serving.served_rows(conn, "vib", "hour") == before
        assert conn.execute('SELECT mcount, s1 FROM "vib_hour_avg"').fetchall() == [(None, None)]
    finally:
        conn.close()
    assert (tmp_path / "backups").is_dir()


@pytest_twisted.inlineCallbacks
def test_upsert_into_a_migrated_row_adds_moments_and_leaves_old_columns(tmp_path):
    """A bucket begun before the migration: the deployed sums keep adding,
    the moments cover the new samples only (moments_count < count)."""
    cfg = config(tmp_path, ZONE)
    path = tmp_path / "db"
    path.mkdir()
    old_v1_database(str(path / "M.db"))
    store = SQLiteStore(cfg, reactor, hub=None)
    store.startService()
    x = np.random.default_rng(3).normal(0.1, 1.0, 100)
    m = Moments.of(x, 0.1)
    row = ("vib", "hour", 1796115600, 3600, "2026-12-01 10:00:00", 100, float(x.sum()),
           float(np.abs(x).sum()), float(x.min()), float(x.max()), float((x * x).sum()),
           *m.as_columns()[:6])
    store.upsert_sums("M", [row])
    yield store.flush()
    yield store.stopService()
    reader = SQLiteReader(cfg, reactor)
    reader.warm_hour_cache = False
    reader.startService()
    try:
        got = (yield reader.moment_stats("M", "hour"))["vib"]
    finally:
        yield reader.stopService()
    (r,) = got
    assert r["count"] == 130 and r["moments_count"] == 100
    assert r["kurtosis"] == pytest.approx(truth(x)["kurtosis"], rel=1e-9)
    assert r["peak"] == max(2.0, float(np.abs(x).max()))


def test_deployed_database_migrates_to_version_2_and_keeps_its_answers(tmp_path):
    from tests.store.test_migrate import SENSORS, deployed_database
    path = str(tmp_path / "M.db")
    deployed_database(path)
    conn = sqlite3.connect(path)
    before = {s: serving.served_rows(conn, s, "hour") for s in SENSORS}
    conn.close()
    conn = migrate.open_database(path)
    try:
        assert migrate.schema_version(conn) == 2
        for s in SENSORS:
            assert set(schema.MOMENT_COLUMNS) <= set(migrate.columns(conn, f"{s}_year_avg"))
            assert serving.served_rows(conn, s, "hour") == before[s]
        assert "ref" in migrate.columns(conn, schema.SENSORS_TABLE)
    finally:
        conn.close()


def test_a_retried_queue_compacts_moment_rows_exactly():
    """A failing database's queue is compacted per bucket before each retry:
    rows with moments (about equal or different references) merge exactly,
    and a row without moments adds only to the deployed sums."""
    from tsrmon.store.sqlite import compact_ops
    from tsrmon.stats.sums import row_moments
    rng = np.random.default_rng(11)
    x = [40 + rng.normal(0, 0.01, 200) for _ in range(3)]

    def row(v, ref):
        head = ("t", "hour", 0, 0, "t", v.size, float(v.sum()), float(np.abs(v).sum()),
                float(v.min()), float(v.max()), float((v * v).sum()))
        return head if ref is None else head + Moments.of(v, ref).as_columns()[:6]
    ops = [("sums", [row(x[0], 40.0)]), ("sums", [row(x[1], 40.02)]), ("sums", [row(x[2], None)]),
           ("spectrum", "v", "spectrum_minute", 0, 0, "t", 1, 25600.0, 6.25, 6.25, b"\0" * 8)]
    out, n = compact_ops(ops)
    assert n == 2 and out[1][0] == "spectrum"
    (merged,) = out[0][1]
    assert merged[5] == 600
    m = row_moments(merged)
    assert m.count == 400 and m.ref == 40.0
    want = Moments.of(np.concatenate(x[:2]), 40.0)
    assert m.kurtosis == pytest.approx(want.kurtosis, rel=1e-9)
    assert m.s2 == pytest.approx(want.s2, rel=1e-12)
