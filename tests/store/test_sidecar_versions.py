"""The side databases (.alarms.sqlite, .notifications.sqlite) carry a schema
version like the machine databases: fresh files, unversioned files from
before versions, files newer than the code, and a migration step with its
backup."""

import os
import sqlite3

import pytest
import pytest_twisted
from twisted.internet import reactor

from tsrmon.alarms.store import AlarmStore
from tsrmon.notify.records import AttemptRecords
from tsrmon.store import sidecar

T0 = 1_780_000_000.0

# The DDL the unversioned files were written with (before versions), copied
# here on purpose: the test must not follow later edits of the code's DDL.
OLD_ALARMS_DDL = (
    """CREATE TABLE IF NOT EXISTS alarms (
        id TEXT PRIMARY KEY, rule TEXT NOT NULL, kind TEXT NOT NULL, machine TEXT NOT NULL,
        sensor TEXT NOT NULL, stype TEXT, metric TEXT, severity TEXT NOT NULL, level REAL,
        clear_level REAL, message TEXT, state TEXT NOT NULL, raised_t REAL NOT NULL, value REAL,
        peak REAL, cleared_t REAL, clear_reason TEXT, acked_t REAL, acked_by TEXT)""",
    "CREATE INDEX IF NOT EXISTS alarms_raised_t ON alarms(raised_t)",
    "CREATE INDEX IF NOT EXISTS alarms_state ON alarms(state)",
)
OLD_NOTIFICATIONS_DDL = (
    """CREATE TABLE IF NOT EXISTS notification_attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, event_id TEXT NOT NULL,
        event_t REAL, machine TEXT NOT NULL, kind TEXT NOT NULL, channel TEXT NOT NULL,
        target TEXT NOT NULL, result TEXT NOT NULL, attempts INTEGER NOT NULL,
        suppressed INTEGER NOT NULL, error TEXT, title TEXT, body TEXT)""",
    "CREATE INDEX IF NOT EXISTS notification_attempts_t ON notification_attempts(t)",
)


def _write(path, statements, rows=()):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    for sql, args in rows:
        conn.execute(sql, args)
    conn.commit()
    conn.close()


def _version(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version FROM tsrmon_schema").fetchall()
    finally:
        conn.close()


OLD_ALARM_ROW = (
    "INSERT INTO alarms (id, rule, kind, machine, sensor, severity, state, raised_t) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ("a1", "hot", "threshold", "m1", "s1", "warning", "active", T0 - 60))
OLD_ATTEMPT_ROW = (
    "INSERT INTO notification_attempts (t, event_id, machine, kind, channel, target, result, "
    "attempts, suppressed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    (T0 - 60, "e1", "m1", "anomaly", "webhook", "ops", "sent", 1, 0))


@pytest_twisted.inlineCallbacks
def test_fresh_alarm_file_gets_version_1(tmp_path):
    store = AlarmStore(str(tmp_path / "db"), reactor)
    active = yield store.open(T0)
    yield store.close()
    assert active == [] and store.error is None
    assert _version(store.path) == [(1,)]


@pytest_twisted.inlineCallbacks
def test_unversioned_alarm_file_is_version_1_and_keeps_its_rows(tmp_path):
    folder = str(tmp_path / "db")
    path = os.path.join(folder, ".alarms.sqlite")
    _write(path, OLD_ALARMS_DDL, [OLD_ALARM_ROW])
    store = AlarmStore(folder, reactor)
    active = yield store.open(T0)
    yield store.close()
    assert [(a.id, a.machine, a.state) for a in active] == [("a1", "m1", "active")]
    assert _version(path) == [(1,)]
    # Recognising version 1 changes no table: nothing to back up.
    assert not os.path.exists(os.path.join(folder, "backups"))


@pytest_twisted.inlineCallbacks
def test_newer_alarm_file_is_refused_and_left_alone(tmp_path):
    folder = str(tmp_path / "db")
    path = os.path.join(folder, ".alarms.sqlite")
    _write(path, OLD_ALARMS_DDL + ("CREATE TABLE tsrmon_schema (version INTEGER NOT NULL)",),
           [OLD_ALARM_ROW, ("INSERT INTO tsrmon_schema VALUES (?)", (7,))])
    store = AlarmStore(folder, reactor)
    active = yield store.open(T0)
    assert active == []
    assert store.error == (f"{path}: schema version 7 is newer than this tsrmon understands (1); "
                           f"not opened (upgrade tsrmon or move the file away)")
    assert "\n" not in store.error
    # History says why; the file keeps its version and rows.
    with pytest.raises(RuntimeError, match="schema version 7 is newer"):
        yield store.query(0, T0)
    yield store.close()
    assert _version(path) == [(7,)]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT id, state FROM alarms").fetchall() == [("a1", "active")]
    conn.close()


@pytest_twisted.inlineCallbacks
def test_fresh_notification_file_gets_version_1(tmp_path):
    records = AttemptRecords(str(tmp_path / "db"), reactor)
    yield records.open(T0)
    yield records.add({"t": T0, "event_id": "e", "machine": "m", "kind": "k", "channel": "fcm",
                       "target": "topic:x", "result": "sent", "attempts": 1, "suppressed": 0})
    rows = yield records.query(0, T0 + 1)
    records.close()
    assert records.error is None and [r["event_id"] for r in rows] == ["e"]
    assert _version(records.path) == [(1,)]


@pytest_twisted.inlineCallbacks
def test_unversioned_notification_file_is_version_1_and_keeps_its_rows(tmp_path):
    folder = str(tmp_path / "db")
    path = os.path.join(folder, ".notifications.sqlite")
    _write(path, OLD_NOTIFICATIONS_DDL, [OLD_ATTEMPT_ROW])
    records = AttemptRecords(folder, reactor)
    yield records.open(T0)
    rows = yield records.query(0, T0)
    records.close()
    assert records.error is None
    assert [(r["event_id"], r["target"], r["result"]) for r in rows] == [("e1", "ops", "sent")]
    assert _version(path) == [(1,)]


@pytest_twisted.inlineCallbacks
def test_newer_notification_file_is_refused(tmp_path):
    folder = str(tmp_path / "db")
    path = os.path.join(folder, ".notifications.sqlite")
    _write(path, OLD_NOTIFICATIONS_DDL + ("CREATE TABLE tsrmon_schema (version INTEGER NOT NULL)",),
           [OLD_ATTEMPT_ROW, ("INSERT INTO tsrmon_schema VALUES (?)", (2,))])
    records = AttemptRecords(folder, reactor)
    yield records.open(T0)
    assert records.error == (f"{path}: schema version 2 is newer than this tsrmon understands (1); "
                             f"not opened (upgrade tsrmon or move the file away)")
    assert records.add({"t": T0}) is None and records.failed == 1
    records.close()
    assert _version(path) == [(2,)]


def test_a_later_step_backs_up_then_migrates(tmp_path):
    """The mechanism a version 2 will use: steps after the file's version run
    in order, after an online copy of the file to backups/."""
    path = str(tmp_path / ".side.sqlite")
    v1 = ("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)",)
    _write(path, v1, [("INSERT INTO things (name) VALUES (?)", ("old",))])
    two = sidecar.SidecarSchema("things", ((1, v1), (2, ("ALTER TABLE things ADD COLUMN size REAL",))))
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        old, copy = sidecar.prepare(conn, path, two)
        assert (old, os.path.dirname(copy)) == (1, str(tmp_path / "backups"))
        assert conn.execute("SELECT name, size FROM things").fetchall() == [("old", None)]
        assert sidecar.prepare(conn, path, two) == (2, None)  # idempotent
    finally:
        conn.close()
    assert _version(path) == [(2,)]
    backup = sqlite3.connect(copy)
    try:  # the copy is the file as it was before the step
        assert [r[1] for r in backup.execute("PRAGMA table_info(things)")] == ["id", "name"]
    finally:
        backup.close()


def test_migrations_must_be_numbered_from_1():
    with pytest.raises(ValueError, match="numbered 1, 2"):
        sidecar.SidecarSchema("t", ((1, ()), (3, ())))


@pytest_twisted.inlineCallbacks
def test_a_write_queued_before_the_check_does_not_reach_a_newer_file(tmp_path):
    folder = str(tmp_path / "db")
    path = os.path.join(folder, ".notifications.sqlite")
    _write(path, OLD_NOTIFICATIONS_DDL + ("CREATE TABLE tsrmon_schema (version INTEGER NOT NULL)",),
           [OLD_ATTEMPT_ROW, ("INSERT INTO tsrmon_schema VALUES (?)", (2,))])
    records = AttemptRecords(folder, reactor)
    opened = records.open(T0)
    # Issued before the version check has answered: it queues behind it.
    write = records.add({"t": T0, "event_id": "late", "machine": "m", "kind": "k", "channel": "fcm",
                         "target": "topic:x", "result": "sent", "attempts": 1, "suppressed": 0})
    yield opened
    yield write
    records.close()
    assert records.failed == 1 and records.written == 0
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT event_id FROM notification_attempts")] == ["e1"]
    conn.close()
