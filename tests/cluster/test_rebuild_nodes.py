"""``rebuild-stats`` across nodes on the shared PostgreSQL store: raw CSV
stays on each node's disk; a machine moved between two nodes mid-day is
rebuilt from both folders while both nodes' stores run, a missing feeding
node is refused, the result equals the samples, and a running reader on
the change feed re-serves the rebuilt rows."""

import datetime
import os
import zoneinfo

import numpy as np
import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from tests.stats.helpers import config
from tests.store.pg_fixtures import fresh_database
from tsrmon.lock import InstanceLock
from tsrmon.rawlog.rows import HEADER, TimeLabels, render_columns
from tsrmon.reader.pg_reader import PgReader
from tsrmon.store import tools
from tsrmon.store.postgres.feed import PgChangeFeed
from tsrmon.store.postgres.store import PostgresStore

ZONE = "Asia/Seoul"     # UTC+9, no DST: the truth below keys buckets by plain arithmetic
OFF = 9 * 3600
DAY = datetime.date(2026, 3, 10)
DAY_T0 = int(datetime.datetime(2026, 3, 10, tzinfo=zoneinfo.ZoneInfo(ZONE)).timestamp())
STAT = ("stat_minute", "stat_hour", "stat_day", "stat_month", "stat_year")


def write_raw(folder, machine, sensor, frames, time_format):
    """Raw CSV exactly as the raw log writes it (``rawlog.rows``)."""
    times = [t for t, _ in frames]
    counts = [len(v) for _, v in frames]
    data = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in frames])
    by_day, _, bad = render_columns(times, counts, data, TimeLabels(zoneinfo.ZoneInfo(ZONE), time_format))
    assert bad == 0
    os.makedirs(os.path.join(folder, machine), exist_ok=True)
    for day, (_, chunks) in by_day.items():
        with open(os.path.join(folder, machine, f"{day}_{sensor}.csv"), "ab") as f:
            f.write(HEADER + b"".join(bytes(c) for c in chunks))


def frames_between(rng, start, end, step):
    return [(float(t), rng.normal(2.0, 3.0, size=4).tolist()) for t in range(start, end, step)]


def truth(frames):
    """``{(level, t0): (count, sum, min, max, sum_sq)}`` of minute, hour, day."""
    groups = {}
    for t, values in frames:
        t = int(t)
        for level, size in (("minute", 60), ("hour", 3600), ("day", 86400)):
            groups.setdefault((level, t - (t + OFF) % size), []).extend(values)
    return {k: _sums(v) for k, v in groups.items()}


def _sums(values):
    a = np.asarray(values)
    return (len(a), float(a.sum()), float(a.min()), float(a.max()), float((a * a).sum()))


def _merge(a, b):
    return (a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3]), a[4] + b[4])


def stored(dsn, table):
    with psycopg.connect(dsn) as conn:
        return {(r[0], r[1]): r[2:] for r in conn.execute(
            f'SELECT sensor, t0, "count", "sum", "min", "max", sum_sq, time, data, mcount, s1, s2 '
            f"FROM {table} WHERE machine = 'M' ORDER BY sensor, t0")}


def snapshot(dsn):
    return {table: stored(dsn, table) for table in STAT}


def assert_matches(got, want):
    assert set(got) == set(want)
    for key, (n, s, lo, hi, sq) in want.items():
        row = got[key]
        assert row[0] == n and (row[2], row[3]) == (lo, hi)
        assert row[1] == pytest.approx(s, rel=1e-9, abs=1e-9)
        assert row[4] == pytest.approx(sq, rel=1e-9)


def stale(sensor, level, t0, text, values):
    a = np.asarray(values, dtype=float)
    return (sensor, level, t0, OFF, text, len(a), float(a.sum()), float(abs(a).sum()),
            float(a.min()), float(a.max()), float((a * a).sum()))


@pytest.fixture
def cluster(tmp_path):
    """Two nodes' data folders; node1 fed M until 13:00:30, node2 after
    that (the machine moved mid-minute); node2 alone fed a little of the
    next day, which the store has no record of."""
    dsn, drop = fresh_database()
    cfg = config(tmp_path, ZONE).replace(database={"backend": "postgresql", "dsn": dsn})
    rng = np.random.default_rng(16)
    first = frames_between(rng, DAY_T0, DAY_T0 + 13 * 3600 + 31, 37)
    second = frames_between(rng, DAY_T0 + 13 * 3600 + 31, DAY_T0 + 86400, 41)
    unrecorded = frames_between(rng, DAY_T0 + 86400, DAY_T0 + 86400 + 600, 7)
    folders = {n: str(tmp_path / n) for n in ("node1", "node2")}
    write_raw(folders["node1"], "M", "vib", first, "hms")
    write_raw(folders["node2"], "M", "vib", second, "iso")
    write_raw(folders["node2"], "M", "vib", unrecorded, "iso")
    yield cfg, dsn, folders, first + second, unrecorded
    drop()


@defer.inlineCallbacks
def _until(check, what):
    for _ in range(200):
        if check():
            return
        yield task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(180)
@pytest_twisted.inlineCallbacks
def test_two_nodes_folders_rebuild_the_truth_refuse_a_missing_node_and_readers_follow(cluster):
    cfg, dsn, folders, frames, unrecorded = cluster
    nodes = [PostgresStore(cfg.replace(cluster={"node": n}), reactor).prepare() for n in ("node1", "node2")]
    feed = PgChangeFeed(dsn, reactor).start()
    reader = PgReader(cfg, reactor, feed)
    reader.warm_hour_cache = False
    heard = []
    feed.subscribe(heard.append)
    for s in nodes:
        s.startService()
    reader.startService()
    try:
        yield _until(feed.connected.is_set, "the change feed")
        # What the nodes stored is stale (say node2 died before its flush);
        # both nodes wrote minute rows of DAY, so fed_day records both.
        # The day before, outside the range, stays and counts in the month.
        before = (DAY_T0 - 86400, [1.5, -7.0, 4.0])
        for i, s in enumerate(nodes):
            s.ensure_sensor("M", "vib", "VIB", "ABS")
            s.upsert_sums("M", [stale("vib", "minute", DAY_T0 + 60 * (i + 3), f"2026-03-10 00:0{i + 3}:00",
                                      [99.0]),
                                stale("vib", "hour", DAY_T0 + 3600, "2026-03-10 01:00:00", [99.0]),
                                stale("vib", "day", DAY_T0, "2026-03-10 00:00:00", [99.0]),
                                stale("vib", "month", DAY_T0 - 9 * 86400, "2026-03-01 00:00:00", [99.0])])
        nodes[0].upsert_sums("M", [stale("vib", "day", before[0], "2026-03-09 00:00:00", before[1])])
        yield defer.gatherResults([s.flush() for s in nodes])
        assert (yield nodes[0].fed_days("M")) == {"2026-03-10": ["node1", "node2"]}
        cached = yield reader.stats("M", "hour", align=False)
        assert [i[5] for i in cached[0].chunks[0].items] == [2]

        # One node's folder only: refused, naming the node and the day; nothing changed.
        was = snapshot(dsn)
        with pytest.raises(tools.ToolError) as e:
            yield threads.deferToThread(tools.rebuild_stats, cfg, "M", "2026-03-10", "2026-03-11",
                                        folders=[("node1", folders["node1"])])
        assert "node2 on 2026-03-10" in str(e.value) and "\n" not in str(e.value)
        assert snapshot(dsn) == was

        heard.clear()
        both = sorted(folders.items())
        summary = yield threads.deferToThread(tools.rebuild_stats, cfg, "M", "2026-03-10", "2026-03-11",
                                              folders=both)
        assert summary["nodes"] == ["node1", "node2"] and summary["days"] == 2
        assert summary["unrecorded_days"] == ["2026-03-11"]
        assert summary["samples"] == sum(len(v) for _, v in frames + unrecorded)

        want = truth(frames + unrecorded)
        got = snapshot(dsn)
        for level, table in (("minute", "stat_minute"), ("hour", "stat_hour")):
            assert_matches({k[1]: v for k, v in got[table].items()},
                           {t0: v for (lv, t0), v in want.items() if lv == level})
        days = {t0: v for (lv, t0), v in want.items() if lv == "day"}
        days[before[0]] = _sums(before[1])
        assert_matches({k[1]: v for k, v in got["stat_day"].items()}, days)
        month = _merge(_sums(before[1]), _sums([x for _, v in frames + unrecorded for x in v]))
        march = int(datetime.datetime(2026, 3, 1, tzinfo=zoneinfo.ZoneInfo(ZONE)).timestamp())
        jan = int(datetime.datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo(ZONE)).timestamp())
        assert_matches({k[1]: v for k, v in got["stat_month"].items()}, {march: month})
        assert_matches({k[1]: v for k, v in got["stat_year"].items()}, {jan: month})
        # Moments rebuilt too, about one reference for both nodes' files.
        assert all(r[7] == r[0] for t in ("stat_minute", "stat_hour") for r in got[t].values())

        # The running reader heard the rebuild on the feed and re-reads.
        yield _until(lambda: any(c.machine == "M" and c.everything for c in heard), "the rebuild's notice")
        served = yield reader.stats("M", "hour", align=False)
        items = [i for c in served[0].chunks for i in c.items]
        hours = {t0: v for (lv, t0), v in want.items() if lv == "hour"}
        assert sorted(i[5] for i in items) == sorted(v[0] for v in hours.values())

        # A rerun is idempotent.
        yield threads.deferToThread(tools.rebuild_stats, cfg, "M", "2026-03-10", "2026-03-11", folders=both)
        again = snapshot(dsn)
        assert {t: {k: v[:7] for k, v in rows.items()} for t, rows in again.items()} == \
            {t: {k: v[:7] for k, v in rows.items()} for t, rows in got.items()}
        for t in STAT:
            for k, v in again[t].items():
                for a, b in zip(v[7:], got[t][k][7:]):   # moments: None in the kept stale row
                    assert a == b if b is None else a == pytest.approx(b, rel=1e-9, abs=1e-9)
    finally:
        yield defer.maybeDeferred(reader.stopService)
        for s in nodes:
            yield defer.maybeDeferred(s.stopService)
        feed.close()


@pytest.mark.timeout(60)
def test_a_day_not_over_a_folder_in_use_and_bad_data_are_refused_before_writing(cluster):
    cfg, dsn, folders, _frames, _unrecorded = cluster
    both = sorted(folders.items())
    end = DAY_T0 + 86400
    with pytest.raises(tools.ToolError, match="not over, or ended less than an hour ago"):
        tools.rebuild_stats(cfg, "M", "2026-03-10", "2026-03-10", folders=both, now=end + 1800)
    lock = InstanceLock([folders["node2"]]).acquire()
    try:
        with pytest.raises(tools.ToolError, match=f"PID {os.getpid()}"):
            tools.rebuild_stats(cfg, "M", "2026-03-10", "2026-03-10", folders=both)
    finally:
        lock.release()
    with pytest.raises(tools.ToolError, match="count twice"):
        tools.rebuild_stats(cfg, "M", "2026-03-10", "2026-03-10",
                            folders=[("node1", folders["node1"]), ("node2", folders["node1"])])
    # Nothing was written, not even the schema.
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'fed_day'").fetchone() == (0,)
    # Past the hour, with no store rows at all: every day unrecorded, rebuilt.
    summary = tools.rebuild_stats(cfg, "M", "2026-03-10", "2026-03-10", folders=both, now=end + 3601)
    assert summary["unrecorded_days"] == ["2026-03-10"] and summary["files"] == 2


def test_on_sqlite_data_names_only_this_nodes_folder(tmp_path):
    cfg = config(tmp_path, ZONE)
    write_raw(cfg.data.path, "M", "vib", [(float(DAY_T0 + 5), [1.0, 2.0])], "hms")
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(tools.ToolError, match="SQLite store is fed by this node only") as e:
        tools.rebuild_stats(cfg, "M", "2026-03-10", "2026-03-10", folders=[("b", str(other))])
    assert "\n" not in str(e.value)
    summary = tools.rebuild_stats(cfg, "M", "2026-03-10", "2026-03-10",
                                  folders=[("a", cfg.data.path)])
    assert summary == {"machine": "M", "files": 1, "samples": 2, "bad_lines": 0, "sensors": ["vib"],
                       "days": 1}


@pytest.mark.timeout(120)
@pytest_twisted.inlineCallbacks
def test_a_node_adding_to_the_month_during_the_rebuild_loses_nothing(cluster):
    # The month and year rows are shared with the day a node feeds now: the
    # recompute must neither drop nor double a delta committed meanwhile.
    cfg, dsn, folders, _frames, _unrecorded = cluster
    nodes = [PostgresStore(cfg.replace(cluster={"node": n}), reactor).prepare() for n in ("node1", "node2")]
    for s in nodes:
        s.startService()
    try:
        for i, s in enumerate(nodes):
            s.ensure_sensor("M", "vib", "VIB", "ABS")
            s.upsert_sums("M", [stale("vib", "minute", DAY_T0 + 60 * i, f"2026-03-10 00:0{i}:00", [5.0])])
        yield defer.gatherResults([s.flush() for s in nodes])
        now_t0 = DAY_T0 + 10 * 86400      # "today" for the feeding node: 2026-03-20
        march = int(datetime.datetime(2026, 3, 1, tzinfo=zoneinfo.ZoneInfo(ZONE)).timestamp())
        jan = int(datetime.datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo(ZONE)).timestamp())
        done = threads.deferToThread(tools.rebuild_stats, cfg, "M", "2026-03-10", "2026-03-10",
                                     folders=sorted(folders.items()))
        finished = []
        done.addBoth(lambda r: finished.append(r) or r)
        flushes = 0
        while not finished or flushes < 5:
            v = [float(flushes % 7), -1.0]
            nodes[1].upsert_sums("M", [stale("vib", "day", now_t0, "2026-03-20 00:00:00", v),
                                       stale("vib", "month", march, "2026-03-01 00:00:00", v),
                                       stale("vib", "year", jan, "2026-01-01 00:00:00", v)])
            yield nodes[1].flush()
            flushes += 1
        yield done
        got = snapshot(dsn)
        days = [v for v in got["stat_day"].values()]
        month, year = got["stat_month"][("vib", march)], got["stat_year"][("vib", jan)]
        assert got["stat_day"][("vib", now_t0)][0] == 2 * flushes
        assert month[0] == year[0] == sum(d[0] for d in days)
        assert month[1] == pytest.approx(sum(d[1] for d in days), rel=1e-9)
        assert (month[2], month[3]) == (min(d[2] for d in days), max(d[3] for d in days))
        assert month[4] == pytest.approx(sum(d[4] for d in days), rel=1e-9)
    finally:
        for s in nodes:
            yield defer.maybeDeferred(s.stopService)


@pytest.mark.timeout(60)
def test_the_command_takes_data_node_path_and_says_which_days_no_node_fed(cluster, tmp_path, capsys):
    from tsrmon.cli import main

    _cfg, dsn, folders, frames, _unrecorded = cluster
    yml = tmp_path / "pg.yml"
    yml.write_text(f"TIME:\n  ZONE: {ZONE}\nDATABASE:\n  PATH: {tmp_path / 'db'}\n  BACKEND: postgresql\n"
                   f"  DSN: {dsn}\nDATA:\n  PATH: {folders['node1']}\nLOGGER:\n  PATH: {tmp_path / 'log'}\n"
                   f"CLUSTER:\n  NODE: node1\n")
    args = ["rebuild-stats", "--config", str(yml), "--machine", "M", "--from", "2026-03-10", "--to", "2026-03-10"]
    assert main(args + ["--data", "node2"]) == 2
    assert capsys.readouterr().err == "tsrmon: --data node2: expected NODE=PATH (a node's DATA.PATH folder)\n"
    assert main(args + [f"--data=node1={folders['node1']}", f"--data=node2={folders['node2']}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("rebuilt machine: M, nodes: ['node1', 'node2'], files: 2, ")
    assert out[0].endswith(f"samples: {sum(len(v) for _, v in frames)}, bad_lines: 0, sensors: ['vib'], days: 1")
    assert out[1] == ("note: the store records no node feeding M on 2026-03-10: rebuilt from the raw CSV "
                      "found in the folders given")
    # Without --data: this node's own folder only (node1's share of the day).
    assert main(args) == 0
    assert "nodes: ['node1'], files: 1," in capsys.readouterr().out
