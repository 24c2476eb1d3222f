"""What only the shared PostgreSQL store must do: nodes writing the same
buckets at once lose nothing, a node hears another's commits, a newer
schema and another TIME.ZONE are refused, minute partitions come and go."""

import os

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.store.pg_fixtures import fresh_database
from tests.store.test_contract_backends import row
from tests.web.conftest import make_config
from tsrmon.config import ConfigError
from tsrmon.reader.pg_reader import PgReader
from tsrmon.store.backends import build_store
from tsrmon.store.postgres import schema
from tsrmon.store.postgres.feed import PgChangeFeed
from tsrmon.store.postgres.store import PostgresStore

T0 = 1_796_025_600


@pytest.fixture
def pg(tmp_path):
    dsn, drop = fresh_database()
    cfg = make_config(tmp_path).replace(database={"backend": "postgresql", "dsn": dsn})
    yield cfg, dsn
    drop()


@defer.inlineCallbacks
def _stop(*services):
    for s in services:
        yield defer.maybeDeferred(s.stopService)


@pytest.mark.timeout(120)
@pytest_twisted.inlineCallbacks
def test_two_nodes_upserting_the_same_buckets_at_once_lose_nothing(pg):
    cfg, dsn = pg
    a = PostgresStore(cfg, reactor).prepare()
    b = PostgresStore(cfg, reactor).prepare()
    a.startService()
    b.startService()
    try:
        for s in (a, b):
            s.ensure_sensor("M", "vib", "VIB", "REAL")
        rounds, buckets = 20, 50
        for i in range(rounds):
            for s, v in ((a, 1.0), (b, -2.0)):
                s.upsert_sums("M", [row("vib", "hour", T0 + k * 3600, f"t{k}", [v, v * i])
                                    for k in range(buckets)])
            # Both transactions in flight together, on two connections.
            yield defer.gatherResults([a.flush(), b.flush()])
        assert a.failed_transactions == b.failed_transactions == 0
        with psycopg.connect(dsn) as conn:
            got = conn.execute("SELECT count(*), sum(count), min(count), max(count), sum(sum), "
                               "min(min), max(max) FROM stat_hour WHERE machine = 'M'").fetchone()
        total = sum(1.0 + i - 2.0 - 2.0 * i for i in range(rounds)) * buckets
        assert got[:4] == (buckets, 4 * rounds * buckets, 4 * rounds, 4 * rounds)
        assert got[4] == pytest.approx(total)
        assert (got[5], got[6]) == (-2.0 * (rounds - 1), 1.0 * (rounds - 1))
    finally:
        yield _stop(a, b)


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_a_node_hears_another_nodes_commits_and_its_cache_follows(pg):
    cfg, dsn = pg
    feed_a = PgChangeFeed(dsn, reactor)
    feed_b = PgChangeFeed(dsn, reactor).start()
    a = PostgresStore(cfg, reactor, feed=feed_a).prepare()
    reader_b = PgReader(cfg, reactor, feed_b)
    reader_b.warm_hour_cache = False
    heard = []
    feed_b.subscribe(heard.append)
    a.startService()
    reader_b.startService()
    try:
        for _ in range(100):
            if feed_b.connected.is_set():
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        a.ensure_sensor("M", "vib", "VIB", "REAL")
        a.upsert_sums("M", [row("vib", "hour", T0, "2026-11-30 17:00:00", [1.0])])
        yield a.flush()
        first = yield reader_b.stats("M", "hour", align=False)
        a.upsert_sums("M", [row("vib", "hour", T0, "2026-11-30 17:00:00", [5.0])])
        yield a.flush()
        for _ in range(100):
            if len(heard) >= 2:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert [c.machine for c in heard] == ["M", "M"]
        assert heard[-1].spans[("vib", "hour")][2:] == ("2026-11-30", "2026-11-30")
        second = yield reader_b.stats("M", "hour", align=False)
        assert first[0].chunks[0].items[0][5] == 1
        assert second[0].chunks[0].items[0][5] == 2
        assert second[0].chunks[0].items[0][1] == pytest.approx(3.0)
    finally:
        yield _stop(reader_b, a)
        feed_a.close()
        feed_b.close()


@pytest.mark.timeout(60)
def test_a_newer_schema_and_another_time_zone_are_refused(pg, tmp_path):
    cfg, dsn = pg
    PostgresStore(cfg, reactor).prepare()
    other = cfg.replace(time={"zone": "Europe/Berlin"})
    with pytest.raises(ConfigError) as e:
        build_store(other, reactor)
    assert "TIME.ZONE is Europe/Berlin but the PostgreSQL store records Asia/Seoul" in str(e.value)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (schema.SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError) as e:
        build_store(cfg, reactor)
    assert f"schema version {schema.SCHEMA_VERSION + 1}, newer than this tsrmon knows" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_minute_partitions_are_made_ahead_and_dropped_past_retention(pg):
    cfg, dsn = pg
    clock = task.Clock()
    clock.advance(T0)
    store = PostgresStore(cfg, reactor, clock=clock).prepare()
    store.startService()
    try:
        yield store.maintain()
        old = T0 - 10 * 86400
        store.ensure_sensor("M", "vib", "VIB", "REAL")
        store.upsert_sums("M", [row("vib", "minute", old, "old", [1.0]),
                                row("vib", "minute", T0, "now", [2.0])])
        yield store.flush()
        with psycopg.connect(dsn) as conn:
            names = {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'stat_minute_p%' "
                                                "AND relkind = 'r'")}
        assert schema.partition_of("minute", old)[0] in names
        for i in range(4):
            assert schema.partition_of("minute", T0 + i * 86400)[0] in names
        assert schema.partition_of("hour", T0 + 40 * 86400)[0] in {
            r[0] for r in psycopg.connect(dsn).execute("SELECT relname FROM pg_class")}
        yield store.maintain()   # retention: 7 days (make_config's default)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT time FROM stat_minute ORDER BY t0").fetchall() == [("now",)]
    finally:
        yield _stop(store)


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_rows_of_an_unreachable_store_are_kept_spooled_and_replayed(pg):
    cfg, dsn = pg
    away = PostgresStore(cfg, reactor, dsn="postgresql://postgres@127.0.0.1:1/none")
    away.startService()
    try:
        away.ensure_sensor("M", "vib", "VIB", "REAL")
        away.upsert_sums("M", [row("vib", "hour", T0, "2026-11-30 17:00:00", [1.0, 2.0])])
        yield away.flush()
        away.upsert_sums("M", [row("vib", "hour", T0, "2026-11-30 17:00:00", [3.0])])
        yield away.flush()
        assert away.failing is not None and not away.healthy()
        assert away.health()["state"] == "failing"
        assert away.queued_rows == 2     # compacted: the sensor and one bucket
    finally:
        yield _stop(away)
    assert away.spooled_rows == 2
    back = PostgresStore(cfg, reactor).prepare()
    back.startService()
    try:
        yield back.replay_done
        assert back.replayed_rows == 2
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count, sum FROM stat_hour").fetchall() == [(3, 6.0)]
    finally:
        yield _stop(back)


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_a_feed_that_lost_its_connection_reconnects_and_says_everything_changed(pg):
    cfg, dsn = pg
    store = PostgresStore(cfg, reactor).prepare()
    store.startService()
    feed = PgChangeFeed(dsn, reactor, poll=0.2).start()
    heard = []
    feed.subscribe(heard.append)
    try:
        store.ensure_sensor("M", "vib", "VIB", "REAL")
        yield store.flush()
        for _ in range(100):
            if feed.connected.is_set():
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            killed = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE query LIKE 'LISTEN%%' AND datname = current_database()").fetchall()
        assert killed == [(True,)]
        for _ in range(200):
            if any(c.everything for c in heard):
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert [(c.machine, c.everything) for c in heard if c.everything] == [("M", True)]
    finally:
        feed.close()
        yield _stop(store)


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_a_partition_dropped_by_another_node_is_made_again_at_the_retry(pg):
    cfg, dsn = pg
    store = PostgresStore(cfg, reactor).prepare()
    store.startService()
    try:
        store.ensure_sensor("M", "vib", "VIB", "REAL")
        store.upsert_sums("M", [row("vib", "minute", T0, "a", [1.0])])
        yield store.flush()
        name = schema.partition_of("minute", T0)[0]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {name}")    # another node's retention
        store.upsert_sums("M", [row("vib", "minute", T0, "a", [2.0])])
        yield store.flush()
        assert store.failing is not None          # this node still thought it existed
        yield store.flush()                       # the retry re-reads the partitions
        assert store.failing is None
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count, sum FROM stat_minute").fetchall() == [(1, 2.0)]
    finally:
        yield _stop(store)


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_backup_is_a_pg_dump_that_restores(pg, tmp_path):
    import shutil
    import subprocess

    from tests.conftest import require_service
    from tsrmon.store.contract import ToolError
    from tsrmon.store.postgres.backup import backup

    require_service(shutil.which("pg_dump") and shutil.which("pg_restore"), "pg_dump/pg_restore not installed")
    cfg, dsn = pg
    store = PostgresStore(cfg, reactor).prepare()
    store.startService()
    try:
        store.ensure_sensor("M", "vib", "VIB", "REAL")
        store.upsert_sums("M", [row("vib", "hour", T0, "a", [1.0, 2.0])])
        yield store.flush()
    finally:
        yield _stop(store)
    [path] = backup(cfg, str(tmp_path / "bk"))
    assert os.path.basename(path).startswith("tsrmon-") and path.endswith(".dump")
    other, drop = fresh_database()
    try:
        subprocess.run(["pg_restore", f"--dbname={other}", path], check=True, capture_output=True)
        with psycopg.connect(other) as conn:
            assert conn.execute("SELECT count, sum FROM stat_hour").fetchall() == [(2, 3.0)]
    finally:
        drop()
    with pytest.raises(ToolError) as e:
        backup(cfg.replace(database={"dsn": "postgresql://nobody@127.0.0.1:1/none"}), str(tmp_path / "x"))
    assert str(e.value).startswith("pg_dump failed:") and "\n" not in str(e.value)


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_the_store_records_which_node_fed_which_machine_day(pg):
    cfg, dsn = pg
    a = PostgresStore(cfg.replace(cluster={"node": "node1"}), reactor).prepare()
    b = PostgresStore(cfg.replace(cluster={"node": "node2"}), reactor).prepare()
    a.startService()
    b.startService()
    try:
        a.upsert_sums("M", [row("vib", "minute", T0, "2026-11-30 17:00:00", [1.0]),
                            row("vib", "hour", T0, "2026-11-30 17:00:00", [1.0])])
        a.record_fault("M", 2.0, 1.0, T0)
        b.upsert_sums("M", [row("vib", "minute", T0 + 86400, "2026-12-01 17:00:00", [1.0])])
        b.upsert_sums("M", [row("vib", "minute", T0 + 60, "2026-11-30 17:01:00", [1.0])])
        yield defer.gatherResults([a.flush(), b.flush()])
        assert (yield a.fed_days("M")) == {"2026-11-30": ["node1", "node2"], "2026-12-01": ["node2"]}
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT node FROM fault_detect").fetchall() == [("node1",)]
    finally:
        yield _stop(a, b)


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_a_node_starts_while_postgresql_is_away_and_queues(pg):
    cfg, _dsn = pg
    away = cfg.replace(database={"dsn": "postgresql://postgres@127.0.0.1:1/none"})
    store, feed = build_store(away, reactor)      # no ConfigError: PostgreSQL just does not answer
    assert store.known_machines() == []
    store.startService()
    try:
        store.upsert_sums("M", [row("vib", "hour", T0, "2026-11-30 17:00:00", [1.0])])
        yield store.flush()
        health = store.health()
        assert health["state"] == "failing" and health["error"]
        assert store.queued_rows == 1
    finally:
        yield _stop(store)
    assert store.spooled_rows == 1


@pytest.mark.timeout(120)
@pytest_twisted.inlineCallbacks
def test_two_nodes_adding_the_same_buckets_in_opposite_orders_never_deadlock(pg):
    cfg, dsn = pg
    a = PostgresStore(cfg, reactor).prepare()
    b = PostgresStore(cfg, reactor).prepare()
    a.startService()
    b.startService()
    try:
        rows = [row(s, "hour", T0 + k * 3600, f"t{k}", [1.0]) for s in ("vib", "temp") for k in range(40)]
        for _ in range(10):
            a.upsert_sums("M", rows)
            b.upsert_sums("M", rows[::-1])
            yield defer.gatherResults([a.flush(), b.flush()])
        assert a.failed_transactions == b.failed_transactions == 0
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT min(count), max(count), count(*) FROM stat_hour").fetchone() == (20, 20, 80)
    finally:
        yield _stop(a, b)
