"""``tsrmon migrate-store``: a real SQLite tree (a deployed machine file, a
tsrmon-written one with minutes, hours, moments, faults and spectra, the
alarm and notification side files) copied into PostgreSQL, verified, served
the same, and a rerun changes nothing."""

import os

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from tests.store.pg_fixtures import fresh_database
from tests.store.test_contract_backends import row
from tests.store.test_migrate import deployed_database
from tests.web.conftest import make_config
from tsrmon import cli
from tsrmon.alarms.engine import Alarm
from tsrmon.alarms.store import AlarmStore
from tsrmon.notify.records import AttemptRecords
from tsrmon.reader.pg_reader import PgReader
from tsrmon.reader.sqlite_reader import SQLiteReader
from tsrmon.stats.calendar import Calendar
from tsrmon.store.feed import LocalChangeFeed
from tsrmon.store.sqlite import SQLiteStore

T0 = 1_796_025_600   # 2026-11-30 17:00 Asia/Seoul
SEOUL = Calendar("Asia/Seoul")


@pytest.fixture
def pg_dsn():
    dsn, drop = fresh_database()
    yield dsn
    drop()


@defer.inlineCallbacks
def _sqlite_tree(tmp_path):
    cfg = make_config(tmp_path)
    os.makedirs(cfg.database.path, exist_ok=True)
    deployed_database(os.path.join(cfg.database.path, "Deployed.db"))
    store = SQLiteStore(cfg, reactor)
    store.startService()
    store.ensure_sensor("Press", "vib", "VIB", "ABS")
    store.ensure_sensor("Press", "temp", "TEMP", "REAL")
    for k in range(30):
        t = T0 + k * 3600
        store.upsert_sums("Press", [row("vib", "hour", t, SEOUL.text(t)[:13] + ":00:00", [1.0 + k, -2.0], moments=0.5)])
    store.upsert_sums("Press", [row("vib", "minute", T0 + 60 * i, f"2026-11-30 17:{i:02d}:00", [float(i)])
                                for i in range(1, 10)]
                      + [row("temp", "day", T0, "2026-11-30 00:00:00", [20.0, 21.0])])
    store.record_fault("Press", 0.5, 1.0, T0 + 5)
    store.record_fault("Press", 3.0, 1.0, T0 + 65)
    store.upsert_spectrum("Press", "vib", "spectrum_minute", T0, 32400, "2026-11-30 17:00:00", 4, 25600.0,
                          0.0, 1.0, b"\x00\x00\x80\x3f" * 8)
    yield store.flush()
    yield store.stopService()
    alarms = AlarmStore(cfg.database.path, reactor)
    yield alarms.open(T0)
    yield alarms.insert(Alarm(id="a1", rule="hot", kind="threshold", machine="Press", sensor="vib",
                              severity="warning", raised_t=T0 + 1.0))
    yield alarms.close()
    attempts = AttemptRecords(cfg.database.path, reactor)
    yield attempts.open(T0)
    yield attempts.add({"t": T0 + 5.0, "event_id": "e1", "machine": "Press", "kind": "anomaly",
                        "channel": "fcm", "target": "topic:anomaly", "result": "sent", "attempts": 1,
                        "suppressed": 0})
    attempts.close()
    return cfg


def _counts(dsn):
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"SELECT count(*), sum(count) FROM {t}").fetchone() if t.startswith("stat_") and t != "stat_legacy"
                else conn.execute(f"SELECT count(*) FROM {t}").fetchone()
                for t in ("stat_minute", "stat_hour", "stat_day", "stat_month", "stat_year", "stat_legacy",
                          "anomaly", "fault_detect", "spectrum", "sensor", "alarms", "notification_attempts")}


def _json(series):
    return [(s.sensor, s.name, b",".join(c.json() for c in s.chunks if c.items)) for s in series]


@pytest.mark.timeout(120)
@pytest_twisted.inlineCallbacks
def test_migrate_store_copies_verifies_serves_the_same_and_reruns(tmp_path, pg_dsn, capsys):
    cfg = yield _sqlite_tree(tmp_path)
    conf = tmp_path / "tsrmon.yml"
    conf.write_text(f"DATABASE: {{PATH: {cfg.database.path}}}\nTIME: {{ZONE: Asia/Seoul}}\n"
                    f"DATA: {{PATH: {tmp_path}/data}}\nLOGGER: {{PATH: {tmp_path}/log}}\n")
    assert cli.main(["migrate-store", "--config", str(conf), pg_dsn]) == 0
    out = capsys.readouterr()
    assert "copied and verified machines: 2" in out.out
    assert "2/3 databases copied" in out.err or "3/4 databases copied" in out.err
    first = _counts(pg_dsn)
    assert first["stat_hour"] == (30, 60)
    assert first["stat_minute"] == (9, 9)
    assert first["anomaly"] == (3,)       # two deployed, one of Press
    assert first["fault_detect"] == (2,)
    assert first["spectrum"] == (1,)
    assert first["alarms"] == (1,) and first["notification_attempts"] == (1,)
    assert first["stat_legacy"][0] > 0
    # Served the same as from the SQLite files.
    pg_cfg = cfg.replace(database={"backend": "postgresql", "dsn": pg_dsn})
    lite = SQLiteReader(cfg, reactor, feed=LocalChangeFeed())
    pg = PgReader(pg_cfg, reactor, LocalChangeFeed())
    lite.warm_hour_cache = pg.warm_hour_cache = False
    try:
        assert sorted((yield pg.machines())) == ["Deployed", "Press"]
        for machine in ("Deployed", "Press"):
            for level in ("hour", "day", "month", "year"):
                a = yield lite.stats(machine, level, align=False)
                b = yield pg.stats(machine, level, align=False)
                assert _json(b) == _json(a), (machine, level)
            assert (yield pg.anomalies(machine)) == (yield lite.anomalies(machine))
            assert (yield pg.faults(machine)) == (yield lite.faults(machine))
        assert len((yield pg.anomalies("Deployed"))) == 2
        hours = yield pg.stats("Press", "hour", align=False)
        assert [i[0] for i in hours[0].chunks[0].items][:2] == ["2026-11-30 17:00:00", "2026-11-30 18:00:00"]
    finally:
        yield lite.stopService()
        yield pg.stopService()
    # A rerun leaves the same rows (nothing added twice).
    assert cli.main(["migrate-store", "--config", str(conf), pg_dsn]) == 0
    assert _counts(pg_dsn) == first


@pytest.mark.timeout(30)
def test_migrate_store_refuses_an_unreachable_database_in_one_line(tmp_path, capsys):
    cfg = make_config(tmp_path)
    os.makedirs(cfg.database.path)
    deployed_database(os.path.join(cfg.database.path, "Deployed.db"))
    conf = tmp_path / "tsrmon.yml"
    conf.write_text(f"DATABASE: {{PATH: {cfg.database.path}}}\n")
    assert cli.main(["migrate-store", "--config", str(conf), "postgresql://nobody@127.0.0.1:1/none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tsrmon: cannot connect to postgresql://nobody@127.0.0.1:1/none")
    assert "\n" not in err


@pytest.mark.timeout(30)
def test_migrate_store_refuses_while_spooled_rows_wait_for_their_replay(tmp_path, capsys):
    from tsrmon.store import spool

    cfg = make_config(tmp_path)
    os.makedirs(cfg.database.path)
    deployed_database(os.path.join(cfg.database.path, "Deployed.db"))
    spool.write_records(spool.spool_dir(cfg.database.path),
                        spool.records_of("Deployed", [("fault", "2026-11-30 17:00:00", float(T0), 2.0, 1.0)]), T0)
    conf = tmp_path / "tsrmon.yml"
    conf.write_text(f"DATABASE: {{PATH: {cfg.database.path}}}\n")
    assert cli.main(["migrate-store", "--config", str(conf), "postgresql://nobody@127.0.0.1:1/none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "spool file(s)" in err and "not replayed yet" in err
