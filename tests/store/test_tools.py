"""rebuild_stats (raw CSV -> aggregates) and backup."""

import datetime
import gzip
import os
import sqlite3
import zoneinfo

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.stats.helpers import config, epoch, oracle
from tsrmon.lock import InstanceLock
from tsrmon.store import migrate, tools
from tsrmon.store.sqlite import SQLiteStore
from tsrmon.store.sqlite_upsert import SensorCatalog

BERLIN = "Europe/Berlin"


def write_raw(cfg, machine, sensor, day, samples, gz=False):
    """A raw CSV as docs/legacy.md §2.6 describes it: header, CRLF, HH:MM:SS,repr."""
    folder = os.path.join(cfg.data.path, machine)
    os.makedirs(folder, exist_ok=True)
    tz = zoneinfo.ZoneInfo(BERLIN)
    lines = ["time,data"]
    for t, values in samples:
        hms = datetime.datetime.fromtimestamp(t, tz).strftime("%H:%M:%S")
        lines.extend(f"{hms},{v!r}" for v in values)
    data = ("\r\n".join(lines) + "\r\n").encode()
    name = f"{day:%Y%m%d}_{sensor}.csv"
    if gz:
        with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
            f.write(data)
    else:
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def day_samples(rng, start, end, step):
    out = []
    t = start
    while t < end:
        out.append((t, rng.normal(size=5).tolist()))
        t += step
    return out


def table_rows(path):
    conn = sqlite3.connect(path)
    try:
        out = {}
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                    "AND name LIKE '%_avg' ORDER BY name"):
            out[name] = conn.execute(
                f'SELECT time, data, t0, utc_offset, "count", "sum", sum_abs, "min", "max", sum_sq '
                f'FROM "{name}" ORDER BY time, t0').fetchall()
        return out
    finally:
        conn.close()


@pytest.fixture
def raw_setup(tmp_path):
    cfg = config(tmp_path, BERLIN)
    rng = np.random.default_rng(7)
    fall = datetime.date(2026, 10, 25)
    nxt = datetime.date(2026, 10, 26)
    # The fall-back day (25 h; 02:xx twice), every 7 minutes, and the next day gzipped.
    fall_samples = day_samples(rng, epoch(BERLIN, "2026-10-25 00:00:00"),
                               epoch(BERLIN, "2026-10-26 00:00:00"), 420)
    next_samples = day_samples(rng, epoch(BERLIN, "2026-10-26 00:00:00"),
                               epoch(BERLIN, "2026-10-27 00:00:00"), 3000)
    write_raw(cfg, "M", "vib", fall, fall_samples)
    write_raw(cfg, "M", "vib", nxt, next_samples, gz=True)
    # The database knows vib is a VIB (ABS) sensor and holds stale rows.
    path = os.path.join(cfg.database.path, "M.db")
    os.makedirs(cfg.database.path)
    conn = migrate.open_database(path)
    SensorCatalog().ensure(conn, "vib", "VIB", "ABS", None)
    conn.execute('INSERT INTO "vib_hour_avg" (time, data) VALUES (?, ?)', ("2026-10-25 05:00:00", 99.0))
    conn.execute('INSERT INTO "vib_hour_avg" (time, data) VALUES (?, ?)', ("2026-10-24 05:00:00", 42.0))
    conn.close()
    fed = [(t, "vib", "VIB", v) for t, v in fall_samples + next_samples]
    return cfg, path, fed


def test_rebuild_matches_samples_and_is_repeatable(raw_setup):
    cfg, path, fed = raw_setup
    progress = []
    summary = tools.rebuild_stats(cfg, "M", "2026-10-25", "2026-10-26",
                                  progress=lambda done, total: progress.append((done, total)))
    assert summary["samples"] == sum(len(v) for *_x, v in fed) and summary["bad_lines"] == 0
    assert progress[0][0] == 0 and progress[-1][0] == progress[-1][1] > 0
    first = table_rows(path)
    tools.rebuild_stats(cfg, "M", datetime.date(2026, 10, 25), datetime.date(2026, 10, 26))
    assert table_rows(path) == first

    expected = oracle(BERLIN, fed)
    hours = first["vib_hour_avg"]
    # The stale legacy row inside the range is replaced; the one outside is kept.
    assert ("2026-10-24 05:00:00", 42.0) in [(r[0], r[1]) for r in hours]
    counted = [r for r in hours if r[4] is not None]
    assert len(counted) == len(expected[("vib", "hour")]) == 25 + 24
    for time_text, data, _t0, off, n, s, sa, lo, hi, sq in counted:
        e = expected[("vib", "hour")][(time_text, off)]
        assert n == e.count and sa == pytest.approx(e.total_abs, rel=1e-12)
        assert data == pytest.approx(e.total_abs / e.count, rel=1e-12)
    assert [r[3] for r in counted if r[0] == "2026-10-25 02:00:00"] == [7200, 3600]
    for level in ("day", "month", "year"):
        rows = {r[0]: r for r in first[f"vib_{level}_avg"]}
        for (time_text, _off), e in expected[("vib", level)].items():
            assert rows[time_text][4] == e.count
            assert rows[time_text][1] == pytest.approx(e.total_abs / e.count, rel=1e-12)


def test_rebuild_refuses_while_a_daemon_holds_the_lock(raw_setup):
    cfg, path, _fed = raw_setup
    lock = InstanceLock([cfg.data.path, cfg.database.path]).acquire()
    try:
        with pytest.raises(tools.ToolError, match=f"PID {os.getpid()}"):
            tools.rebuild_stats(cfg, "M", "2026-10-25", "2026-10-26")
    finally:
        lock.release()
    assert table_rows(path)["vib_hour_avg"] == [
        ("2026-10-24 05:00:00", 42.0) + (None,) * 8, ("2026-10-25 05:00:00", 99.0) + (None,) * 8]


def test_rebuild_argument_errors(raw_setup):
    cfg, _path, _fed = raw_setup
    with pytest.raises(tools.ToolError, match="no raw CSV"):
        tools.rebuild_stats(cfg, "M", "2020-01-01", "2020-01-02")
    with pytest.raises(tools.ToolError, match="before"):
        tools.rebuild_stats(cfg, "M", "2026-10-26", "2026-10-25")
    with pytest.raises(tools.ToolError, match="bad machine name"):
        tools.rebuild_stats(cfg, "../x", "2026-10-25", "2026-10-26")
    with pytest.raises(tools.ToolError, match="YYYY-MM-DD"):
        tools.rebuild_stats(cfg, "M", "yesterday", "2026-10-26")


@pytest_twisted.inlineCallbacks
def test_backup_is_an_online_consistent_copy(tmp_path):
    cfg = config(tmp_path, BERLIN)
    store = SQLiteStore(cfg, reactor)
    store.startService()
    for machine in ("A", "B"):
        store.ensure_sensor(machine, "vib", "VIB", "ABS")
        store.upsert_sums(machine, [("vib", "hour", 3600, 3600, "1970-01-01 02:00:00",
                                     2, 1.0, 3.0, -1.0, 2.0, 5.0)])
    yield store.flush()
    # The writer still has the files open (WAL): the copy must be complete anyway.
    dest = tmp_path / "copy"
    written = tools.backup(cfg, str(dest))
    assert sorted(os.path.basename(p) for p in written) == ["A.db", "B.db"]
    for p in written:
        assert table_rows(p)["vib_hour_avg"] == [("1970-01-01 02:00:00", 1.5, 3600, 3600, 2, 1.0, 3.0,
                                                   -1.0, 2.0, 5.0)]
    with pytest.raises(tools.ToolError, match="database folder itself"):
        tools.backup(cfg, cfg.database.path)
    yield store.stopService()
