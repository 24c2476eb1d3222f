"""The dashboard's first paint is the truth (issue 14, item 3).

A daemon with ``LIVE.INTERVAL: 60`` (no ``update`` for up to a minute)
starts on data an earlier run stored: ``Press`` (minutes a few minutes ago
and a FaultDetect over threshold; its DAQ connects again, silent) and
``OldPump`` (two hours ago, offline now).  Within 2 s of the page load every
card shows the latest minute value per sensor, Press its last anomaly (the
one the anomaly table lists) and OldPump when it was last seen.
"""

import json
import math
import socket
import time

import pytest
import requests

from tests.daemon.harness import Daemon
from tests.dashboard.helpers import drive
from tsrmon.client import encode_json

OVERRIDES = {"LIVE": {"INTERVAL": 60}}


def _frames(machine, chunks, faults=()):
    """JSON lines: the name, DataUpdates stamped ``t`` (late data), FaultDetects."""
    out = [encode_json("name", machine)]
    for t, data in chunks:
        out.append(encode_json("DataUpdate", data, t=t))
    for t, score, threshold in faults:
        out.append(encode_json("FaultDetect", {"score": score, "threshold": threshold}, t=t))
    return b"".join(out)


def _wait(predicate, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _machine(daemon, name):
    body = requests.get(daemon.url("/machines"), timeout=5).json()
    return next((m for m in body["machines"] if m["machine"] == name), None)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_first_paint_shows_stored_values_anomaly_and_last_seen(browser_ready, tmp_path):
    workdir = tmp_path / "run"
    minute = math.floor(time.time() / 60) * 60
    press_a, press_b = minute - 180 + 5, minute - 120 + 5  # two minutes, a few minutes ago
    fault_t = minute - 100.0
    old_t = minute - 7200 + 5  # beyond the live cache's hour: storage only
    press = _frames("Press", [
        (press_a, {"vib1": {"type": "VIB", "data": [0.5, -0.5]}, "temp1": {"type": "TEMP", "data": [30.0]}}),
        (press_b, {"vib1": {"type": "VIB", "data": [1.0, -3.0]}, "temp1": {"type": "TEMP", "data": [40.0, 42.0]}}),
    ], faults=[(fault_t, 7.0, 5.0)])
    old = _frames("OldPump", [(old_t, {"flow": {"type": "FLOW", "data": [3.0, 5.0]}})])

    # The earlier run: it stores what the DAQs send, then stops (SIGTERM flushes).
    earlier = Daemon(workdir, overrides=OVERRIDES).start()
    try:
        earlier.send(press)
        earlier.send(old)
        _wait(lambda: (_machine(earlier, "Press") or {}).get("faults") == 1
              and (_machine(earlier, "OldPump") or {}).get("frames") == 1, "the earlier run's frames")
    finally:
        assert earlier.stop() == 0

    daemon = Daemon(workdir, overrides=OVERRIDES).start()
    daq = socket.create_connection(("127.0.0.1", daemon.tcp_port))
    try:
        daq.sendall(encode_json("name", "Press"))  # connected again, silent
        _wait(lambda: (_machine(daemon, "Press") or {}).get("connected"), "Press to connect")
        expect = {"values": {"Press": ["vib1", "temp1"], "OldPump": ["flow"]},
                  "anomaly": ["Press"], "seen": ["Press", "OldPump"]}
        out = drive(daemon, "firstpaint", env={"TSRMON_EXPECT": json.dumps(expect)}, timeout=90)
    finally:
        daq.close()
        assert daemon.stop() == 0

    print("first paint ms", out["ms"])
    cards = {c["name"]: c for c in out["machines"]}
    # Everything was on screen within 2 s of the navigation start.
    assert out["ms"] <= 2000, out["ms"]
    p, o = cards["Press"], cards["OldPump"]
    # The latest minute's mean per sensor (VIB: mean |x|, TEMP: mean), not "–".
    assert {k: float(v) for k, v in p["values"].items()} == {"vib1": 2.0, "temp1": 41.0}
    assert {k: float(v) for k, v in o["values"].items()} == {"flow": 4.0}
    # The last FaultDetect (stored by the earlier run) and the last anomaly.
    assert p["anomaly"]["anomaly"] == "anomalous"
    assert (float(p["anomaly"]["score"]), float(p["anomaly"]["threshold"])) == (7.0, 5.0)
    assert float(p["anomaly"]["at"]) == fault_t
    assert (float(p["last_anomaly"]["score"]), float(p["last_anomaly"]["at"])) == (7.0, fault_t)
    assert p["daq"] == "connected" and o["daq"] == "offline"
    # Last seen from storage: the end of the newest stored minute (or fault).
    assert float(o["last_seen"]) == old_t - 5 + 60
    assert o["last_frame_text"] not in ("never", "없음")
    assert float(p["last_seen"]) == press_b - 5 + 60
    # The anomaly table of the same page lists that anomaly: card and table agree.
    assert any("Press" in row and "7" in row and "5" in row for row in out["table"]), out["table"]
