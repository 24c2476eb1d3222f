"""Issue 18 fan-out: a tick's bytes go straight into each client's socket
(``engineio.websocket.send_now``), and what the kernel does not take follows
through Twisted's buffer, in order; a stalled client is still dropped
(tests/live/test_fanout.py)."""

import json
import socket
import struct

import pytest_twisted
from twisted.internet import threads
from twisted.internet.task import Clock

from tests.live.conftest import FakeDAQ
from tests.live.helpers import eventually
from tsrmon.stats.sums import PartialSums

T0 = 1_800_000_000
UPGRADE = (b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")


def next_frame(buf):
    """``(payload, rest)`` of the first complete server frame in ``buf``, or None."""
    if len(buf) < 2:
        return None
    n, head = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, head = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, head = struct.unpack("!Q", buf[2:10])[0], 10
    if len(buf) < head + n:
        return None
    return buf[head:head + n], buf[head + n:]


class RawClient:
    """A blocking raw WebSocket client of ``/sio/m1``: its own socket, read at will."""

    def __init__(self, port, rcvbuf=None):
        s = self.sock = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(UPGRADE)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        self.buf = buf.split(b"\r\n\r\n", 1)[1]
        self.expect(lambda p: p.startswith(b"0{"))
        payload = b"40/sio/m1,"
        s.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + b"\0\0\0\0" + payload)
        self.expect(lambda p: p.startswith(b"40/sio/m1,{"))

    def frames(self, wanted):
        """Read until ``wanted`` frames (pings skipped); their payloads."""
        out = []
        while len(out) < wanted:
            got = next_frame(self.buf)
            if got is None:
                self.buf += self.sock.recv(65536)
                continue
            payload, self.buf = got
            if payload != b"2":
                out.append(payload)
        return out

    def expect(self, predicate):
        while not predicate(self.frames(1)[0]):
            pass

    def ready_now(self):
        """What the kernel already holds for this client (no waiting)."""
        try:
            return self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b""


def updates(payloads):
    return [json.loads(p[len(b"42/sio/m1,"):])[1] for p in payloads]


@pytest_twisted.ensureDeferred
async def test_a_tick_is_in_every_clients_socket_when_it_returns(make_server):
    clock = Clock()
    clock.advance(T0 + 0.5)
    server = make_server(clock=clock)
    server.hub.claim("m1", FakeDAQ())
    port = server.port.getHost().port
    clients = [await threads.deferToThread(RawClient, port) for _ in range(3)]
    await eventually(lambda: server.live.counters()["namespace_clients"] == 3)
    for i in range(4):
        server.bus.second("m1", f"s{i}", "VIB", clock.seconds(), PartialSums.of([float(i)]))
    clock.advance(1)  # the tick; the reactor does not turn before the checks below
    for session in server.live.engine.sessions.values():
        t = session.ws.transport
        assert not t._tempDataLen and t.offset == len(t.dataBuffer), "left for a later reactor pass"
    for c in clients:
        c.buf += c.ready_now()
        got = updates(c.frames(4))
        assert [(u["sensor_name"], u["data"]) for u in got] == [(f"s{i}", float(i)) for i in range(4)]
        c.sock.close()
    stats = server.live.counters()
    assert stats["tick_seconds"]["count"] == stats["tick_cpu_seconds"]["count"] >= 1


@pytest_twisted.ensureDeferred
async def test_what_the_kernel_does_not_take_follows_in_order(make_server):
    server = make_server(clock=Clock(), live={"MAX_QUEUE": 10_000})
    port = server.port.getHost().port
    client = await threads.deferToThread(RawClient, port, 4096)
    await eventually(lambda: server.live.counters()["namespace_clients"] == 1)
    transport = next(iter(server.live.engine.sessions.values())).ws.transport
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    room = server.live.namespace("m1")
    big = "x" * 20_000
    n, buffered = 0, False
    # The client does not read: sends go partial, then the rest waits in
    # Twisted's buffer (and, once that is full, in the session's backlog).
    while n < 40 or not buffered:
        room.broadcast("update", {"sensor_name": "vib1", "data": float(n), "time": big})
        n += 1
        buffered = buffered or bool(transport._tempDataLen or transport.dataBuffer)
        assert n < 400, "the kernel never refused a byte"
    got = await threads.deferToThread(client.frames, n)
    assert [u["data"] for u in updates(got)] == [float(i) for i in range(n)]
    assert all(u["time"] == big for u in updates(got))
    assert server.live.counters()["dropped_slow_clients"] == 0
    client.sock.close()


@pytest_twisted.ensureDeferred
async def test_the_tick_series_records_wall_and_cpu_time(make_server):
    clock = Clock()
    clock.advance(T0 + 0.5)
    server = make_server(clock=clock)
    live = server.live
    wall, cpu = iter([10.0, 10.25]), iter([3.0, 3.125])
    live.now, live.cpu_time = lambda: next(wall), lambda: next(cpu)
    before = live.counters()
    clock.advance(1)
    after = live.counters()
    assert after["tick_seconds"]["count"] == before["tick_seconds"]["count"] + 1
    assert after["tick_seconds"]["sum"] - before["tick_seconds"]["sum"] == 0.25
    assert after["tick_cpu_seconds"]["sum"] - before["tick_cpu_seconds"]["sum"] == 0.125
