"""The listener service: admission, tokens, takeover, keepalive, late JSON
samples, drain on stop, health and counters."""

import json
import socket

import pytest_twisted
from twisted.internet import endpoints, protocol, reactor, task

from tests.ingest.helpers import frame, port_of, send, settle, start_listener, wait_until


class Daq(protocol.Protocol):
    """A test DAQ that stays connected until told otherwise."""

    def __init__(self):
        self.lost = False

    def connectionLost(self, reason):
        self.lost = True


def connect(svc, bind=None):
    kw = {"bindAddress": (bind, 0)} if bind else {}
    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port_of(svc), **kw)
    return endpoints.connectProtocol(ep, Daq())


def data_frame(value=1.0):
    return frame("DataUpdate", {"v": {"type": "VIB", "data": [value]}})


def json_line(obj):
    return json.dumps(obj).encode() + b"\n"


@pytest_twisted.inlineCallbacks
def test_allow_list_refuses_at_connect(tmp_path):
    svc, hub, rec = start_listener(tmp_path, daq={"ALLOW": ["10.0.0.0/8"]})
    try:
        yield send(port_of(svc), [frame("name", "M1") + data_frame()])
        yield settle(svc, 1)
        assert svc.factory.counters["refused_connections"] == 1
        assert hub.machines == {} and rec.added == []
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_allow_list_admits_matching_source(tmp_path):
    svc, hub, rec = start_listener(tmp_path, daq={"ALLOW": ["127.0.0.0/8"]})
    try:
        yield send(port_of(svc), [frame("name", "M1") + data_frame()])
        yield settle(svc, 1)
        assert [a[1] for a in rec.added] == ["v"]
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_max_connections(tmp_path):
    svc, hub, rec = start_listener(tmp_path, daq={"MAX_CONNECTIONS": 1})
    try:
        first = yield connect(svc)
        first.transport.write(frame("name", "M1"))
        yield wait_until(lambda: "M1" in hub.machines)
        second = yield connect(svc)
        yield wait_until(lambda: second.lost)
        assert svc.factory.counters["refused_connections"] == 1
        assert not first.lost
        first.transport.loseConnection()
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_tokens(tmp_path):
    svc, hub, rec = start_listener(tmp_path, daq={"TOKENS": {"M1": "s3cret"}})
    try:
        port = port_of(svc)
        point = {"v": {"type": "VIB", "data": [1.0]}}
        yield send(port, [json_line({"event": "name", "data": "M1", "token": "wrong"}),
                          json_line({"event": "DataUpdate", "data": point})])
        yield send(port, [frame("name", "M1") + data_frame()])  # pickle cannot carry a token
        yield send(port, [json_line({"event": "name", "data": "M1"})])
        yield settle(svc, 3)
        assert rec.added == [] and "M1" not in hub.machines
        assert svc.factory.counters["refused_names"] == 3
        yield send(port, [json_line({"event": "name", "data": "M1", "token": "s3cret"}),
                          json_line({"event": "DataUpdate", "data": point})])
        yield settle(svc, 4)
        assert [a[1] for a in rec.added] == ["v"]
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_json_time_goes_to_the_hub_as_late(tmp_path):
    svc, hub, rec = start_listener(tmp_path)
    try:
        yield send(port_of(svc), [
            json_line({"event": "name", "data": "M1"}),
            json_line({"event": "DataUpdate", "data": {"v": {"type": "VIB", "data": [1, 2.5]}},
                       "time": "2026-01-02T03:04:05+09:00"}),
            json_line({"event": "DataUpdate", "data": {"v": {"type": "VIB", "data": [3.0]}}}),
            json_line({"event": "FaultDetect", "data": {"score": 7, "threshold": 5}, "time": 1767290645}),
            json_line({"event": "DataUpdate", "data": {"v": {"type": "VIB", "data": [9.0]}},
                       "time": "2999-01-01T00:00:00Z"}),
            json_line({"event": "DataUpdate", "data": {"v": {"type": "VIB", "data": [9.0]}}, "time": 5}),
        ])
        yield settle(svc, 1)
        assert hub.machines["M1"].refused_frames == 2  # in the future, before 2000
        assert rec.added[0][3:] == ([1.0, 2.5], 1767290645.0, True)
        assert rec.added[1][3] == [3.0] and rec.added[1][5] is False
        assert rec.faults[0][1:] == (7.0, 5.0, 1767290645.0)
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_takeover_from_same_address_and_refusal_from_another(tmp_path):
    svc, hub, rec = start_listener(tmp_path)
    try:
        old = yield connect(svc)
        old.transport.write(frame("name", "M1") + data_frame(1.0))
        yield wait_until(lambda: len(rec.added) == 1)
        new = yield connect(svc)
        new.transport.write(frame("name", "M1") + data_frame(2.0))
        yield wait_until(lambda: old.lost and len(rec.added) == 2)
        machine = hub.machines["M1"]
        assert machine.takeovers == 1 and machine.connected
        assert [a[3] for a in rec.added] == [[1.0], [2.0]]
        # Another PC (another source address) claiming the connected name.
        other = yield connect(svc, bind="127.0.0.2")
        other.transport.write(frame("name", "M1") + data_frame(3.0))
        yield wait_until(lambda: other.lost)
        assert not new.lost and machine.connected
        assert svc.factory.counters["refused_names"] == 1
        assert len(rec.added) == 2
        new.transport.loseConnection()
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_keepalive_on_accepted_sockets(tmp_path):
    svc, hub, rec = start_listener(tmp_path)
    try:
        daq = yield connect(svc)
        yield wait_until(lambda: len(svc.factory.connections) == 1)
        (conn,) = svc.factory.connections
        sock = conn.transport.getHandle()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 60
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        daq.transport.loseConnection()
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_stop_drains_what_was_received_while_paused(tmp_path):
    svc, hub, rec = start_listener(tmp_path, daq={"MAX_PAUSE": 60})
    daq = yield connect(svc)
    daq.transport.write(frame("name", "M1"))
    yield wait_until(lambda: "M1" in hub.machines)
    hub.storage_congested(True)
    daq.transport.write(b"".join(data_frame(float(i)) for i in range(50)))
    # Give loopback time to deliver into the server's socket buffer.
    yield task.deferLater(reactor, 0.3, lambda: None)
    assert rec.added == []  # paused: nothing read yet
    assert svc.counters()["paused_now"] == 1
    yield svc.stopService()
    assert [a[3][0] for a in rec.chunks] == [float(i) for i in range(50)]
    assert rec.per_sensor(rec.added) == rec.per_sensor(rec.chunks)
    assert svc.factory.connections == set()
    assert not hub.machines["M1"].connected
    yield wait_until(lambda: daq.lost)


@pytest_twisted.inlineCallbacks
def test_health_counters_and_connection_status(tmp_path):
    svc, hub, rec = start_listener(tmp_path)
    try:
        assert svc.healthy()["ok"] is True
        daq = yield connect(svc)
        daq.transport.write(frame("name", "M1") + data_frame() + b"\x80\x04garbage\x5c\x6f" + data_frame())
        yield wait_until(lambda: len(rec.added) == 2)
        counters = svc.counters()
        assert counters["frames"] == 2 and counters["refused_frames"] == 1
        assert counters["open_connections"] == 1
        (status,) = svc.connection_status()
        assert status["machine"] == "M1" and status["encoding"] == "pickle"
        assert status["refused_frames"] == 1 and status["frames"] == 2
        assert hub.machines["M1"].refused_frames == 1
        daq.transport.loseConnection()
    finally:
        yield svc.stopService()
    assert svc.healthy()["ok"] is False
