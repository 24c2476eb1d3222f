"""Three real daemon processes on one PostgreSQL and one Redis, behind
Debian's haproxy with etc/haproxy.cfg (issue 16, the scale-out test).

Two machines feed the legacy pickle frames through HAProxy's DAQ port and
land on different nodes.  Then:

(a) the feed through HAProxy (PROXY v2, trusted from 127.0.0.1) is stored;
(b) a python-socketio client on every node gets both machines' ``update``
    and ``second`` events, before and after the failover;
(c) ``/machines`` and ``/stat/hour`` agree on every node (the killed node
    restarted included);
(d) SIGKILL of the node that feeds M1: its DAQ reconnects through HAProxy
    to another node and statistics go on; the store holds what was sent
    but at most one flush interval (plus the commit under way and the
    frames written into the dying connection: IN_FLIGHT), and never more
    (nothing counted twice);
(e) a fake FCM gets exactly one push per anomaly, with anomalies sent
    through three nodes' connections;
(f) the alarm active on the killed node's machine is adopted by the new
    owner: not raised (nor pushed) again, and cleared there later.
"""

import datetime
import os
import signal
import sys
import time

import psycopg
import pytest

from tests.cluster.conftest import REDIS
from tests.cluster.nodes import HAPROXY, SHIM, FakeFcm, Feeder, Haproxy, Watcher, get_json, wait_for
from tests.conftest import require_service
from tests.daemon.harness import Daemon
from tests.notify.fakes import service_account
from tests.store.pg_fixtures import fresh_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NODES = ("n1", "n2", "n3")
RATE = 10  # DataUpdates a second per machine
FLUSH = 1  # DATABASE.FLUSH
# Beyond one flush interval, a SIGKILL also loses the commit under way (its
# transaction dies with the connection: up to half a second on this loaded
# machine) and the frames the DAQ wrote into the dying connection before it
# noticed (legacy frames are not acknowledged).
IN_FLIGHT = RATE // 2 + 3
HOT, COOL = 150.0, 20.0  # temp1 above / below the m1-hot rule (above 100, clear 90)
RULE = {"name": "m1-hot", "machines": ["M1"], "sensors": ["temp1"], "metric": "mean", "window": 1,
        "above": 100, "clear": 90, "severity": "critical"}


@pytest.fixture
def pg_dsn():
    dsn, drop = fresh_database()
    yield dsn
    drop()


@pytest.fixture
def fcm(tmp_path):
    fake = FakeFcm()
    fake.cred_path = str(tmp_path / "fcm.json")
    service_account(fake.cred_path, fake.base + "/token")
    yield fake
    fake.close()


def node(tmp_path, name, dsn, prefix, fcm):
    overrides = {
        "SERVER": {"TRUSTED_PROXIES": ["127.0.0.1/32"]},
        "DATABASE": {"BACKEND": "postgresql", "DSN": dsn, "FLUSH": FLUSH},
        "DATA": {"WRITER": "thread"},  # no CSV worker process left behind by SIGKILL
        "TIME": {"ZONE": "UTC"},
        "LIVE": {"INTERVAL": 1},
        "CLUSTER": {"REDIS": f"redis://{REDIS[0]}:{REDIS[1]}/0", "NODE": name, "LEASE_TTL": 3, "PREFIX": prefix},
        "FCM": {"CRED_PATH": fcm.cred_path, "TIMEOUT": 0},
        "ALARM": {"RULES": [RULE]},
    }
    return Daemon(tmp_path / name, overrides=overrides, wrapper=[sys.executable, SHIM],
                  env={"TSRMON_TEST_FCM_SEND_URL": fcm.send_url})


def machines(port):
    """``{machine: (node, connected)}`` of one node's ``/machines``."""
    body = get_json(port, "/machines")
    if body is None:
        return None
    return {m["machine"]: (m.get("node"), m["connected"]) for m in body["machines"]}


def stored_frames(dsn, machine):
    with psycopg.connect(dsn) as conn:
        n = conn.execute("SELECT coalesce(sum(count), 0) FROM stat_minute WHERE machine = %s AND sensor = 'vib1'",
                         (machine,)).fetchone()[0]
    return n / 30


def hour_rows(port, machine):
    today = datetime.datetime.now(datetime.timezone.utc).date()
    start = today - datetime.timedelta(days=1)
    return get_json(port, f"/stat/hour?machine={machine}&start={start}&end={today}")


def alarm_rows(port):
    body = get_json(port, "/alarms/history?machine=M1")
    return None if body is None else [a for a in body["alarms"] if a["rule"] == "m1-hot"]


def test_three_nodes_behind_haproxy(tmp_path, pg_dsn, prefix, fcm):
    require_service(os.path.exists(HAPROXY), "haproxy not installed")
    nodes = {name: node(tmp_path, name, pg_dsn, prefix, fcm) for name in NODES}
    started, feeders, watchers, proxy, reborn = [], [], [], None, None
    try:
        for d in nodes.values():
            d.start(wait=False)
            started.append(d)
        for d in nodes.values():
            wait_for(lambda d=d: get_json(d.http_port, "/machines") is not None, 60, f"{d.workdir} up")
        proxy = Haproxy(list(nodes.values()), tmp_path)
        proxy.wait()

        # Two DAQs through HAProxy (leastconn: the second lands elsewhere).
        m1 = Feeder(proxy.daq_port, "M1", RATE, temp=HOT)
        m1.start()
        feeders.append(m1)
        wait_for(lambda: (machines(nodes["n1"].http_port) or {}).get("M1", (None, False))[1], 30, "M1 connected")
        m2 = Feeder(proxy.daq_port, "M2", RATE, temp=COOL)
        m2.start()
        feeders.append(m2)

        def agreed():
            seen = [machines(d.http_port) for d in nodes.values()]
            if all(s is not None and set(s) == {"M1", "M2"} and all(c for _, c in s.values()) for s in seen) \
                    and all(s == seen[0] for s in seen):
                return seen[0]
            return None
        # (c) /machines: every node shows the whole cluster, fed where it is.
        directory = wait_for(agreed, 30, "every node's /machines shows M1 and M2 connected")
        owner1, owner2 = directory["M1"][0], directory["M2"][0]
        assert owner1 != owner2 and {owner1, owner2} <= set(NODES), directory

        # (b) Socket.IO on every node: both machines' update and second events.
        for name, d in nodes.items():
            w = Watcher(d.http_port, ["M1", "M2"])
            w.node = name
            watchers.append(w)
            w.connect()
        for w in watchers:
            for m in ("M1", "M2"):
                for event in ("update", "second"):
                    wait_for(lambda: w.got(m, event), 20, f"{event} of {m} on {w.node}")
        second = watchers[0].got("M2", "second")[-1]
        assert second["sensor_name"] == "vib1" and second["count"] > 0

        # (e) anomalies through the two owners; (f) M1's alarm raised by its owner.
        m1.fault(7.0)
        m2.fault(8.0)
        others = [n for n in NODES if n != owner1]
        reader = nodes[others[0]]
        active = wait_for(lambda: [a for a in alarm_rows(reader.http_port) or [] if a["state"] == "active"],
                          30, "m1-hot active in the shared alarm history")
        wait_for(lambda: len(fcm.pushes(kind="fault")) >= 2, 20, "the two anomalies pushed")

        # (d) SIGKILL the node feeding M1.
        killed = nodes[owner1]
        killed.stop(sig=signal.SIGKILL)
        killed_at = time.monotonic()
        survivors = [nodes[n] for n in others]
        for w in [w for w in watchers if w.node == owner1]:
            w.close()
            watchers.remove(w)

        def moved():
            seen = machines(survivors[0].http_port) or {}
            node_now, connected = seen.get("M1", (None, False))
            return node_now if connected and node_now in others else None
        owner3 = wait_for(moved, 30, "M1 fed again through another node")
        moved_at = time.monotonic()
        # Another anomaly, through M1's new node; the alarm stays hot for a while.
        m1.fault(9.0)
        wait_for(lambda: fcm.pushes(kind="fault", machine="M1", score="9.0"), 20, "the third anomaly pushed")
        for w in watchers:
            wait_for(lambda: w.got("M1", "second", since=moved_at), 20, f"M1's seconds on {w.node} after the move")
            wait_for(lambda: w.got("M1", "update", since=moved_at), 20, f"M1's updates on {w.node} after the move")
        time.sleep(3)  # seconds of HOT data judged by the new owner: it must not raise again
        m1.temp = COOL
        cleared = wait_for(lambda: [a for a in alarm_rows(survivors[0].http_port) or [] if a["state"] == "cleared"],
                           30, "m1-hot cleared by M1's new owner")

        for f in feeders:
            f.finish()
        sent = {f.client.machine: f.frames for f in feeders}

        # (a)/(d) the store: M2 exact, M1 short of at most one flush interval.
        wait_for(lambda: stored_frames(pg_dsn, "M2") == sent["M2"], 30, "M2's frames all stored")
        wait_for(lambda: stored_frames(pg_dsn, "M1") >= sent["M1"] - RATE * FLUSH - IN_FLIGHT, 30,
                 f"M1's frames stored (sent {sent['M1']})")
        time.sleep(FLUSH + 1)  # a later flush must not add anything
        stored = stored_frames(pg_dsn, "M1")
        assert sent["M1"] - RATE * FLUSH - IN_FLIGHT <= stored <= sent["M1"], (stored, sent)
        assert stored_frames(pg_dsn, "M2") == sent["M2"]

        # (c) REST on every node, the killed one restarted, returns the same rows.
        reborn = node(tmp_path, owner1, pg_dsn, prefix, fcm).start()
        everyone = survivors + [reborn]
        for m in ("M1", "M2"):
            def same(m=m):
                rows = [hour_rows(d.http_port, m) for d in everyone]
                return rows[0] if rows[0] and all(r == rows[0] for r in rows) else None
            rows = wait_for(same, 30, f"/stat/hour of {m} identical on every node")
            counted = sum(r.get("count", 0) for r in rows if r["name"] == "vib1_hour_avg")
            assert counted == stored_frames(pg_dsn, m) * 30, (m, counted)
        names = [sorted(machines(d.http_port) or {}) for d in everyone]
        assert names == [["M1", "M2"]] * 3, names

        # (e) one push per anomaly, whichever node it came through.
        faults = sorted((p["machine"], p["score"]) for p in fcm.pushes(kind="fault"))
        assert faults == [("M1", "7.0"), ("M1", "9.0"), ("M2", "8.0")], faults
        # (f) one alarm, raised once (one push), adopted and cleared by the new owner.
        history = alarm_rows(reborn.http_port)
        assert [a["id"] for a in history] == [active[0]["id"]] == [cleared[0]["id"]], history
        assert len(fcm.pushes(kind="alarm:m1-hot")) == 1, fcm.pushes(kind="alarm:m1-hot")
        print(f"\nM1 sent {sent['M1']} stored {stored:g} (lost {sent['M1'] - stored:g}); moved after "
              f"{moved_at - killed_at:.1f} s from {owner1} to {owner3}")
    finally:
        for f in feeders:
            f.halt.set()
            f.client.close()
        for w in watchers:
            w.close()
        if proxy is not None:
            proxy.stop()
        for d in started + ([reborn] if reborn else []):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
