"""The real statistics into both backends: session.bin fed to the hub across
a year end in Berlin, once into SQLite and once into PostgreSQL; every
level's rows, the faults and the served REST rows are the same."""

import os
import sqlite3

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.stats.helpers import Rig, config, epoch
from tests.store.pg_fixtures import fresh_database
from tests.store.test_sqlite_store import feed_session, stop
from tsrmon.reader.pg_reader import PgReader
from tsrmon.reader.sqlite_reader import SQLiteReader
from tsrmon.store.feed import LocalChangeFeed
from tsrmon.store.postgres.store import PostgresStore
from tsrmon.store.sqlite import SQLiteStore

BERLIN = "Europe/Berlin"
COLS = "t0, utc_offset, time, count, sum, sum_abs, min, max, sum_sq, mcount, s1, s2, s3, s4"


@pytest.fixture
def pg_dsn():
    dsn, drop = fresh_database()
    yield dsn
    drop()


def _sums(p):
    return (p.count, p.total, p.total_abs, p.minimum, p.maximum, p.total_sq)


def _rig(cfg, store, start):
    rig = Rig(cfg, start, store=store, machine="ShotBlast")
    store.clock = rig.clock
    store.hub = rig.hub
    rig.hub.faults = store
    store.startService()
    return rig


@pytest.mark.timeout(120)
@pytest_twisted.inlineCallbacks
def test_a_session_stores_and_serves_the_same_on_both_backends(tmp_path, expected_json, pg_dsn):
    session = expected_json["session.bin"]
    start = epoch(BERLIN, "2026-12-31 23:59:00")
    lite_cfg = config(tmp_path / "lite", BERLIN, flush=10)
    pg_cfg = config(tmp_path / "pg", BERLIN, flush=10).replace(
        database={"backend": "postgresql", "dsn": pg_dsn})
    lite = SQLiteStore(lite_cfg, reactor)
    rig = _rig(lite_cfg, lite, start)
    feed_session(rig, session)
    yield stop(rig, lite)
    pg = PostgresStore(pg_cfg, reactor).prepare()
    rig = _rig(pg_cfg, pg, start)
    feed_session(rig, session)
    yield stop(rig, pg)

    path = os.path.join(lite_cfg.database.path, "ShotBlast.db")
    conn = sqlite3.connect(path)
    with psycopg.connect(pg_dsn) as pconn:
        for sensor in session["per_sensor"]:
            for level in ("minute", "hour", "day", "month", "year"):
                a = conn.execute(f'SELECT {COLS} FROM "{sensor}_{level}_avg" ORDER BY t0').fetchall()
                b = pconn.execute(f"SELECT {COLS} FROM stat_{level} WHERE machine = 'ShotBlast' "
                                  f"AND sensor = %s ORDER BY t0", (sensor,)).fetchall()
                assert len(a) == len(b) == 2, (sensor, level)
                for x, y in zip(a, b):
                    assert x[:4] == y[:4]
                    assert x[4:] == pytest.approx(y[4:], rel=1e-12, abs=1e-9)
        faults = conn.execute("SELECT time, t, score, threshold FROM fault_detect ORDER BY id").fetchall()
        assert pconn.execute("SELECT time, t, score, threshold FROM fault_detect ORDER BY id").fetchall() == faults
        assert len(faults) == 3
    conn.close()

    lite_reader = SQLiteReader(lite_cfg, reactor, feed=LocalChangeFeed())
    pg_reader = PgReader(pg_cfg, reactor, LocalChangeFeed())
    lite_reader.warm_hour_cache = pg_reader.warm_hour_cache = False
    try:
        for level in ("hour", "day", "month", "year"):
            a = yield lite_reader.stats("ShotBlast", level)
            b = yield pg_reader.stats("ShotBlast", level)
            assert [(s.sensor, [c.json() for c in s.chunks]) for s in a] == \
                [(s.sensor, [c.json() for c in s.chunks]) for s in b], level
        assert (yield pg_reader.anomalies("ShotBlast")) == (yield lite_reader.anomalies("ShotBlast"))
        a = yield lite_reader.recent_minutes("ShotBlast", start - 60)
        b = yield pg_reader.recent_minutes("ShotBlast", start - 60)
        assert len(a) == len(b) > 0
        assert [(s, ty, t0, _sums(p)) for s, ty, t0, p in a] == [(s, ty, t0, _sums(p)) for s, ty, t0, p in b]
    finally:
        yield lite_reader.stopService()
        yield pg_reader.stopService()
