"""Nothing lost in silence, against the real daemon: a machine database locked
by another process when SIGTERM comes is spooled (the log names the counts)
and replayed exactly by the next start."""

import glob
import json
import math
import socket
import sqlite3
import time

import pytest

from tests.daemon.harness import Daemon
from tsrmon.client import encode_pickle

MACHINE = "Press"


def frames(n_frames, offset):
    """DataUpdate frames with known values, and the truth per sensor."""
    out, truth = [], {"vib": [], "temp": []}
    for i in range(n_frames):
        vib = [((i * 7 + k) % 13 - 6) * 0.125 + offset for k in range(20)]
        temp = [40.0 + ((i + k) % 5) * 0.5 for k in range(20)]
        truth["vib"] += vib
        truth["temp"] += temp
        out.append(encode_pickle("DataUpdate", {"vib": {"type": "VIB", "data": vib},
                                                "temp": {"type": "TEMP", "data": temp}}))
    return out, truth


def stream(d, payloads, gap=0.02):
    s = socket.create_connection(("127.0.0.1", d.tcp_port))
    s.sendall(encode_pickle("name", MACHINE))
    for p in payloads:
        s.sendall(p)
        time.sleep(gap)
    return s


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def hour_count(db):
    con = sqlite3.connect(db, timeout=1)
    try:
        return con.execute('SELECT SUM("count") FROM "vib_hour_avg"').fetchone()[0] or 0
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def merged(db, sensor, level):
    con = sqlite3.connect(db)
    try:
        return con.execute(f'SELECT SUM("count"), SUM("sum"), SUM("sum_abs"), SUM("sum_sq"), '
                           f'MIN("min"), MAX("max") FROM "{sensor}_{level}_avg"').fetchone()
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_locked_database_at_sigterm_is_spooled_and_replayed_exactly(tmp_path):
    db = tmp_path / "db" / f"{MACHINE}.db"
    spool_dir = tmp_path / "db" / "spool"
    before, truth1 = frames(10, 0.0)
    during, truth2 = frames(15, 1.0)
    truth = {s: truth1[s] + truth2[s] for s in truth1}

    d = Daemon(tmp_path).start()
    locker = None
    try:
        s = stream(d, before)
        wait_for(lambda: hour_count(db) == 200, 30, "the first rows to be committed")
        # Another process takes the write lock and keeps it.
        locker = sqlite3.connect(db, timeout=1, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        for p in during:
            s.sendall(p)
            time.sleep(0.02)
        wait_for(lambda: "database is locked" in d.log_text(), 30, "a failed commit")
        s.close()
    finally:
        rc = d.stop(timeout=90)
    assert rc == 0, d.log_text()[-3000:]
    log = d.log_text()
    files = glob.glob(str(spool_dir / "*.jsonl"))
    assert len(files) == 1, log[-3000:]
    with open(files[0], encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    header, records = records[0], records[1:]
    assert header["tsrmon_spool"] == 1 and header["records"] == len(records)
    n_sums = sum(1 for r in records if r["kind"] == "sums")
    assert n_sums > 0 and {r["machine"] for r in records} == {MACHINE}
    spooled = sum(r["count"] for r in records if r["kind"] == "sums" and r["sensor"] == "vib"
                  and r["level"] == "hour")
    assert spooled == len(truth2["vib"])
    line = [x for x in log.splitlines() if "could not be committed before shutdown" in x]
    assert len(line) == 1, log[-3000:]
    assert f"{len(records)} rows of 1 machines ({n_sums} sum rows, 0 faults)" in line[0]

    locker.close()  # the lock is gone
    d2 = Daemon(tmp_path)
    d2.start()
    try:
        wait_for(lambda: not glob.glob(str(spool_dir / "*.jsonl*")), 30, "the spool to be replayed")
    finally:
        assert d2.stop(timeout=30) == 0
    assert f"replayed {len(records)} spooled rows of 1 machines" in d2.log_text()
    for sensor, values in truth.items():
        for level in ("minute", "hour", "day", "month", "year"):
            n, s_, sa, sq, lo, hi = merged(db, sensor, level)
            assert n == len(values), (sensor, level)
            assert math.isclose(s_, math.fsum(values), rel_tol=1e-12, abs_tol=1e-9)
            assert math.isclose(sa, math.fsum(abs(v) for v in values), rel_tol=1e-12)
            assert math.isclose(sq, math.fsum(v * v for v in values), rel_tol=1e-12)
            assert lo == min(values) and hi == max(values)
