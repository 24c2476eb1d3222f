"""Fan-out: 500 clients on one namespace, and slow clients that are dropped."""

import json
import os
import socket
import struct
import sys

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.task import Clock

from tests.live.conftest import FakeDAQ
from tests.live.helpers import HTTP, eventually, events, sio_ws
from tsrmon.stats.sums import PartialSums

HERE = os.path.dirname(os.path.abspath(__file__))


class ClientsProcess(protocol.ProcessProtocol):
    def __init__(self):
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()
        self.out = b""
        self.err = b""

    def outReceived(self, data):
        self.out += data
        if b"READY\n" in self.out and not self.ready.called:
            self.ready.callback(None)

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        if not self.ready.called:
            self.ready.errback(RuntimeError(self.err.decode(errors="replace")))
        self.ended.callback(reason.value.exitCode)


@pytest.mark.slow  # many clients
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_500_clients_each_receive_every_update(make_server):
    clock = Clock()
    clock.advance(1_800_000_000)
    server = make_server(clock=clock, live={"INTERVAL": 1})
    server.hub.claim("m1", FakeDAQ())
    n, updates = 500, 5
    proc = ClientsProcess()
    reactor.spawnProcess(proc, sys.executable,
                         [sys.executable, os.path.join(HERE, "many_clients.py"),
                          str(server.port.getHost().port), str(n), str(updates)],
                         env=dict(os.environ))
    await proc.ready
    assert server.live.counters()["namespace_clients"] == n
    for i in range(updates):
        server.bus.second("m1", "vib1", "VIB", clock.seconds(), PartialSums.of([float(i + 1)]))
        clock.advance(1)
    code = await proc.ended
    result = json.loads(proc.out.decode().splitlines()[-1])
    assert code == 0, proc.err
    assert result["updates"] == [updates] * n
    counters = server.live.counters()
    assert counters["updates_sent"] == n * updates
    assert counters["dropped_slow_clients"] == 0


def stalled_websocket(port, nsp="/sio/m1"):
    """A raw client that connects, joins ``nsp`` and then never reads again."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
    got = b""
    while b"0{" not in got:
        got += s.recv(4096)
    payload = ("40" + nsp + ",").encode()
    s.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + b"\0\0\0\0" + payload)
    while b'{"sid"' not in got:
        got += s.recv(4096)
    return s


@pytest_twisted.ensureDeferred
async def test_stalled_client_dropped_without_slowing_the_others(make_server):
    server = make_server(clock=Clock(), live={"MAX_QUEUE": 20})
    healthy = await sio_ws(server.ws_url)
    stalled = await threads.deferToThread(stalled_websocket, server.port.getHost().port)
    try:
        await eventually(lambda: server.live.counters()["namespace_clients"] == 2)
        room = server.live.namespace("m1")
        big = "x" * 100_000
        received = 0
        for i in range(200):
            room.broadcast("update", {"sensor_name": "vib1", "data": float(i), "time": big})
            frame = await healthy.recv()
            assert events([frame])[0][1][0]["data"] == float(i)
            received += 1
            if server.live.counters()["dropped_slow_clients"]:
                break
        assert server.live.counters()["dropped_slow_clients"] == 1
        assert server.live.counters()["namespace_clients"] == 1
        # The healthy client goes on receiving.
        server.hub.claim("m1", FakeDAQ())
        server.hub.fault(server.hub.get("m1"), 1.0, 2.0)
        frames = await healthy.recv_until(lambda f: f.startswith('42/sio/m1,["anomaly"'))
        assert frames[-1] == '42/sio/m1,["anomaly",{"score":1.0,"threshold":2.0}]'
    finally:
        stalled.close()


@pytest_twisted.ensureDeferred
async def test_polling_client_that_never_polls_is_dropped(make_server):
    server = make_server(clock=Clock(), live={"MAX_QUEUE": 5})
    http = HTTP(server.url)
    try:
        resp, body = await http.get("/socket.io/?EIO=4&transport=polling")
        sid = json.loads(body[1:])["sid"]
        q = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        await http.post(q, b"40/sio/m1,")
        server.hub.claim("m1", FakeDAQ())
        for i in range(6):
            server.hub.fault(server.hub.get("m1"), float(i), 1.0)
        assert server.live.counters()["dropped_slow_clients"] == 1
        resp, body = await http.get(q)
        assert resp.code == 400 and json.loads(body)["code"] == 1
    finally:
        await http.close()
