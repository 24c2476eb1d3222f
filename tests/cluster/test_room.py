"""Two nodes' cluster rooms on real Redis with the real machine registry
and live bus: one owner per machine, takeover through another node, live
events crossing, /machines of the whole cluster."""

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.cluster.helpers import until
from tsrmon.cluster.room import ClusterRoom, build
from tsrmon.config import build_config
from tsrmon.hub import LiveBus, MachineRegistry

pytestmark = pytest.mark.timeout(30)


class Conn:
    def __init__(self, peer):
        self.peer_host = peer
        self.closed = None

    def takeover(self, reason):
        self.closed = reason

    def storage_congested(self, congested):
        pass


class Layer:
    """A live layer attached to the live bus: records what it is given."""

    def __init__(self):
        self.got = []

    def second(self, *a):
        self.got.append(("second",) + a)

    def anomaly(self, *a):
        self.got.append(("anomaly",) + a)

    def machine_status(self, machine):
        self.got.append(("status", machine.name))

    def broadcast(self, *a):
        self.got.append(("broadcast",) + a)


class Node:
    def __init__(self, where, prefix, name):
        self.config = build_config({"CLUSTER": {"REDIS": f"redis://{where[0]}:{where[1]}/0", "NODE": name}})
        self.registry = MachineRegistry(self.config, reactor)
        self.bus = LiveBus()
        self.room = build(self.config, reactor, self.registry, self.bus, prefix=prefix)
        self.layer = Layer()
        self.bus.attach(self.layer)

    @pytest_twisted.inlineCallbacks
    def claim(self, name, peer):
        conn = Conn(peer)
        machine = self.registry.claim(name, conn)
        ok = yield self.room.gate.claimed(machine, conn)
        return ok, conn


def test_no_cluster_builds_nothing():
    assert build(build_config({}), reactor, None, LiveBus()) is None


@pytest_twisted.inlineCallbacks
def test_two_nodes(redis_where, prefix):
    a, b = Node(redis_where, prefix, "a"), Node(redis_where, prefix, "b")
    assert isinstance(a.room, ClusterRoom)
    for n in (a, b):
        n.room.startService()
    try:
        for n in (a, b):
            yield n.room.bus.subscribed()
            yield n.room.leases.subscribed()
        ok, pc1 = yield a.claim("M1", "10.0.0.1")
        assert ok and pc1.closed is None
        # Another PC with the same name through node b: refused there.
        ok, pc2 = yield b.claim("M1", "10.0.0.2")
        assert not ok and pc2.closed and not b.registry.get("M1").connected
        assert pc1.closed is None
        # The refused claim was never announced: the directory still shows a feeding it.
        from tests.cluster.conftest import resp
        yield until(lambda: b'"node":"a"' in resp("HGET", f"{prefix}:machines", "M1"))
        entry = (yield b.room.bus.machines())["M1"]
        assert (entry["node"], entry["connected"]) == ("a", True)
        assert b.room.bus.counters()["directory_writes"] == 0
        # The first PC reconnects through node b: a closes its old connection.
        ok, pc1b = yield b.claim("M1", "10.0.0.1")
        assert ok and pc1.closed and not a.registry.get("M1").connected
        assert (yield b.room.leases.owner("M1")) == ("b", "10.0.0.1")
        # Live events of b's machine reach a's live layers (and not b's twice).
        a.layer.got.clear()
        b.bus.anomaly("M1", 3.0, 1.0, 10.0)
        yield until(lambda: a.layer.got)
        assert a.layer.got == [("anomaly", "M1", 3.0, 1.0, 10.0)]
        assert [g for g in b.layer.got if g[0] == "anomaly"] == [("anomaly", "M1", 3.0, 1.0, 10.0)]
        # /machines on a shows the whole cluster.
        b.bus.machine_status(b.registry.get("M1"))
        yield until(lambda: b'"node":"b","t"' in resp("HGET", f"{prefix}:machines", "M1")
                    and b'"connected":true' in resp("HGET", f"{prefix}:machines", "M1"))
        listed = yield a.room.with_cluster([m.status() for m in a.registry.machines.values()])
        (m1,) = listed
        assert m1["machine"] == "M1" and m1["node"] == "b" and m1["connected"] is True
        # The DAQ disconnects from b: the lease is released at once.
        conn = b.registry.get("M1").connection
        b.registry.release(b.registry.get("M1"), conn)
        assert (yield b.room.gate.released(b.registry.get("M1"), conn)) is True
        assert (yield a.room.leases.owner("M1")) is None
    finally:
        for n in (a, b):
            yield n.room.stopService()
