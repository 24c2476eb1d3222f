"""SQLiteReader: files, read-only opening, minute rows for the live cache, the hour cache."""

import os
import sqlite3
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.web.dbs import create_machine_db, fill_from_messages, insert_bucket
from tests.web.test_app_calls import T0
from tsrmon.stats.sums import PartialSums
from tsrmon.reader.sqlite_reader import SQLiteReader
from tsrmon.store.filefeed import FileChangeFeed

TZ = ZoneInfo("Asia/Seoul")


class FakeTime:
    """Just the clock part of a reactor, for the synchronous internals."""

    def __init__(self, t):
        self.t = t

    def seconds(self):
        return self.t


@pytest_twisted.inlineCallbacks
def test_recent_minutes_rebuild_the_live_cache(config, db_dir, expected_json):
    messages = expected_json["session.bin"]["messages"][1:]
    made = fill_from_messages(os.path.join(db_dir, "ShotBlast.db"), messages, T0, "Asia/Seoul")
    r = SQLiteReader(config, reactor)
    r.startService()
    try:
        rows = yield r.recent_minutes("ShotBlast", T0)
        assert [(s, st, t0) for s, st, t0, _ in rows] == [
            ("shot_blast_vib1", "VIB", T0), ("shot_blast_vib2", "VIB", T0), ("oil_temp", "TEMP", T0),
            ("shot_blast_vib1", "VIB", T0 + 60), ("shot_blast_vib2", "VIB", T0 + 60),
            ("oil_temp", "TEMP", T0 + 60)]
        for sensor, _stype, t0, sums in rows:
            text = datetime.fromtimestamp(t0, TZ).strftime("%Y-%m-%d %H:%M:%S")
            assert sums == made["buckets"][(sensor, "minute", text)]
        later = yield r.recent_minutes("ShotBlast", T0 + 60)
        assert len(later) == 3
        assert (yield r.recent_minutes("Ghost", T0)) == []
        assert (yield r.recent_minutes("진공펌프1", T0)) == []
    finally:
        r.stopService()


def test_machine_files_never_built_from_invalid_names(config):
    r = SQLiteReader(config, reactor)
    for bad in ["../x", "a/b", "", ".x", "a\x00b"]:
        with pytest.raises(ValueError):
            r.db_path(bad)
    assert r.list_machines() == []  # DATABASE.PATH does not exist


def test_wal_database_read_only(config, db_dir):
    path = os.path.join(db_dir, "W.db")
    conn = create_machine_db(path, [("a", "VIB")])
    conn.execute("PRAGMA journal_mode=WAL")
    insert_bucket(conn, "a", "hour", datetime(2026, 11, 3, 4, tzinfo=TZ), PartialSums.of([2.0]), "ABS")
    conn.commit()
    r = SQLiteReader(config, FakeTime(T0))
    # While the writer holds the file open (WAL and shm exist) ...
    series = r._stats("W", "hour", None, None, True)
    assert [list(s.items()) for s in series] == [[("2026-11-03 04:00:00", 2.0, 2.0, 2.0, 2.0, 1)]]
    with pytest.raises(sqlite3.OperationalError):
        r._connect("W")[0].execute("CREATE TABLE x (a)")
    conn.close()
    # ... and after it closed them.
    r2 = SQLiteReader(config, FakeTime(T0))
    assert len(list(r2._stats("W", "hour", None, None, True)[0].items())) == 1


def test_a_commit_by_another_writer_is_seen_at_once_in_every_month(config, db_dir):
    """A reader on its own follows a FileChangeFeed: any commit by another
    connection is a change of unknown extent, so every month is re-checked."""
    path = os.path.join(db_dir, "M.db")
    conn = create_machine_db(path, [("a", "VIB")])
    for month in (1, 11):
        insert_bucket(conn, "a", "hour", datetime(2026, month, 3, 4, tzinfo=TZ), PartialSums.of([1.0]), "ABS")
    conn.commit()
    now = FakeTime(datetime(2026, 11, 20, tzinfo=TZ).timestamp())
    r = SQLiteReader(config, now)
    assert isinstance(r.feed, FileChangeFeed)
    data = lambda: [it[1] for s in r._stats("M", "hour", None, None, True) for it in s.items()]  # noqa: E731
    assert data() == [1.0, 1.0]
    # Upserts as a writer does them: more samples, data recomputed from the sums.
    conn.execute('UPDATE "a_hour_avg" SET data = 5.0, count = 2, sum = 10.0, sum_abs = 10.0 '
                 "WHERE time LIKE '2026-11%'")
    conn.execute('UPDATE "a_hour_avg" SET data = 3.0, count = 2, sum = 6.0, sum_abs = 6.0 '
                 "WHERE time LIKE '2026-01%'")
    conn.commit()
    assert data() == [3.0, 5.0]
    # A file put in its place (a restore) is another database.
    conn.close()
    os.replace(path, path + ".old")
    conn = create_machine_db(path, [("a", "VIB")])
    insert_bucket(conn, "a", "hour", datetime(2026, 2, 3, 4, tzinfo=TZ), PartialSums.of([7.0]), "ABS")
    conn.commit()
    assert data() == [7.0]
    conn.close()
