"""session.bin through the real daemon: exact statistics, SIGTERM and SIGKILL (issue 4)."""

import math
import signal
import socket
import sqlite3
import time

import pytest

from tests.conftest import expected, fixture_bytes
from tests.daemon.harness import Daemon

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]  # each ≤ ~6 s measured


def merged(db, sensor, level):
    con = sqlite3.connect(db)
    try:
        row = con.execute(
            f'SELECT SUM(count), SUM(sum), SUM(sum_abs), SUM(sum_sq), MIN(min), MAX(max) '
            f'FROM "{sensor}_{level}_avg" WHERE t0 IS NOT NULL').fetchone()
    finally:
        con.close()
    return row


def test_session_replay_then_sigterm_matches_truth_at_every_level(tmp_path):
    truth = expected()["session.bin"]
    d = Daemon(tmp_path).start()
    try:
        d.send(fixture_bytes("session.bin"))
    finally:
        assert d.stop() == 0, d.log_text()
    db = tmp_path / "db" / "ShotBlast.db"
    for sensor, t in truth["per_sensor"].items():
        for level in ("hour", "day", "month", "year"):
            n, s, sa, sq, lo, hi = merged(db, sensor, level)
            assert n == t["n"], (sensor, level)
            assert math.isclose(s, t["sum"], rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(sa, t["sum_abs"], rel_tol=1e-9)
            assert math.isclose(sq, t["sumsq"], rel_tol=1e-9)
            assert lo == t["min"] and hi == t["max"]
            mean = (sa if t["type"] == "VIB" else s) / n
            assert math.isclose(mean, t["mean_abs"] if t["type"] == "VIB" else t["mean"], rel_tol=1e-9)
            assert math.isclose(math.sqrt(sq / n), t["rms"], rel_tol=1e-9)
    con = sqlite3.connect(db)
    rows = con.execute("SELECT score, threshold FROM anomaly").fetchall()
    con.close()
    assert rows == [(7.0, 5.0)]


def _stream(d, frames, seconds):
    """Send frames for about ``seconds``; return how many DataUpdates were sent."""
    s = socket.create_connection(("127.0.0.1", d.tcp_port))
    s.sendall(frames[0])
    sent = 0
    deadline = time.monotonic() + seconds
    i = 1
    while time.monotonic() < deadline:
        s.sendall(frames[i])
        sent += 1
        i = 1 + (i % (len(frames) - 1))
        if sent % 50 == 0:
            time.sleep(0.01)
    return s, sent


def _split_session():
    """session.bin as (handshake, frames...): every frame is protocol 4 and
    ends with 5C 6F, so a boundary is 5C 6F followed by the next 80 04 95."""
    data = fixture_bytes("session.bin")
    parts = data.split(b"\x5c\x6f\x80\x04\x95")
    frames = [parts[0] + b"\x5c\x6f"]
    frames += [b"\x80\x04\x95" + p + b"\x5c\x6f" for p in parts[1:-1]]
    frames.append(b"\x80\x04\x95" + parts[-1])
    assert b"".join(frames) == data and len(frames) == 124
    return frames


def test_sigkill_loses_at_most_one_flush_interval(tmp_path):
    frames = [f for f in _split_session() if b"FaultDetect" not in f]
    d = Daemon(tmp_path, overrides={"DATABASE": {"FLUSH": 1}}).start()
    s, sent = _stream(d, frames, 4.0)
    time.sleep(1.5)  # one flush interval after the last frame: everything should be stored
    d.stop(sig=signal.SIGKILL)
    s.close()
    n = merged(tmp_path / "db" / "ShotBlast.db", "shot_blast_vib1", "hour")[0] or 0
    # Partial sums are persisted every DATABASE.FLUSH (1 s): with 1.5 s of
    # quiet before the kill, nothing that arrived may be lost.
    assert n == sent * 30


def test_sigterm_under_ingest_loses_nothing(tmp_path):
    frames = [f for f in _split_session() if b"FaultDetect" not in f]
    d = Daemon(tmp_path, overrides={"DATABASE": {"FLUSH": 10}}).start()
    s, sent = _stream(d, frames, 2.0)
    s.shutdown(socket.SHUT_WR)
    rc = d.stop()
    s.close()
    assert rc == 0, d.log_text()
    n = merged(tmp_path / "db" / "ShotBlast.db", "shot_blast_vib1", "hour")[0]
    assert n == sent * 30
