"""Two real daemons (makeService) on one Redis: a DAQ fed to node A shows in
node B's live layer and /machines; another PC with the same name through
node B is refused; the same PC reconnecting through B takes the machine
over; the lease is released when it disconnects.  Skips until makeService
builds the cluster room (the issue 16 wiring request)."""

import json

import orjson
import pytest
import pytest_twisted
from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.web.client import Agent, readBody

from tests.cluster.helpers import until
from tsrmon.cluster import room
from tsrmon.config import build_config
from tsrmon.service import makeService

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def config(tmp_path, node, where):
    return build_config({"SERVER": {"HOST": "127.0.0.1", "PORT": 0, "TCP_PORT": 0},
                         "DATA": {"PATH": str(tmp_path / node / "data")},
                         "DATABASE": {"PATH": str(tmp_path / node / "db")},
                         "LOGGER": {"PATH": str(tmp_path / node / "log")}, "TIME": {"ZONE": "UTC"},
                         "LIVE": {"INTERVAL": 1},
                         "CLUSTER": {"REDIS": f"redis://{where[0]}:{where[1]}/0", "NODE": node, "LEASE_TTL": 3}})


class DAQ(protocol.Protocol):
    def connectionMade(self):
        self.closed = defer.Deferred()

    def connectionLost(self, reason):
        self.closed.callback(None)

    def send(self, obj):
        self.transport.write(json.dumps(obj).encode() + b"\n")


def dial(port, source=None):
    point = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port,
                                         bindAddress=(source, 0) if source else None)
    return endpoints.connectProtocol(point, DAQ())


@pytest_twisted.inlineCallbacks
def test_two_daemons(tmp_path, redis_where, prefix, monkeypatch):
    monkeypatch.setattr(room.build, "__defaults__", (prefix,))
    a = makeService(config(tmp_path, "a", redis_where), reactor=reactor, lock=False)
    if "cluster" not in a.rooms:
        pytest.skip("makeService does not build the cluster room yet (issue 16 wiring request)")
    b = makeService(config(tmp_path, "b", redis_where), reactor=reactor, lock=False)
    tops = (a, b)
    for top in tops:
        top.startService()
    try:
        yield until(lambda: all(t.rooms["daq"].port is not None and t.rooms["cluster"].bus.health()["ok"]
                                and t.rooms["cluster"].leases.health()["ok"] for t in tops))
        yield a.rooms["cluster"].bus.subscribed()
        yield b.rooms["cluster"].bus.subscribed()
        yield b.rooms["cluster"].leases.subscribed()
        yield a.rooms["cluster"].leases.subscribed()

        def daq_port(top):
            return top.rooms["daq"].port.getHost().port
        pc = yield dial(daq_port(a))
        pc.send({"event": "name", "data": "M1"})
        ns_b = lambda: b.rooms["live"].namespaces.get("M1")  # noqa: E731
        for _ in range(40):
            pc.send({"event": "DataUpdate", "data": {"vib": {"type": "VIB", "data": [0.5, -0.5, 1.5]}}})
            yield task.deferLater(reactor, 0.1, lambda: None)
            if ns_b() is not None and ns_b().cache.get("vib"):
                break
        # Node B's live layer built `update`s from node A's seconds.
        assert ns_b().cache["vib"][-1]["data"] == pytest.approx(2.5 / 3)
        http_b = b.rooms["http"].port.getHost().port
        resp = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{http_b}/machines".encode())
        listed = orjson.loads((yield readBody(resp)))["machines"]
        assert [(m["machine"], m["node"], m["connected"]) for m in listed] == [("M1", "a", True)]

        other = yield dial(daq_port(b), source="127.0.0.2")  # another PC, same name
        other.send({"event": "name", "data": "M1"})
        yield other.closed
        assert a.rooms["hub"].machines["M1"].connected and not pc.closed.called

        pc2 = yield dial(daq_port(b))  # the same PC through node B
        pc2.send({"event": "name", "data": "M1"})
        yield pc.closed
        # B polls the lease until A has let go (TAKEOVER_POLL).
        yield until(lambda: b.rooms["cluster"].leases.holds("M1"))
        assert b.rooms["hub"].machines["M1"].connected and not a.rooms["hub"].machines["M1"].connected
        assert (yield b.rooms["cluster"].leases.owner("M1")) == ("b", "127.0.0.1")
        pc2.transport.loseConnection()
        yield pc2.closed
        yield until(lambda: not b.rooms["cluster"].leases.holds("M1"))
        yield task.deferLater(reactor, 0.1, lambda: None)
        assert (yield b.rooms["cluster"].leases.owner("M1")) is None
    finally:
        for top in tops:
            yield top.stopService()
