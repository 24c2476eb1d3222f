"""Issue 18 fan-out: a tick's (or a statistics roll's) events reach each client
as ONE transport write, each event still its own Engine.IO packet / WebSocket
frame, in order; polling gets them in one poll answer."""

import json
import struct

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater

from tests.live.conftest import FakeDAQ
from tests.live.helpers import HTTP, events, sio_ws
from tsrmon.live.engineio import Outgoing, ws_frames
from tsrmon.stats.sums import PartialSums

T0 = 1_800_000_000
SENSORS = [f"s{i}" for i in range(6)]


def parse_frames(data):
    """RFC 6455 §5.2 server frames: [(fin, opcode, payload)]; asserts nothing is left over."""
    out, pos = [], 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert not b1 & 0x80, "server frames are never masked"
        n, head = b1 & 0x7F, 2
        if n == 126:
            n, head = struct.unpack("!H", data[pos + 2:pos + 4])[0], 4
        elif n == 127:
            n, head = struct.unpack("!Q", data[pos + 2:pos + 10])[0], 10
        out.append((bool(b0 & 0x80), b0 & 0x0F, data[pos + head:pos + head + n]))
        pos += head + n
    assert pos == len(data)
    return out


class SpySocket:
    """A TCP transport's socket that records what each ``send`` handed to the
    kernel (the direct send of a tick and Twisted's ``doWrite`` alike)."""

    def __init__(self, sock, seen):
        self._sock = sock
        self._seen = seen

    def send(self, data, *flags):
        sent = self._sock.send(data, *flags)
        self._seen.append(bytes(data[:sent]))
        return sent

    def __getattr__(self, name):
        return getattr(self._sock, name)


def spy_writes(server):
    """Every WebSocket session's sends to the kernel: {sid: [bytes sent]}."""
    writes = {}
    for sid, session in server.live.engine.sessions.items():
        transport = session.ws.transport
        seen = writes[sid] = []
        transport.socket = SpySocket(transport.socket, seen)
    return writes


def test_ws_frames_one_frame_per_packet_concatenated():
    shared = Outgoing('42/sio/m1,["update",{}]')
    packets = [shared, "2", "x" * 126, "é" * 40000, b"\x01\x02", shared]
    data = ws_frames(packets)
    frames = parse_frames(data)
    assert [(fin, op) for fin, op, _ in frames] == [(True, 1)] * 4 + [(True, 2), (True, 1)]
    assert frames[4] == (True, 2, b"\x01\x02")
    assert [p.decode("utf-8") for _, op, p in frames if op == 1] == [
        shared.text, "2", "x" * 126, "é" * 40000, shared.text]
    # EIO3 binary messages carry the 0x04 type byte; one packet is one frame.
    assert parse_frames(ws_frames([b"ab"], eio3=True)) == [(True, 2, b"\x04ab")]
    assert ws_frames(["4hi"]) == b"\x81\x034hi"


@pytest_twisted.ensureDeferred
async def test_tick_reaches_each_client_in_one_write_every_event_in_order(make_server):
    clock = Clock()
    clock.advance(T0 + 0.5)
    server = make_server(clock=clock)
    server.hub.claim("m1", FakeDAQ())
    clients = [await sio_ws(server.ws_url) for _ in range(3)]
    writes = spy_writes(server)
    for i, sensor in enumerate(SENSORS):
        server.bus.second("m1", sensor, "VIB", clock.seconds(), PartialSums.of([float(i + 1)]))
    clock.advance(1)  # the tick: one update per sensor
    for c in clients:
        frames = [await c.recv() for _ in SENSORS]
        got = events(frames)
        assert [name for name, _ in got] == ["update"] * len(SENSORS)
        assert [args[0]["sensor_name"] for _, args in got] == SENSORS
        assert [args[0]["data"] for _, args in got] == [float(i + 1) for i in range(len(SENSORS))]
    assert len(writes) == 3
    for sid, chunks in writes.items():
        assert len(chunks) == 1, f"{sid}: {len(chunks)} writes for one tick"
        frames = parse_frames(chunks[0])
        assert len(frames) == len(SENSORS) and all(fin and op == 1 for fin, op, _ in frames)
    # Encoded once per broadcast: every client got the very same bytes.
    assert len({chunks[0] for chunks in writes.values()}) == 1
    assert server.live.counters()["updates_sent"] == 3 * len(SENSORS)


@pytest_twisted.ensureDeferred
async def test_statistics_roll_reaches_each_subscriber_in_one_write(make_server):
    server = make_server()  # the real reactor: a roll is batched until its next turn
    server.hub.claim("m1", FakeDAQ())
    clients = [await sio_ws(server.ws_url) for _ in range(2)]
    for n, c in enumerate(clients):
        c.send(f'42/sio/m1,{n}["subscribe",{json.dumps(SENSORS)}]')
        await c.recv_until(lambda f: f.startswith(f"43/sio/m1,{n}"))
    writes = spy_writes(server)
    t = reactor.seconds()
    for i, sensor in enumerate(SENSORS):  # one roll: every sensor in one synchronous loop
        server.bus.second("m1", sensor, "VIB", t, PartialSums.of([float(i)]))
    for c in clients:
        seconds = []
        while len(seconds) < len(SENSORS):
            f = await c.recv()
            if f == "2":
                c.send("3")
            seconds += [a[0]["sensor_name"] for name, a in events([f]) if name == "second"]
        assert seconds == SENSORS
    await deferLater(reactor, 0.05, lambda: None)
    for sid, chunks in writes.items():
        with_seconds = [c for c in chunks if b'["second"' in c]
        assert len(with_seconds) == 1, f"{sid}: the roll took {len(with_seconds)} writes"
        payloads = [p for _, _, p in parse_frames(with_seconds[0]) if b'["second"' in p]
        assert len(payloads) == len(SENSORS)


@pytest_twisted.ensureDeferred
async def test_polling_client_gets_the_whole_tick_in_one_poll_answer(make_server):
    clock = Clock()
    clock.advance(T0 + 0.5)
    server = make_server(clock=clock)
    http = HTTP(server.url)
    try:
        resp, body = await http.get("/socket.io/?EIO=4&transport=polling")
        sid = json.loads(body[1:])["sid"]
        q = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        await http.post(q, b"40/sio/m1,")
        resp, body = await http.get(q)
        assert body.startswith(b"40/sio/m1,")
        parked = defer.ensureDeferred(http.get(q))
        await deferLater(reactor, 0.1, lambda: None)  # the GET is parked
        for i, sensor in enumerate(SENSORS):
            server.bus.second("m1", sensor, "VIB", clock.seconds(), PartialSums.of([float(i)]))
        clock.advance(1)
        resp, body = await parked
        packets = body.decode("utf-8").split("\x1e")
        assert [a[0]["sensor_name"] for _, a in events(packets)] == SENSORS
    finally:
        await http.close()


@pytest_twisted.ensureDeferred
async def test_a_tick_larger_than_the_queue_bound_does_not_drop_a_reading_client(make_server):
    clock = Clock()
    clock.advance(T0 + 0.5)
    server = make_server(clock=clock, live={"MAX_QUEUE": 3})
    ws = await sio_ws(server.ws_url)
    for i, sensor in enumerate(SENSORS):  # 6 updates in one tick, bound 3
        server.bus.second("m1", sensor, "VIB", clock.seconds(), PartialSums.of([float(i)]))
    clock.advance(1)
    got = events([await ws.recv() for _ in SENSORS])
    assert [a[0]["sensor_name"] for _, a in got] == SENSORS
    assert server.live.counters()["dropped_slow_clients"] == 0


@pytest_twisted.ensureDeferred
async def test_a_tick_hands_each_client_its_updates_in_one_call_whatever_the_sensor_count(make_server):
    clock = Clock()
    clock.advance(T0 + 0.5)
    server = make_server(clock=clock)
    clients = [await sio_ws(server.ws_url) for _ in range(2)]
    calls = {}
    for sid, session in server.live.engine.sessions.items():
        def send_many(packets, _real=session.send_many, _sid=sid):
            calls[_sid] = calls.get(_sid, 0) + 1
            return _real(packets)
        session.send_many = send_many
    for n_sensors in (2, 12):
        calls.clear()
        for i in range(n_sensors):
            server.bus.second("m1", f"s{i}", "VIB", clock.seconds(), PartialSums.of([float(i)]))
        clock.advance(1)
        assert sorted(calls.values()) == [1, 1], (n_sensors, calls)
        for c in clients:
            got = events([await c.recv() for _ in range(n_sensors)])
            assert [a[0]["sensor_name"] for _, a in got] == [f"s{i}" for i in range(n_sensors)]
