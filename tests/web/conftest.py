"""Fixtures: a configuration in tmp_path and a real RestAPI site on 127.0.0.1:0."""

import os

import orjson
import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.web.server import Site

from tsrmon.config import build_config
from tsrmon.hub.machines import MachineHub
from tsrmon.reader.sqlite_reader import SQLiteReader
from tsrmon.web.rest import RestAPI

ZONE = "Asia/Seoul"


def make_config(tmp_path, **sections):
    raw = {
        "DATABASE": {"PATH": "db"},
        "DATA": {"PATH": "data"},
        "LOGGER": {"PATH": "log"},
        "TIME": {"ZONE": ZONE},
        "APP": {"MACHINE_ALIASES": {"VacuumPump": "VacuumPump1"}},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return build_config(raw, None, str(tmp_path))


class FakeDAQ:
    def __init__(self, peer_host="10.0.0.5"):
        self.peer_host = peer_host

    def takeover(self, reason):
        pass

    def storage_congested(self, congested):
        pass


class Server:
    def __init__(self, api, port, reader):
        self.api = api
        self.port = port
        self.reader = reader
        self.url = f"http://127.0.0.1:{port.getHost().port}"

    def get(self, path, headers=None, method="GET"):
        return treq.request(method, self.url + path, headers=headers, persistent=False)

    @defer.inlineCallbacks
    def json(self, path, status=200, headers=None):
        """GET ``path``; check the status and JSON type; return the parsed body."""
        r = yield self.get(path, headers)
        body = yield r.content()
        assert r.code == status, (path, r.code, body[:500])
        assert r.headers.getRawHeaders("content-type")[0].startswith("application/json")
        return orjson.loads(body)


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
def db_dir(config):
    path = config.database.path
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture
def clock():
    c = Clock()
    c.advance(1_795_000_000)  # 2026-11-18 in Asia/Seoul
    return c


@pytest.fixture
def hub(config, clock):
    return MachineHub(config, clock)


@pytest.fixture
def serve(config, clock, hub):
    """serve(**RestAPI kwargs) → a started Server (stopped at teardown)."""
    started = []

    def start(cfg=None, **kwargs):
        cfg = config if cfg is None else cfg
        reader = kwargs.pop("reader", None) or SQLiteReader(cfg, reactor)
        reader.startService()
        api = RestAPI(cfg, clock, hub, reader, **kwargs)
        port = reactor.listenTCP(0, Site(api.resource()), interface="127.0.0.1")
        server = Server(api, port, reader)
        started.append(server)
        return server

    yield start
    for s in started:
        pytest_twisted.blockon(s.port.stopListening())
        s.reader.stopService()
