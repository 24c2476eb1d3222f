"""Fixtures of the live-layer tests: a LiveService on a real loopback port."""

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from tsrmon.config import build_config
from tsrmon.hub import LiveBus, MachineHub, MachineRegistry
from tsrmon.live.service import LiveService


class FakeDAQ:
    """The least a hub needs of a DAQ connection."""

    def __init__(self, host="127.0.0.1"):
        self.peer_host = host
        self.closed = None

    def takeover(self, reason):
        self.closed = reason

    def storage_congested(self, congested):
        pass


def make_config(tmp_path, live=None, auth=None, cors=None):
    raw = {"LIVE": {"INTERVAL": 1, "PING_INTERVAL": 25, "PING_TIMEOUT": 20}, "TIME": {"ZONE": "Asia/Seoul"}}
    raw["LIVE"].update(live or {})
    if auth is not None:
        raw["AUTH"] = {"API_TOKENS": auth}
    if cors is not None:
        raw["SERVER"] = {"CORS_ORIGINS": cors}
    return build_config(raw, None, str(tmp_path))


class LiveServer:
    """A registry, live bus, hub + LiveService served by a twisted.web Site on
    127.0.0.1:<port>, built in the daemon's order (tests feed seconds
    through ``bus.second`` as statistics do)."""

    def __init__(self, config, clock, history=None, machines=("m1",)):
        self.config = config
        self.clock = clock
        self.registry = MachineRegistry(config, clock)
        self.registry.remember(machines)
        self.bus = LiveBus()
        self.live = LiveService(config, clock, self.registry, history=history, bus=self.bus)
        self.hub = MachineHub(config, clock, registry=self.registry, live=self.bus)
        root = Resource()
        root.putChild(b"socket.io", self.live.resource())
        self.site = Site(root)
        self.port = None

    def start(self):
        self.live.startService()
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        self.ws_url = f"ws://127.0.0.1:{self.port.getHost().port}"
        return self

    async def stop(self):
        await self.live.stopService()
        await self.port.stopListening()


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(clock=None, live=None, auth=None, cors=None, history=None, machines=("m1",)):
        config = make_config(tmp_path, live=live, auth=auth, cors=cors)
        server = LiveServer(config, clock or reactor, history=history, machines=machines).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        pytest_twisted.blockon(defer.ensureDeferred(server.stop()))


class Conformance:
    """The conformance fixture site on a free port; its timers on ``clock``."""

    def __init__(self, clock, **options):
        from tsrmon.live.conformance import build_site

        self.clock = clock
        root, self.echo, self.sio = build_site(clock, **options)
        self.port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        port = self.port.getHost().port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"

    async def stop(self):
        self.echo.close_all()
        self.sio.close_all()
        await self.port.stopListening()


@pytest.fixture
def conformance():
    """A factory: ``conformance(clock, **options)``, stopped after the test."""
    made = []

    def make(clock, **options):
        c = Conformance(clock, **options)
        made.append(c)
        return c

    yield make
    for c in made:
        pytest_twisted.blockon(defer.ensureDeferred(c.stop()))


@pytest.fixture(autouse=True)
def no_logged_failures():
    """A failure logged by the live layer (log.failure) fails the test."""
    from twisted.logger import globalLogPublisher

    failures = []

    def observe(event):
        if "log_failure" in event and (event.get("log_namespace") or "").startswith("tsrmon"):
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)
    assert not failures, [(e.get("log_format"), e["log_failure"].getTraceback()) for e in failures]
