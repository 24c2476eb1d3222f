"""``status`` carries what a page paints first (issue 14, item 3): the latest
value per sensor, the last FaultDetect and anomaly, and the last-seen time,
from this run or from storage for a machine of an earlier run."""

import datetime
import json
import zoneinfo

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from tests.live.conftest import FakeDAQ
from tests.live.helpers import sio_ws
from tests.web.dbs import create_machine_db, insert_bucket
from tsrmon.config import build_config
from tsrmon.live.machines import stored_summary
from tsrmon.stats.sums import PartialSums
from tsrmon.store import schema
from tsrmon.reader.sqlite_reader import SQLiteReader

ZONE = zoneinfo.ZoneInfo("Asia/Seoul")
T0 = 1_800_000_000  # 2027-01-15 17:00:00 in Asia/Seoul


def local(t):
    return datetime.datetime.fromtimestamp(t, ZONE)


def earlier_run(db_dir, machine, minutes, faults):
    """A machine database as an earlier run left it: minute rows and faults."""
    conn = create_machine_db(str(db_dir / f"{machine}.db"), [("vib1", "VIB"), ("temp1", "TEMP")])
    for sensor, mode, values_at in (("vib1", "ABS", lambda i: [-1.0 - i, 1.0 + i]),
                                    ("temp1", "REAL", lambda i: [20.0 + i])):
        for i, t0 in enumerate(minutes):
            insert_bucket(conn, sensor, "minute", local(t0), PartialSums.of(values_at(i)), mode)
    for t, score, threshold in faults:
        text = local(t).strftime("%Y-%m-%d %H:%M:%S.%f")
        conn.execute(f"INSERT INTO {schema.FAULTS_TABLE} (time, t, score, threshold) VALUES (?, ?, ?, ?)",
                     (text, t, score, threshold))
        if score > threshold:
            conn.execute(f"INSERT INTO {schema.ANOMALY_TABLE} (time, threshold, score, t) VALUES (?, ?, ?, ?)",
                         (text, threshold, score, t))
    conn.commit()
    conn.close()


@pytest.fixture
def reader(tmp_path):
    config = build_config({"DATABASE": {"PATH": str(tmp_path / "db")}, "TIME": {"ZONE": "Asia/Seoul"}},
                          None, str(tmp_path))
    (tmp_path / "db").mkdir()
    r = SQLiteReader(config, reactor)
    r.startService()
    yield r
    r.stopService()


def mode(stype):
    return "ABS" if stype == "VIB" else "REAL"


@pytest_twisted.inlineCallbacks
def test_stored_summary_of_an_earlier_run(tmp_path, reader):
    now = T0 + 3 * 86400  # three days later: the newest day is empty
    minutes = [T0 - 180, T0 - 120, T0 - 60]
    earlier_run(tmp_path / "db", "old", minutes,
                [(T0 - 300, 7.0, 5.0), (T0 - 100, 2.0, 5.0)])
    got = yield stored_summary(reader, "old", now, mode, ZONE)
    assert got["latest"] == {
        "vib1": {"data": 3.0, "time": "2027-01-15 17:00:00.000000"},  # mean |x| of the last minute
        "temp1": {"data": 22.0, "time": "2027-01-15 17:00:00.000000"},
    }
    assert got["last_seen"] == T0  # the end of the newest stored minute
    assert got["last_fault"] == (2.0, 5.0, T0 - 100)
    assert got["last_anomaly"] == (7.0, 5.0, T0 - 300)
    empty = yield stored_summary(reader, "nobody", now, mode, ZONE)
    assert empty == {"latest": {}, "last_seen": None, "last_fault": None, "last_anomaly": None}


async def status_of(server, nsp):
    ws = await sio_ws(server.ws_url, nsp=nsp)
    ws.send(f'42{nsp},7["status"]')
    frames = await ws.recv_until(lambda f: f.startswith(f"43{nsp},7"))
    return json.loads(frames[-1][len(f"43{nsp},7"):])[0]


@pytest_twisted.ensureDeferred
async def test_status_carries_stored_and_live_facts(make_server, tmp_path, reader):
    clock = Clock()
    clock.advance(T0 + 3 * 86400)
    earlier_run(tmp_path / "db", "old", [T0 - 60], [(T0 - 30, 9.0, 5.0)])
    server = make_server(clock=clock, machines=("old", "m1"))
    server.live.stored_status = lambda machine: stored_summary(
        reader, machine, clock.seconds(), server.live.mode, server.live.zone)

    old = await status_of(server, "/sio/old")
    assert old["connected"] is False and old["last_frame"] is None
    assert old["last_seen"] == T0 and old["last_seen_time"] == "2027-01-15 17:00:00.000000"
    assert old["last_fault"] == {"score": 9.0, "threshold": 5.0, "t": T0 - 30,
                                 "time": "2027-01-15 16:59:30.000000", "over": True}
    assert old["last_anomaly"] == old["last_fault"]
    assert old["latest"] == {"vib1": {"data": 1.0, "time": "2027-01-15 17:00:00.000000"},
                             "temp1": {"data": 20.0, "time": "2027-01-15 17:00:00.000000"}}

    # This run's facts win over storage: a FaultDetect under threshold, then
    # the live update of the interval.
    hub = server.hub
    hub.claim("m1", FakeDAQ())
    hub.fault(hub.get("m1"), 8.0, 5.0)
    clock.advance(1)
    hub.fault(hub.get("m1"), 1.0, 5.0)
    server.bus.second("m1", "vib1", "VIB", clock.seconds(), PartialSums.of([2.0, -4.0]))
    clock.advance(1)  # the interval (1 s here) closes: one `update`
    m1 = await status_of(server, "/sio/m1")
    assert m1["connected"] is True and m1["last_seen"] == m1["last_frame"] == clock.seconds() - 1
    assert m1["last_fault"]["score"] == 1.0 and m1["last_fault"]["over"] is False
    assert m1["last_anomaly"]["score"] == 8.0 and m1["last_anomaly"]["over"] is True
    assert m1["latest"]["vib1"]["data"] == 3.0
