"""The cluster bus on real Redis: events cross between nodes (never back to
their origin), the directory, and an outage that loses nothing locally."""

import math

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.cluster.helpers import Relay, until
from tsrmon.cluster.bus import ClusterBus, LiveDelivery
from tsrmon.cluster.redis import RedisUnavailable
from tsrmon.stats.sums import PartialSums

pytestmark = pytest.mark.timeout(30)


class FakeMachine:
    def __init__(self, name, connected=True, last_frame=100.0):
        self.name = name
        self.connected = connected
        self.last_frame = last_frame
        self.connected_since = 50.0
        self.disconnected_at = None if connected else 120.0


class FakeRegistry:
    def __init__(self, *machines):
        self.machines = {m.name: m for m in machines}


def node(where, prefix, name, registry=None):
    got = []
    bus = ClusterBus(reactor, where, name, lambda *a: got.append(a), registry=registry, prefix=prefix)
    bus.got = got
    return bus


@pytest_twisted.inlineCallbacks
def test_events_reach_the_other_nodes_only(redis_where, prefix):
    a, b, c = (node(redis_where, prefix, n) for n in "abc")
    for bus in (a, b, c):
        bus.startService()
    try:
        for bus in (a, b, c):
            yield bus.subscribed()
        sums = PartialSums.of([1.0, -3.0])
        a.second("M1", "vib", "VIB", 1000.0, sums)
        a.second("M1", "idle", "VIB", 1000.0, PartialSums())  # no samples: not sent
        a.anomaly("M1", 2.5, 1.0, 1001.0)
        a.broadcast("M1", "alarm", {"rule": "r1", "state": "raised"})
        a.publish("M1", "spectrum", {"sensor": "vib", "lines": [1.0, 2.0]})
        yield until(lambda: len(b.got) == 4 and len(c.got) == 4)
        assert b.got == c.got
        assert b.got[0] == ("M1", "second", ["vib", "VIB", 1000.0, 2, -2.0, 4.0, -3.0, 1.0, 10.0], "a")
        assert b.got[1] == ("M1", "anomaly", [2.5, 1.0, 1001.0], "a")
        assert b.got[2] == ("M1", "alarm", {"rule": "r1", "state": "raised"}, "a")
        assert b.got[3][1] == "spectrum"
        # One PUBLISH for the whole turn; the origin never gets its own events.
        assert a.counters()["published_messages"] == 1 and a.counters()["published_events"] == 4
        assert a.got == []
        assert b.health()["ok"] and b.counters()["received_events"] == 4
    finally:
        for bus in (a, b, c):
            yield bus.stopService()


@pytest_twisted.inlineCallbacks
def test_directory_shows_the_whole_cluster(redis_where, prefix):
    a = node(redis_where, prefix, "a", FakeRegistry(FakeMachine("M1")))
    b = node(redis_where, prefix, "b")
    a.startService()
    b.startService()
    try:
        yield a.subscribed()
        yield b.subscribed()
        a.machine_status(FakeMachine("M1"))
        b.machine_status(FakeMachine("M2", connected=False))
        yield until(lambda: b.counters()["directory_writes"] == 1 and a.counters()["directory_writes"] == 1)
        yield a._refresh_directory()
        yield b._refresh_directory()
        seen = yield b.machines()
        assert set(seen) == {"M1", "M2"}
        assert seen["M1"]["node"] == "a" and seen["M1"]["connected"] is True and seen["M1"]["node_alive"]
        assert seen["M1"]["last_frame"] == 100.0
        assert seen["M2"]["node"] == "b" and seen["M2"]["connected"] is False
        # A node that stops refreshing (died): its machines show as disconnected.
        from tests.cluster.conftest import resp
        resp("DEL", f"{prefix}:node:a")
        seen = yield b.machines()
        assert seen["M1"]["connected"] is False and seen["M1"]["node_alive"] is False
    finally:
        yield a.stopService()
        yield b.stopService()


@pytest.mark.timeout(60)
@pytest_twisted.inlineCallbacks
def test_redis_outage_is_counted_and_recovered(redis_where, prefix):
    relay = Relay(redis_where[0], redis_where[1]).up()
    via = ("127.0.0.1", relay.number, 0, None)
    a, b = node(via, prefix, "a"), node(redis_where, prefix, "b")
    a.startService()
    b.startService()
    try:
        yield a.subscribed()
        yield b.subscribed()
        yield relay.down()
        yield until(lambda: not a.health()["ok"])
        # Publishing while Redis is away never blocks nor raises: dropped, counted.
        a.anomaly("M1", 2.0, 1.0, 5.0)
        yield until(lambda: a.counters()["dropped_events"] == 1)
        with pytest.raises(RedisUnavailable):
            yield a.machines()
        assert a.counters()["redis_outages"] >= 1 and a.counters()["redis_connected"] == 0
        relay.up()
        yield until(lambda: a.health()["ok"], timeout=20)
        yield a.subscribed()
        a.anomaly("M1", 3.0, 1.0, 6.0)
        yield until(lambda: b.got)
        assert b.got == [("M1", "anomaly", [3.0, 1.0, 6.0], "a")]
        outages = a.counters()["redis_outages"]
        assert outages == 2  # one per link (commands, subscriber), not one per retry
    finally:
        yield a.stopService()
        yield b.stopService()
        yield relay.down()


class FakeNamespace:
    def __init__(self):
        self.sent = []

    def status_payload(self):
        return {"machine": "M1", "connected": False, "last_frame": None, "last_seen": None, "latest": {}}

    def broadcast(self, event, payload):
        self.sent.append((event, payload))
        return 1


class FakeLive:
    def __init__(self):
        self.calls = []
        self.ns = FakeNamespace()

    def second(self, *a):
        self.calls.append(("second",) + a)

    def anomaly(self, *a):
        self.calls.append(("anomaly",) + a)

    def broadcast(self, *a):
        self.calls.append(("broadcast",) + a)

    def namespace(self, machine):
        return self.ns

    def time_text(self, t):
        return f"T{t}"

    def count_sent(self, n):
        self.calls.append(("count", n))


def test_live_delivery_feeds_the_live_layer_as_a_local_machine():
    live = FakeLive()
    deliver = LiveDelivery(live)
    deliver("M1", "second", ["vib", "VIB", 10.0, 2, -2.0, 4.0, -3.0, 1.0, 10.0], "a")
    (_, machine, sensor, stype, t, sums), = live.calls
    assert (machine, sensor, stype, t) == ("M1", "vib", "VIB", 10.0)
    assert (sums.count, sums.total, sums.total_abs, sums.minimum, sums.maximum, sums.total_sq) == (2, -2.0, 4.0, -3.0, 1.0, 10.0)
    assert sums.value("ABS") == 2.0
    deliver("M1", "second", ["s", "T", 1.0, 0, 0.0, 0.0, None, None, 0.0], "a")
    assert live.calls[-1][-1].minimum == math.inf and live.calls[-1][-1].maximum == -math.inf
    deliver("M1", "anomaly", [2.5, 1.0, 11.0], "a")
    assert live.calls[-1] == ("anomaly", "M1", 2.5, 1.0, 11.0)
    deliver("M1", "alarm", {"rule": "r"}, "a")
    assert live.calls[-1] == ("broadcast", "M1", "alarm", {"rule": "r"})
    deliver("M1", "status", {"connected": True, "last_frame": 12.0, "connected_since": 5.0,
                             "disconnected_at": None}, "a")
    (event, payload), = live.ns.sent
    assert event == "status" and payload["connected"] is True and payload["node"] == "a"
    assert payload["last_frame_time"] == "T12.0" and payload["last_seen"] == 12.0 and payload["latest"] == {}


@pytest_twisted.inlineCallbacks
def test_a_disconnect_elsewhere_does_not_hide_the_feeding_node(redis_where, prefix):
    a, b = node(redis_where, prefix, "a"), node(redis_where, prefix, "b")
    a.startService()
    b.startService()
    try:
        yield until(lambda: a.commands.connected and b.commands.connected)
        yield a._write_directory([FakeMachine("M1")])
        # b refused (or lost) a claim of M1: its "disconnected" does not overwrite a's entry.
        yield b._write_directory([FakeMachine("M1", connected=False)])
        seen = yield b.machines()
        assert seen["M1"]["node"] == "a" and seen["M1"]["connected"] is True
        # a's own disconnect does; then b may record it fed and lost it too.
        yield a._write_directory([FakeMachine("M1", connected=False)])
        yield b._write_directory([FakeMachine("M1", connected=False, last_frame=200.0)])
        seen = yield a.machines()
        assert seen["M1"]["node"] == "b" and seen["M1"]["connected"] is False and seen["M1"]["last_frame"] == 200.0
    finally:
        yield a.stopService()
        yield b.stopService()
