"""The store contract (``tsrmon/store/contract.py``): the SQLite implementations
provide its interfaces, an upsert adds a delta, and the change feed says what
each commit touched."""

import sqlite3

import pytest_twisted
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from tests.web.conftest import make_config
from tsrmon.alarms.store import AlarmStore
from tsrmon.notify.records import AttemptRecords
from tsrmon.reader.sqlite_reader import SQLiteReader
from tsrmon.store import contract, tools
from tsrmon.store.deltas import merge_rows
from tsrmon.store.feed import FAULTS, SENSORS, Change, LocalChangeFeed, change_of
from tsrmon.store.filefeed import FileChangeFeed
from tsrmon.store.sqlite import SQLiteStore

T0 = 1_796_025_600  # 2026-12-01 10:00 Asia/Seoul


def row(sensor, level, t0, text, values, moments=None):
    n = len(values)
    out = (sensor, level, t0, 32400, text, n, float(sum(values)), float(sum(map(abs, values))),
           float(min(values)), float(max(values)), float(sum(v * v for v in values)))
    if moments is not None:
        ref = moments
        out += (n, ref) + tuple(float(sum((v - ref) ** k for v in values)) for k in (1, 2, 3, 4))
    return out


def test_the_sqlite_implementations_provide_the_contract(tmp_path):
    cfg = make_config(tmp_path)
    store = SQLiteStore(cfg, reactor)
    for iface in (contract.IAggregateStore, contract.ISpectraStore, contract.ISpool):
        assert verifyObject(iface, store)
    assert verifyObject(contract.IChangeFeed, store.feed)
    reader = SQLiteReader(cfg, reactor, feed=store.feed)
    assert verifyObject(contract.IStatsReader, reader)
    assert verifyObject(contract.IAnalyticsReader, reader)
    assert reader.feed is store.feed
    alone = SQLiteReader(cfg, reactor)
    assert isinstance(alone.feed, FileChangeFeed) and verifyObject(contract.IChangeFeed, alone.feed)
    assert verifyObject(contract.IAlarmTable, AlarmStore(str(tmp_path), reactor))
    assert verifyObject(contract.IAttemptTable, AttemptRecords(str(tmp_path), reactor))
    assert verifyObject(contract.IStoreTools, tools)


@pytest_twisted.inlineCallbacks
def test_an_upsert_adds_a_delta_two_deltas_equal_their_merge(tmp_path):
    cfg = make_config(tmp_path)
    store = SQLiteStore(cfg, reactor)
    store.startService()
    text = "2026-12-01 10:00:00"
    a = row("vib", "hour", T0, text, [1.0, -2.0, 3.5], moments=0.5)
    b = row("vib", "hour", T0, text, [4.0, 0.25], moments=0.5)
    try:
        for machine in ("Apart", "Merged"):
            store.ensure_sensor(machine, "vib", "VIB", "ABS")
        store.upsert_sums("Apart", [a])
        yield store.flush()
        store.upsert_sums("Apart", [b])
        store.upsert_sums("Merged", [merge_rows(a, b)])
        yield store.flush()
    finally:
        yield store.stopService()
    got = {}
    for machine in ("Apart", "Merged"):
        conn = sqlite3.connect(store.path_of(machine))
        got[machine] = conn.execute(
            'SELECT time, data, t0, utc_offset, "count", "sum", "sum_abs", "min", "max", "sum_sq", '
            'mcount, s1, s2, s3, s4 FROM "vib_hour_avg"').fetchall()
        conn.close()
    assert got["Apart"] == got["Merged"]
    assert store.known_machines() == ["Apart", "Merged"] and store.known_sensors("Apart") == ["vib"]
    (r,) = got["Apart"]
    assert r[4:10] == (5, 6.75, 10.75, -2.0, 4.0, 1 + 4 + 12.25 + 16 + 0.0625)
    assert r[1] == 10.75 / 5 and r[10] == 5


def test_change_of_names_machine_kinds_and_spans():
    ops = [("sensor", "vib", "VIB", "ABS", 0.0),
           ("sums", [row("vib", "hour", T0, "2026-12-01 10:00:00", [1.0]),
                     row("vib", "hour", T0 + 86400, "2026-12-02 10:00:00", [1.0]),
                     row("vib", "day", T0 - 36000, "2026-12-01 00:00:00", [1.0])]),
           ("fault", "2026-12-01 10:00:01", T0 + 1.0, 0.9, 0.5),
           ("prune", T0 - 7 * 86400)]
    change = change_of("M", ops)
    assert change.machine == "M" and not change.everything
    assert change.spans[("vib", "hour")] == (T0, T0 + 86400, "2026-12-01", "2026-12-02")
    assert change.days("vib", "hour") == ("2026-12-01", "2026-12-02")
    assert change.spans[("vib", "day")] == (T0 - 36000, T0 - 36000, "2026-12-01", "2026-12-01")
    assert change.spans[(None, FAULTS)] == (T0 + 1.0, T0 + 1.0, "2026-12-01", "2026-12-01")
    assert ("vib", SENSORS) in change.spans and change.spans[(None, "minute")][1] == T0 - 7 * 86400
    assert change_of("M", []) is None


def test_the_local_feed_calls_every_subscriber_and_survives_a_failing_one():
    feed = LocalChangeFeed()
    got = []

    def broken(change):
        raise RuntimeError("subscriber bug")

    feed.subscribe(broken)
    feed.subscribe(got.append)
    feed.subscribe(got.append)  # once only
    feed.publish(Change("M", everything=True))
    assert got == [Change("M", everything=True)]
    feed.unsubscribe(got.append)
    feed.publish(Change("M", everything=True))
    assert len(got) == 1


def test_the_file_feed_publishes_a_foreign_commit_once(tmp_path):
    folder = tmp_path / "db"
    folder.mkdir()
    feed = FileChangeFeed(str(folder))
    got = []
    feed.subscribe(got.append)
    feed.catch_up("M")  # no file yet
    conn = sqlite3.connect(folder / "M.db")
    conn.execute("CREATE TABLE t (a)")
    conn.commit()
    feed.catch_up("M")  # first look: nothing is known to have changed
    assert got == []
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    feed.catch_up("M")
    feed.catch_up("M")
    assert got == [Change("M", everything=True)]
    conn.close()
    feed.close()


def _imports(path):
    import ast
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_the_reader_and_the_writer_meet_only_through_the_contract_and_the_feed():
    import pathlib

    import tsrmon
    root = pathlib.Path(tsrmon.__file__).parent
    writer = ("tsrmon.store.sqlite", "tsrmon.store.sqlite_machine", "tsrmon.store.sqlite_upsert",
              "tsrmon.store.sqlite_spectra", "tsrmon.store.sqlite_tools", "tsrmon.store.deltas",
              "tsrmon.store.migrate", "tsrmon.store.spool", "tsrmon.store.tools")
    for path in (root / "reader").glob("*.py"):
        bad = {m for m in _imports(path) if m in writer}
        assert not bad, f"{path.name} imports writer code {bad}"
    for path in (root / "store").glob("*.py"):
        if path.name == "reader.py":
            continue  # the re-export shim for callers not yet moved
        bad = {m for m in _imports(path) if m.startswith("tsrmon.reader")}
        assert not bad, f"{path.name} imports the reader {bad}"
