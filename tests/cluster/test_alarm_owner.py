"""Alarm state across a change of owner (alarms/owner_sync.py): two alarm
rooms on one PostgreSQL alarm table, each with its own machine registry, as
two cluster nodes.  The node that starts feeding a machine adopts the alarm
the other raised (no second raise, no second push) and clears it; the first
node, feeding the machine again, drops its stale copy and raises anew."""

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.cluster.helpers import until
from tsrmon.alarms.service import AlarmService
from tsrmon.config import build_config
from tsrmon.hub import MachineHub
from tsrmon.stats.sums import PartialSums
from tests.store.pg_fixtures import fresh_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

RULE = {"name": "hot", "machines": ["M1"], "sensors": ["temp1"], "metric": "mean", "window": 1,
        "above": 100, "clear": 90}


@pytest.fixture
def pg_dsn():
    import psycopg

    from tsrmon.store.postgres.schema import prepare

    dsn, drop = fresh_database()
    with psycopg.connect(dsn) as conn:
        prepare(conn, "UTC")  # as the store does at a node's start
    yield dsn
    drop()


class Conn:
    peer_host = "10.0.0.5"

    def takeover(self, reason):
        pass

    def storage_congested(self, flag):
        pass


class Node:
    def __init__(self, tmp_path, name, dsn, clock):
        self.config = build_config({
            "DATABASE": {"PATH": str(tmp_path / name), "BACKEND": "postgresql", "DSN": dsn},
            "TIME": {"ZONE": "UTC"}, "ALARM": {"RULES": [RULE]},
            "CLUSTER": {"REDIS": "redis://127.0.0.1:6379/0", "NODE": name}}, None, str(tmp_path))
        self.clock = clock
        self.hub = MachineHub(self.config, clock)
        self.events, self.pushes = [], []
        self.svc = AlarmService(self.config, clock, self.hub, reactor=reactor,
                                emit=lambda m, e, p: self.events.append(p["event"]),
                                notify=lambda m, title, body, data: self.pushes.append(data["id"]))

    def claim(self):
        machine = self.hub.get("M1")
        if machine is not None and machine.connection is not None:
            self.hub.release(machine, machine.connection)
        self.hub.claim("M1", Conn())

    @defer.inlineCallbacks
    def feed(self, value, seconds=3):
        """``seconds`` seconds of temp1 at ``value``; the first of a new claim
        waits for the stored state, as the daemon's next seconds would."""
        for _ in range(seconds):
            self.svc.second("M1", "temp1", "TEMP", self.clock.seconds(), PartialSums.of([value] * 30))
            self.clock.advance(1)
            yield until(lambda: "M1" not in self.svc._syncing)
        yield until(lambda: not self.svc.store._pending)  # written before the other node reads


@pytest_twisted.inlineCallbacks
def test_the_new_owner_adopts_the_alarm_and_the_old_one_drops_its_copy(tmp_path, pg_dsn):
    clock = task.Clock()
    clock.advance(1_780_000_000)
    a, b = Node(tmp_path, "a", pg_dsn, clock), Node(tmp_path, "b", pg_dsn, clock)
    for n in (a, b):
        n.svc.startService()
        yield n.svc.whenReady()
    try:
        a.claim()
        yield a.feed(150)
        (raised,) = [x["id"] for x in a.svc.active()]
        assert a.events == ["raised"] and a.pushes == [raised]

        # The DAQ moves to b (a died or lost it): b adopts, raises nothing.
        b.claim()
        yield b.feed(150)
        assert [x["id"] for x in b.svc.active()] == [raised]
        assert b.events == [] and b.pushes == []
        assert b.svc.counters()["alarms_adopted"] == 1
        yield b.feed(20)
        assert b.events == ["cleared"] and b.svc.active() == []
        history = yield b.svc.history()
        assert [(x["id"], x["state"]) for x in history] == [(raised, "cleared")]

        # Back on a: its memory still says active; the store says cleared.
        assert [x["id"] for x in a.svc.active()] == [raised]
        a.claim()
        yield a.feed(150)
        again = [x["id"] for x in a.svc.active()]
        assert len(again) == 1 and again != [raised]
        assert a.events == ["raised", "raised"] and a.pushes == [raised, again[0]]
        assert a.svc.counters()["alarms_dropped_stale"] == 1

        # c starts now: it holds a copy of a's active alarm (every node loads
        # the active ones); a clears it; c's stop must not write over it.
        c = Node(tmp_path, "c", pg_dsn, clock)
        c.svc.startService()
        yield c.svc.whenReady()
        yield a.feed(20)
        assert a.svc.active() == [] and [x["id"] for x in c.svc.active()] == again
        c.svc.active_alarms[again[0]].note(150.0, True)  # a stale value c would persist
        yield c.svc.stopService()
        yield until(lambda: not c.svc.store._pending)
        final = [x for x in (yield a.svc.history()) if x["id"] == again[0]]
        assert [(x["state"], x["value"] < 100) for x in final] == [("cleared", True)], final
    finally:
        for n in (a, b):
            yield n.svc.stopService()
