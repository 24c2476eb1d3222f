"""The daemon on the PostgreSQL store (DATABASE.BACKEND: postgresql):
session.bin through the real daemon, SIGTERM; the shared tables hold the
exact statistics and REST serves them; alarms and attempts use the store."""

import inspect
import json
import math

import psycopg
import pytest

import tsrmon.service
from tests.conftest import expected, fixture_bytes
from tests.daemon.harness import Daemon
from tests.store.pg_fixtures import fresh_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90),
              pytest.mark.skipif("build_store" not in inspect.getsource(tsrmon.service),
                                 reason="tsrmon/service.py does not build the store through "
                                        "tsrmon.store.backends.build_store yet")]


@pytest.fixture
def pg_dsn():
    dsn, drop = fresh_database()
    yield dsn
    drop()


def test_session_replay_into_postgresql_matches_truth(tmp_path, pg_dsn):
    truth = expected()["session.bin"]
    d = Daemon(tmp_path, overrides={"DATABASE": {"BACKEND": "postgresql", "DSN": pg_dsn}}).start()
    try:
        d.send(fixture_bytes("session.bin"))
    finally:
        assert d.stop() == 0, d.log_text()
    assert not (tmp_path / "db" / "ShotBlast.db").exists()
    with psycopg.connect(pg_dsn) as conn:
        for sensor, t in truth["per_sensor"].items():
            for level in ("minute", "hour", "day", "month", "year"):
                n, s, sa, sq, lo, hi = conn.execute(
                    f"SELECT sum(count), sum(sum), sum(sum_abs), sum(sum_sq), min(min), max(max) "
                    f"FROM stat_{level} WHERE machine = 'ShotBlast' AND sensor = %s", (sensor,)).fetchone()
                assert n == t["n"], (sensor, level)
                assert math.isclose(s, t["sum"], rel_tol=1e-9, abs_tol=1e-9)
                assert math.isclose(sa, t["sum_abs"], rel_tol=1e-9)
                assert math.isclose(sq, t["sumsq"], rel_tol=1e-9)
                assert lo == t["min"] and hi == t["max"]
        assert conn.execute("SELECT score, threshold FROM anomaly").fetchall() == [(7.0, 5.0)]
        assert conn.execute("SELECT count(*) FROM fed_day WHERE machine = 'ShotBlast'").fetchone()[0] >= 1
        first, last = conn.execute("SELECT min(left(time, 10)), max(left(time, 10)) FROM stat_hour").fetchone()
    # A second life: the machine is known from the store, REST serves its rows.
    d = Daemon(tmp_path, overrides={"DATABASE": {"BACKEND": "postgresql", "DSN": pg_dsn}}).start()
    try:
        status, body, _ = d.get("/machines")
        assert status == 200 and b"ShotBlast" in body
        status, body, _ = d.get(f"/stat/hour?machine=ShotBlast&start={first}&end={last}")
        assert status == 200, body
        rows = json.loads(body)
    finally:
        assert d.stop() == 0, d.log_text()
    sensor, t = next(iter(truth["per_sensor"].items()))
    assert sum(r.get("count", 0) for r in rows if r["name"] == f"{sensor}_hour_avg") == t["n"], rows[:3]
