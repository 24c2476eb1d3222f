"""The reader's hour cache follows the in-process writer's commits exactly
(the daemon wires ``store.commit_listeners.append(reader.written)``)."""

import pytest_twisted
from twisted.internet import reactor

from tests.web.conftest import make_config
from tsrmon.store.reader import SQLiteReader
from tsrmon.store.sqlite import SQLiteStore


def hour_row(sensor, hour, n, total):
    t0 = 1_795_000_000 - 1_795_000_000 % 3600 + hour * 3600
    import datetime
    import zoneinfo
    local = datetime.datetime.fromtimestamp(t0, zoneinfo.ZoneInfo("Asia/Seoul"))
    text = local.strftime("%Y-%m-%d %H:00:00")
    return (sensor, "hour", t0, 32400, text, n, total, abs(total), total / n, total / n, total * total / n)


def as_pairs(series):
    return [(s.name, [(it[0], it[1]) for it in s.items()]) for s in series]


@pytest_twisted.inlineCallbacks
def test_reported_commits_patch_the_cache_and_match_a_fresh_read(tmp_path):
    cfg = make_config(tmp_path)
    store = SQLiteStore(cfg, reactor)
    store.startService()
    reader = SQLiteReader(cfg, reactor)
    reader.warm_hour_cache = False
    reader.startService()
    store.commit_listeners.append(reader.written)
    try:
        for sensor in ("vib1", "vib2"):
            store.ensure_sensor("M", sensor, "VIB", "ABS")
        store.upsert_sums("M", [hour_row("vib1", h, 10, 5.0) for h in range(30)]
                          + [hour_row("vib2", h, 10, 7.0) for h in range(30)])
        yield store.flush()
        before = yield reader.stats("M", "hour", None, None, False)
        assert reader.follow_writer and len(list(before[0].items())) == 30

        # only the reported hours are re-served: no month re-read
        refreshed = []
        original = reader._refresh_hour
        reader._refresh_hour = lambda *a: (refreshed.append(a[2]), original(*a))[1]
        # the writer adds to an existing hour and opens a new one
        store.upsert_sums("M", [hour_row("vib1", 29, 10, 15.0), hour_row("vib1", 30, 4, 2.0)])
        yield store.flush()
        after = yield reader.stats("M", "hour", None, None, False)
        items = dict((it[0], it[1]) for it in after[0].items())
        last = hour_row("vib1", 29, 1, 1.0)[4]
        assert items[last] == (5.0 + 15.0) / 20  # mean |x| of the merged hour
        assert len(list(after[0].items())) == 31 and len(list(after[1].items())) == 30
        assert refreshed == []

        fresh = SQLiteReader(cfg, reactor)
        fresh.warm_hour_cache = False
        fresh.startService()
        try:
            expected = yield fresh.stats("M", "hour", None, None, False)
        finally:
            yield fresh.stopService()
        assert as_pairs(after) == as_pairs(expected)
    finally:
        yield reader.stopService()
        yield store.stopService()
