"""Nothing lost in silence: the spool of rows still queued at stop, its replay,
per-database health, compacted retries and case-collision reports."""

import os
import shutil
import sqlite3

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.logger import Logger, formatEvent

from tests.stats.helpers import Rig, config, epoch, oracle
import tsrmon.store.sqlite as sqlite_store
import tsrmon.store.sqlite_machine as sqlite_machine
from tsrmon.store import schema, spool
from tsrmon.store.sqlite import SQLiteStore, compact_ops

ZONE = "Asia/Seoul"
SUMS = 'SUM("count"), SUM("sum"), SUM("sum_abs"), SUM("sum_sq"), MIN("min"), MAX("max")'


class Events:
    """Log events of the store and its databases."""

    def __init__(self, monkeypatch, store=None):
        self.events = []
        log = Logger(observer=self.events.append, namespace="store-test")
        monkeypatch.setattr(sqlite_machine.MachineDatabase, "log", log)
        monkeypatch.setattr(sqlite_store.SQLiteStore, "log", log)

    def text(self, level=None):
        return [formatEvent(e) for e in self.events if level is None or e["log_level"].name == level]


def db_rows(path, sql, args=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def make_rig(cfg, start, machine="ShotBlast"):
    store = SQLiteStore(cfg, reactor)
    rig = Rig(cfg, start, store=store, machine=machine)
    store.clock = rig.clock
    store.hub = rig.hub
    rig.hub.faults = store
    store.startService()
    return store, rig


@defer.inlineCallbacks
def stop(rig, store):
    yield rig.stats.stopService()
    yield store.stopService()


def sums_of(path, sensor, level):
    return db_rows(path, f'SELECT {SUMS} FROM "{sensor}_{level}_avg"')[0]


def spool_names(cfg):
    folder = spool.spool_dir(cfg.database.path)
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# -- the format ----------------------------------------------------------------------

def test_records_round_trip_exactly(tmp_path):
    ops = [
        ("sensor", "vib", "VIB", "ABS", 1796000000.25),
        ("sums", [("vib", "hour", 1796025600, 32400, "2026-12-01 10:00:00", 30, 0.1 + 0.2,
                   9.000000000000002, -1.5e-300, 2.0, 4.25),
                  ("vib", "minute", 1796025660, 32400, "2026-12-01 10:01:00", 1, -0.0, 0.0, -0.0,
                   -0.0, 0.0)]),
        ("fault", "2026-12-01 10:00:01.5", 1796025601.5, 0.9, 0.5),
        ("prune", 1790000000),  # not data: never spooled
    ]
    records = spool.records_of("진공펌프1", ops)
    assert [r["kind"] for r in records] == ["sensor", "sums", "sums", "fault"]
    path = spool.write_records(str(tmp_path), records, 1796025700.0)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part")]
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert '"tsrmon_spool": 1' in lines[0] and '"records": 4' in lines[0]
    assert "진공펌프1" in lines[1]  # UTF-8, not escaped
    back, bad = spool.read_file(path)
    assert bad == 0 and back == records
    parsed = [spool.op_of(r) for r in back]
    assert {m for m, _, _ in parsed} == {"진공펌프1"}
    assert [op for _, op, _ in parsed] == [
        ops[0], ("sums", [ops[1][1][0]]), ("sums", [ops[1][1][1]]), ops[2]]
    # Exact floats, types kept.
    row = parsed[1][1][1][0]
    assert row[6] == 0.1 + 0.2 and row[8] == -1.5e-300 and isinstance(row[2], int)


def test_malformed_lines_and_records_are_counted(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"tsrmon_spool": 1}\nnot json\n[1]\n{"kind": "sums", "machine": "M"}\n'
                    '{"kind": "fault", "machine": "M", "time": "t", "t": 1, "score": 2, '
                    '"threshold": 1}\n{"kind": "fault", "machine"', encoding="utf-8")
    records, bad = spool.read_file(str(path))
    assert bad == 3  # not json, not an object, the cut-off last line
    assert len(records) == 2
    with pytest.raises(spool.SpoolError):
        spool.op_of(records[0])
    assert spool.op_of(records[1]) == ("M", ("fault", "t", 1.0, 2.0, 1.0), 1)


def test_compaction_merges_buckets_and_keeps_the_effect():
    r1 = ("v", "hour", 3600, 0, "h", 2, 1.0, 3.0, -1.0, 2.0, 5.0)
    r2 = ("v", "hour", 3600, 0, "h", 3, -2.0, 4.0, -3.0, 1.0, 6.0)
    r3 = ("v", "minute", 3600, 0, "m", 1, 1.0, 1.0, 1.0, 1.0, 1.0)
    ops = [("sensor", "v", "VIB", "REAL", 1.0), ("sums", [r1, r3]), ("prune", 5),
           ("sensor", "v", "VIB", "ABS", 2.0), ("fault", "x", 1.0, 2.0, 1.0), ("sums", [r2]),
           ("prune", 9)]
    out, rows = compact_ops(ops)
    assert out == [("sensor", "v", "VIB", "ABS", 2.0),
                   ("sums", [("v", "hour", 3600, 0, "h", 5, -1.0, 7.0, -3.0, 2.0, 11.0), r3]),
                   ("fault", "x", 1.0, 2.0, 1.0), ("prune", 9)]
    assert rows == 5


# -- stop, spool, replay ---------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_unwritable_database_is_spooled_at_stop_and_replayed_exactly(tmp_path, monkeypatch):
    log = Events(monkeypatch)
    start = epoch(ZONE, "2026-12-01 10:00:30")
    # The truth: the same feed into a store that can write.
    direct_cfg = config(tmp_path / "direct", ZONE)
    store, rig = make_rig(direct_cfg, start)
    rig.run(100)
    rig.hub.fault(rig.machine, 0.9, 0.5)
    yield stop(rig, store)

    cfg = config(tmp_path / "live", ZONE)
    folder = cfg.database.path
    os.makedirs(os.path.join(folder, "ShotBlast.db"))  # a folder where the file should be
    store, rig = make_rig(cfg, start)
    rig.run(100)  # ten flushes, every one failing
    rig.hub.fault(rig.machine, 0.9, 0.5)
    yield store.flush()
    health = store.health()
    assert health["ok"] is True and health["state"] == "degraded"
    entry = health["degraded"]["ShotBlast"]
    assert "unable to open" in entry["error"] and entry["queued_rows"] > 0
    # Retries were compacted: one row per bucket, not one per flush.
    buckets = sum(len(v) for v in oracle(ZONE, rig.fed).values())
    assert buckets == 2 * (3 + 4)  # two sensors: minutes 10:00-10:02 + hour/day/month/year
    assert store.counters()["queued_rows"] <= buckets + 2 + 1 + 1  # + sensors, fault, prune
    yield stop(rig, store)
    names = spool_names(cfg)
    assert len(names) == 1 and names[0].endswith(".jsonl")
    records, bad = spool.read_file(os.path.join(spool.spool_dir(folder), names[0]))
    assert bad == 0
    kinds = [r["kind"] for r in records]
    assert kinds.count("fault") == 1 and kinds.count("sensor") == 2 and kinds.count("sums") == buckets
    warned = [m for m in log.text("warn") if "kept in" in m]
    assert len(warned) == 1 and f"{buckets + 3} rows of 1 machines ({buckets} sum rows, 1 faults)" in warned[0]
    assert store.counters()["spooled_rows"] == buckets + 3

    # Repaired: the next start replays before anything else and removes the file.
    shutil.rmtree(os.path.join(folder, "ShotBlast.db"))
    store2 = SQLiteStore(cfg, reactor)
    store2.startService()
    yield store2.replay_done
    assert spool_names(cfg) == []
    assert store2.counters()["replayed_rows"] == buckets + 3
    assert any(f"replayed {buckets + 3} spooled rows of 1 machines" in m for m in log.text("info"))
    yield store2.stopService()
    got = os.path.join(folder, "ShotBlast.db")
    want = os.path.join(direct_cfg.database.path, "ShotBlast.db")
    truth = oracle(ZONE, rig.fed)
    for sensor in ("vib", "temp"):
        for level in ("minute", "hour", "day", "month", "year"):
            assert sums_of(got, sensor, level) == pytest.approx(sums_of(want, sensor, level), rel=1e-12)
            q = f'SELECT time, utc_offset, "count", data FROM "{sensor}_{level}_avg" ORDER BY t0'
            got_rows, want_rows = db_rows(got, q), db_rows(want, q)
            assert [r[:3] for r in got_rows] == [r[:3] for r in want_rows]
            assert [r[3] for r in got_rows] == pytest.approx([r[3] for r in want_rows], rel=1e-12)
        n = sum(s.count for s in truth[(sensor, "hour")].values())
        assert sums_of(got, sensor, "hour")[0] == n == 100 * 30
    assert db_rows(got, "SELECT score, threshold FROM anomaly") == [(0.9, 0.5)]
    assert db_rows(got, "SELECT COUNT(*) FROM fault_detect") == [(1,)]
    assert [s[0] for s in db_rows(got, "SELECT name FROM tsrmon_sensors ORDER BY ord")] == \
        ["vib", "temp"]


@pytest_twisted.inlineCallbacks
def test_failed_replay_keeps_the_file_and_a_partial_one_keeps_only_what_failed(
        tmp_path, monkeypatch):
    log = Events(monkeypatch)
    cfg = config(tmp_path, ZONE)
    folder = cfg.database.path
    row = ("v", "hour", 1796025600, 32400, "2026-12-01 10:00:00", 2, 1.0, 3.0, -1.0, 2.0, 5.0)
    records = (spool.records_of("Good", [("sensor", "v", "VIB", "ABS", 1.0), ("sums", [row])])
               + spool.records_of("Bad", [("sums", [row]), ("fault", "x", 1.0, 2.0, 1.0)]))
    path = spool.write_records(spool.spool_dir(folder), records, 1796025700.0)
    os.makedirs(os.path.join(folder, "Bad.db"))

    store = SQLiteStore(cfg, reactor)
    store.startService()
    yield store.replay_done
    kept, bad = spool.read_file(path)
    assert bad == 0 and kept == records[2:]  # only Bad's rows are left
    assert store.counters()["replayed_rows"] == 2 and store.counters()["spool_rows"] == 2
    assert any("2 spooled rows of 1 machines could not be replayed" in m for m in log.text("error"))
    h = store.health()
    assert h["ok"] and h["state"] == "degraded" and "Bad" in h["degraded"] and h["spool_rows"] == 2
    yield store.stopService()
    good = os.path.join(folder, "Good.db")
    assert db_rows(good, 'SELECT "count", data FROM "v_hour_avg"') == [(2, 1.5)]

    shutil.rmtree(os.path.join(folder, "Bad.db"))
    store = SQLiteStore(cfg, reactor)
    store.startService()
    yield store.replay_done
    yield store.stopService()
    assert spool_names(cfg) == []
    assert db_rows(good, 'SELECT "count" FROM "v_hour_avg"') == [(2,)]  # not twice
    assert db_rows(os.path.join(folder, "Bad.db"), 'SELECT "count", data FROM "v_hour_avg"') == \
        [(2, 0.5)]  # no sensor record for Bad: REAL mode
    assert db_rows(os.path.join(folder, "Bad.db"), "SELECT score FROM fault_detect") == [(2.0,)]


@pytest_twisted.inlineCallbacks
def test_a_spool_that_cannot_be_written_is_logged_with_counts(tmp_path, monkeypatch):
    log = Events(monkeypatch)
    cfg = config(tmp_path, ZONE)
    folder = cfg.database.path
    os.makedirs(os.path.join(folder, "M.db"))
    with open(os.path.join(folder, "spool"), "w") as f:
        f.write("a file where the spool folder goes")
    store = SQLiteStore(cfg, reactor)
    store.startService()
    store.ensure_sensor("M", "v", "VIB", "ABS")
    store.upsert_sums("M", [("v", "hour", 3600, 0, "h", 1, 1.0, 1.0, 1.0, 1.0, 1.0)])
    yield store.flush()
    yield store.stopService()
    lost = [m for m in log.text("critical") if "could not be committed nor spooled" in m]
    assert len(lost) == 1 and lost[0].startswith("2 rows of 1 machines (1 sum rows, 0 faults)")
    assert store.counters()["spool_errors"] == 1


# -- health --------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_one_failing_database_degrades_and_recovers_by_itself(tmp_path, monkeypatch):
    Events(monkeypatch)
    cfg = config(tmp_path, ZONE)
    folder = cfg.database.path
    store = SQLiteStore(cfg, reactor)
    store.startService()
    assert store.health() == {"ok": True, "state": "ok", "path": folder, "queued_rows": 0,
                              "dropped_rows": 0}
    os.makedirs(os.path.join(folder, "Bad.db"))
    row = ("v", "hour", 3600, 0, "h", 1, 1.0, 1.0, 1.0, 1.0, 1.0)
    for m in ("Good", "Bad"):
        store.upsert_sums(m, [row])
    yield store.flush()
    h = store.health()
    assert h["ok"] is True and h["state"] == "degraded" and list(h["degraded"]) == ["Bad"]
    assert h["degraded_count"] == 1 and h["degraded"]["Bad"]["attempts"] == 1
    # A second failing database with none writing: the store as a whole fails.
    os.makedirs(os.path.join(folder, "Bad2.db"))
    store.databases.pop("Good").close()
    store.upsert_sums("Bad2", [row])
    yield store.flush()
    assert store.health()["ok"] is False and store.health()["state"] == "failing"
    shutil.rmtree(os.path.join(folder, "Bad.db"))
    shutil.rmtree(os.path.join(folder, "Bad2.db"))
    yield store.flush()
    assert store.health() == {"ok": True, "state": "ok", "path": folder, "queued_rows": 0,
                              "dropped_rows": 0}
    yield store.stopService()
    assert db_rows(os.path.join(folder, "Bad.db"), 'SELECT "count" FROM "v_hour_avg"') == [(1,)]


@pytest_twisted.inlineCallbacks
def test_a_broken_file_is_degraded_not_unhealthy_and_its_drops_are_logged(tmp_path, monkeypatch):
    log = Events(monkeypatch)
    cfg = config(tmp_path, ZONE)
    folder = cfg.database.path
    os.makedirs(folder)
    with open(os.path.join(folder, "Broken.db"), "wb") as f:
        f.write(b"this is not a database" * 100)
    store = SQLiteStore(cfg, reactor)
    store.startService()
    yield store.flush()
    row = ("v", "hour", 3600, 0, "h", 1, 1.0, 1.0, 1.0, 1.0, 1.0)
    for _ in range(12):
        store.upsert_sums("Broken", [row])
    h = store.health()
    assert h["ok"] is True and h["degraded"]["Broken"]["broken"] is True
    assert h["degraded"]["Broken"]["dropped_rows"] == 12
    assert not store.healthy()  # the strict boolean of the AggregateStore port
    assert any("10 rows dropped in all" in m for m in log.text("error"))
    yield store.stopService()


# -- statistics survive a machine the store refuses -------------------------------------------

@pytest_twisted.inlineCallbacks
def test_statistics_flush_the_others_when_the_store_refuses_one_machine(tmp_path, monkeypatch):
    cfg = config(tmp_path, ZONE)
    store, rig = make_rig(cfg, epoch(ZONE, "2026-12-01 10:00:00"))
    real = store.upsert_sums

    def refusing(machine, rows):
        if machine == "Refused":
            raise ValueError("bad machine name")
        return real(machine, rows)

    monkeypatch.setattr(store, "upsert_sums", refusing)
    rig.stats.add("Refused", "v", "VIB", [1.0, 2.0], rig.clock.seconds())
    rig.run(3)
    yield stop(rig, store)
    assert rig.stats.counters()["rows_refused"] == 5
    path = os.path.join(cfg.database.path, "ShotBlast.db")
    assert sums_of(path, "vib", "hour")[0] == 90


# -- names that differ only in case -------------------------------------------------------------

def _sensors_db(path, names):
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {schema.SENSORS_TABLE} (name TEXT PRIMARY KEY, type TEXT, "
                 f"mode TEXT, first_seen REAL, ord INTEGER)")
    conn.executemany(f"INSERT INTO {schema.SENSORS_TABLE} (name, ord) VALUES (?, ?)",
                     [(n, i) for i, n in enumerate(names)])
    conn.commit()
    conn.close()


@pytest_twisted.inlineCallbacks
def test_case_collisions_are_found_and_logged_at_start_not_merged(tmp_path, monkeypatch):
    log = Events(monkeypatch)
    cfg = config(tmp_path, ZONE)
    folder = cfg.database.path
    os.makedirs(folder)
    _sensors_db(os.path.join(folder, "M.db"), ["Vib", "temp", "vib", "Ärger", "ärger"])
    _sensors_db(os.path.join(folder, "Press.db"), ["a"])
    _sensors_db(os.path.join(folder, "press.db"), ["a"])
    found = schema.find_case_collisions(folder)
    assert found == [
        {"kind": "machine", "names": ["Press", "press"]},
        {"kind": "sensor", "machine": "M", "names": ["Vib", "vib"], "shared_tables": True},
        {"kind": "sensor", "machine": "M", "names": ["Ärger", "ärger"], "shared_tables": False},
    ]
    store = SQLiteStore(cfg, reactor)
    store.startService()
    yield store.replay_done
    while store.case_collisions is None:
        d = defer.Deferred()
        reactor.callLater(0.01, d.callback, None)
        yield d
    yield store.stopService()
    warned = [m for m in log.text("warn") if "differ only in case" in m]
    assert len(warned) == 3
    assert any("'Vib', 'vib'" in m and "share their statistics tables" in m for m in warned)
    assert any("'Press', 'press'" in m for m in warned)
    # Nothing was renamed or merged.
    names = db_rows(os.path.join(folder, "M.db"), f"SELECT name FROM {schema.SENSORS_TABLE}")
    assert sorted(n for (n,) in names) == sorted(["Vib", "temp", "vib", "Ärger", "ärger"])
    assert {"Press.db", "press.db"} <= set(os.listdir(folder))


def test_no_collisions_in_an_empty_or_missing_folder(tmp_path):
    assert schema.find_case_collisions(str(tmp_path / "nope")) == []
    assert schema.find_case_collisions(str(tmp_path)) == []
    _sensors_db(str(tmp_path / "M.db"), ["vib", "temp"])
    assert schema.case_collision_lines(str(tmp_path)) == []


def test_collision_lines_for_check_config(tmp_path):
    _sensors_db(str(tmp_path / "M.db"), ["Vib", "vib"])
    assert schema.case_collision_lines(str(tmp_path)) == [
        "machine 'M': sensors 'Vib', 'vib' differ only in case and share their statistics "
        "tables (SQLite ignores case there), so their rows are mixed; reported only, "
        "see docs/storage.md"]


@pytest_twisted.inlineCallbacks
def test_shutdown_timeout_spools_the_queue_and_a_commit_that_fails_after_it(
        tmp_path, monkeypatch):
    import threading

    log = Events(monkeypatch)
    cfg = config(tmp_path, ZONE)
    store = SQLiteStore(cfg, reactor)
    store.startService()
    gate = threading.Event()

    def stuck(conn, catalog, rows):
        gate.wait(20)
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setattr(sqlite_machine, "apply_sum_rows", stuck)
    row1 = ("v", "hour", 3600, 0, "h", 1, 1.0, 1.0, 1.0, 1.0, 1.0)
    row2 = ("v", "hour", 3600, 0, "h", 2, 2.0, 2.0, 1.0, 1.0, 2.0)
    store.upsert_sums("M", [row1])
    first = store.flush()  # running, stuck in its thread
    store.upsert_sums("M", [row2])  # queued behind it
    stopping = store.stopService()
    stopping.cancel()  # what SERVER.SHUTDOWN_TIMEOUT does
    yield stopping
    folder = spool.spool_dir(cfg.database.path)
    (name,) = spool_names(cfg)
    records, _ = spool.read_file(os.path.join(folder, name))
    assert [r["count"] for r in records] == [2]
    assert any("while 1 databases were committing" in m for m in log.text("error"))
    gate.set()
    yield first  # the stuck commit fails now: its rows are spooled too
    names = spool_names(cfg)
    assert len(names) == 2
    counts = sorted(r["count"] for n in names for r in spool.read_file(os.path.join(folder, n))[0])
    assert counts == [1, 2]
    assert store.counters()["spooled_rows"] == 2


@pytest_twisted.inlineCallbacks
def test_a_full_disk_makes_the_store_unhealthy(tmp_path, monkeypatch):
    Events(monkeypatch)
    cfg = config(tmp_path, ZONE)
    store = SQLiteStore(cfg, reactor)
    store.startService()

    def full(conn, catalog, rows):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sqlite_machine, "apply_sum_rows", full)
    store.upsert_sums("M", [("v", "hour", 3600, 0, "h", 1, 1.0, 1.0, 1.0, 1.0, 1.0)])
    yield store.flush()
    h = store.health()
    assert h["ok"] is False and h["state"] == "failing" and h["error"] == "the disk is full"
    monkeypatch.undo()
    Events(monkeypatch)
    yield store.flush()
    assert store.health()["ok"] is True
    yield store.stopService()


@pytest_twisted.inlineCallbacks
def test_the_replay_is_handed_to_the_writer_before_start_returns(tmp_path, monkeypatch):
    """Spooled transactions are queued on each writer thread during
    startService, so they run before any row that arrives afterwards."""
    Events(monkeypatch)
    cfg = config(tmp_path, ZONE)
    row = ("v", "hour", 3600, 0, "h", 2, 1.0, 3.0, -1.0, 2.0, 5.0)
    spool.write_records(spool.spool_dir(cfg.database.path),
                        spool.records_of("M", [("sums", [row])]), 3600.0)
    handed = []
    real = sqlite_machine.MachineDatabase.replay

    def replay(db, ops):
        handed.append((db.machine, ops))
        return real(db, ops)

    monkeypatch.setattr(sqlite_machine.MachineDatabase, "replay", replay)
    store = SQLiteStore(cfg, reactor)
    store.startService()
    assert handed == [("M", [("sums", [row])])]
    store.upsert_sums("M", [row])  # new data, committed after the replay
    yield store.flush()
    yield store.replay_done
    yield store.stopService()
    assert db_rows(os.path.join(cfg.database.path, "M.db"),
                   'SELECT "count", "min", "max" FROM "v_hour_avg"') == [(4, -1.0, 2.0)]


def test_overflowed_sums_and_odd_text_still_make_a_spool(tmp_path):
    inf = float("inf")
    ops = [("sums", [("v", "hour", 0, 0, "h", 2, 1e308, 1e308, 1e308, 1e308, inf)]),
           ("fault", "t\ud800", 1.0, 2.0, 1.0)]
    path = spool.write_records(str(tmp_path), spool.records_of("M", ops), 0.0)
    back, bad = spool.read_file(path)
    assert bad == 0
    assert [spool.op_of(r)[1] for r in back] == [("sums", [ops[0][1][0]]), ops[1]]
