"""The reader's hour cache follows the writer's change feed, and only it
(the daemon builds ``SQLiteReader(config, reactor, feed=store.feed)``)."""

import datetime
import sqlite3
import zoneinfo

import pytest_twisted
from twisted.internet import reactor

from tests.web.conftest import make_config
from tsrmon.reader import hourcache
from tsrmon.reader.sqlite_reader import SQLiteReader
from tsrmon.store.feed import Change
from tsrmon.store.sqlite import SQLiteStore


def hour_row(sensor, hour, n, total):
    t0 = 1_795_000_000 - 1_795_000_000 % 3600 + hour * 3600
    local = datetime.datetime.fromtimestamp(t0, zoneinfo.ZoneInfo("Asia/Seoul"))
    text = local.strftime("%Y-%m-%d %H:00:00")
    return (sensor, "hour", t0, 32400, text, n, total, abs(total), total / n, total / n, total * total / n)


def as_pairs(series):
    return [(s.name, [(it[0], it[1]) for it in s.items()]) for s in series]


def values(series):
    return dict((it[0], it[1]) for it in series.items())


@pytest_twisted.inlineCallbacks
def fresh_read(cfg):
    fresh = SQLiteReader(cfg, reactor)
    fresh.warm_hour_cache = False
    fresh.startService()
    try:
        got = yield fresh.stats("M", "hour", None, None, False)
    finally:
        yield fresh.stopService()
    return got


def started_store_and_reader(cfg):
    """A started SQLite store and a started reader following its feed (no warming)."""
    store = SQLiteStore(cfg, reactor)
    store.startService()
    reader = SQLiteReader(cfg, reactor, feed=store.feed)
    reader.warm_hour_cache = False
    reader.startService()
    return store, reader


@pytest_twisted.inlineCallbacks
def test_reported_commits_patch_the_cache_and_match_a_fresh_read(tmp_path, monkeypatch):
    cfg = make_config(tmp_path)
    store, reader = started_store_and_reader(cfg)
    try:
        for sensor in ("vib1", "vib2"):
            store.ensure_sensor("M", sensor, "VIB", "ABS")
        store.upsert_sums("M", [hour_row("vib1", h, 10, 5.0) for h in range(30)]
                          + [hour_row("vib2", h, 10, 7.0) for h in range(30)])
        yield store.flush()
        before = yield reader.stats("M", "hour", None, None, False)
        assert len(list(before[0].items())) == 30

        # only the reported days are re-served: no month re-checked
        rechecked = []
        real = hourcache.recheck
        monkeypatch.setattr(hourcache, "recheck", lambda *a: (rechecked.append(a[4]), real(*a))[1])
        # the writer adds to an existing hour and opens a new one
        store.upsert_sums("M", [hour_row("vib1", 29, 10, 15.0), hour_row("vib1", 30, 4, 2.0)])
        yield store.flush()
        after = yield reader.stats("M", "hour", None, None, False)
        last = hour_row("vib1", 29, 1, 1.0)[4]
        assert values(after[0])[last] == (5.0 + 15.0) / 20  # mean |x| of the merged hour
        assert len(list(after[0].items())) == 31 and len(list(after[1].items())) == 30
        assert rechecked == []
        assert as_pairs(after) == as_pairs((yield fresh_read(cfg)))
    finally:
        yield reader.stopService()
        yield store.stopService()


@pytest_twisted.inlineCallbacks
def test_the_cache_changes_only_through_the_feed(tmp_path):
    cfg = make_config(tmp_path)
    store, reader = started_store_and_reader(cfg)
    seen = []
    store.feed.subscribe(seen.append)
    try:
        store.ensure_sensor("M", "vib1", "VIB", "ABS")
        store.upsert_sums("M", [hour_row("vib1", h, 10, 5.0) for h in range(3)])
        yield store.flush()
        text = hour_row("vib1", 2, 1, 1.0)[4]
        assert values((yield reader.stats("M", "hour", None, None, False))[0])[text] == 0.5
        # the writer's commit was published: machine, level and span
        span = seen[-1].spans[("vib1", "hour")]
        assert seen[-1].machine == "M" and span[0] == hour_row("vib1", 0, 1, 1.0)[2]
        assert span[1] == hour_row("vib1", 2, 1, 1.0)[2] and span[2] == span[3] == text[:10]

        # A commit nobody publishes (another connection) is not seen ...
        conn = sqlite3.connect(store.path_of("M"))
        conn.execute('UPDATE "vib1_hour_avg" SET sum_abs = 90.0 WHERE time = ?', (text,))
        conn.commit()
        conn.close()
        assert values((yield reader.stats("M", "hour", None, None, False))[0])[text] == 0.5
        # ... until the feed tells of it.
        store.feed.publish(Change("M", {("vib1", "hour"): (0, 0, text[:10], text[:10])}))
        assert values((yield reader.stats("M", "hour", None, None, False))[0])[text] == 9.0

        # A writer commit the reader is not subscribed to is not seen either.
        store.feed.unsubscribe(reader._changed)
        store.upsert_sums("M", [hour_row("vib1", 2, 10, 5.0)])
        yield store.flush()
        assert values((yield reader.stats("M", "hour", None, None, False))[0])[text] == 9.0
        # A change of unknown extent re-checks every month by checksums.
        store.feed.subscribe(reader._changed)
        store.feed.publish(Change("M", everything=True))
        after = yield reader.stats("M", "hour", None, None, False)
        assert as_pairs(after) == as_pairs((yield fresh_read(cfg)))
    finally:
        yield reader.stopService()
        yield store.stopService()
