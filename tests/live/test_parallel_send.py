"""Issue 18: a big flush's direct sends are made from two threads
(``engineio/fanout.py``): every client still gets every byte in order (a full
socket: the rest follows through ``transport.write``; a client gone
mid-tick: the reactor finds the error), the helper thread ends with the
service, and a small flush never uses it."""

import socket
import struct
import threading

import pytest
import pytest_twisted
from twisted.internet import defer, threads
from twisted.internet.task import Clock

from tests.live.helpers import TIMEOUT, eventually
from tests.live.test_direct_send import RawClient, next_frame, updates
from tsrmon.live.engineio import fanout


def spy_on_sends(monkeypatch):
    """The names of the threads that ran ``send_some`` (one call per thread per batch)."""
    names = []
    real = fanout.send_some

    def spy(pending, results):
        names.append(threading.current_thread().name)
        real(pending, results)
    monkeypatch.setattr(fanout, "send_some", spy)
    return names


def flush(server, payloads):
    """One corked flush (as a live tick) broadcasting ``update`` per payload."""
    engine, room = server.live.engine, server.live.namespace("m1")
    engine.cork()
    try:
        for p in payloads:
            room.broadcast("update", p)
    finally:
        engine.uncork()


async def connect(server, n, small=(), timeout=TIMEOUT):
    """``n`` raw clients of ``server``, once its namespace counts them all;
    those whose index is in ``small`` read through a 4 KB buffer."""
    port = server.port.getHost().port
    clients = await defer.gatherResults(
        [threads.deferToThread(RawClient, port, 4096 if i in small else None) for i in range(n)])
    await eventually(lambda: server.live.counters()["namespace_clients"] == n, timeout=timeout)
    return clients


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_many_clients_get_every_byte_in_order_through_two_threads(make_server, monkeypatch):
    server = make_server(clock=Clock(), live={"MAX_QUEUE": 10_000})
    engine = server.live.engine
    n = 100
    assert n >= engine.parallel_min
    small = set(range(0, n, 10))
    clients = await connect(server, n, small, timeout=20)
    by_peer = {s.ws.transport.getPeer().port: s.ws.transport for s in engine.sessions.values()}
    transports = [by_peer[c.sock.getsockname()[1]] for c in clients]
    for i in small:  # the kernel takes only part of a tick for these
        transports[i].socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    # Two clients leave before the tick, unseen by the reactor (it does not
    # turn before the sends): one with a reset, one with a FIN.
    reset, gone = clients[1], clients[2]
    reset.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.sock.close()
    gone.sock.close()
    names = spy_on_sends(monkeypatch)
    big = "x" * 8000
    ticks = [[{"sensor_name": "vib1", "data": float(t * 8 + k), "time": big} for k in range(8)]
             for t in range(2)]
    flush(server, ticks[0])
    assert sorted(set(names)) == sorted({threading.current_thread().name, engine.sender.name})
    for i in small:  # partial sends: the rest waits in Twisted's buffer, in order
        assert transports[i]._tempDataLen or transports[i].dataBuffer
    flush(server, ticks[1])  # those with a backlog take the ordinary path, behind it
    readers = [c for i, c in enumerate(clients) if c not in (reset, gone)]
    got = await defer.gatherResults([threads.deferToThread(c.frames, 16) for c in readers])
    for frames in got:
        assert [u["data"] for u in updates(frames)] == [float(i) for i in range(16)]
        assert all(u["time"] == big for u in updates(frames))
    await eventually(lambda: server.live.counters()["namespace_clients"] == n - 2, timeout=10)
    assert server.live.counters()["dropped_slow_clients"] == 0
    for c in readers:
        c.sock.close()


@pytest_twisted.ensureDeferred
async def test_the_helper_thread_ends_with_the_service(make_server, monkeypatch):
    server = make_server(clock=Clock())
    engine = server.live.engine
    engine.parallel_min = 2
    clients = await connect(server, 3)
    names = spy_on_sends(monkeypatch)
    flush(server, [{"sensor_name": "vib1", "data": 1.0, "time": "t"}])
    thread = engine.sender._thread
    assert thread is not None and thread.is_alive() and engine.sender.name in names
    await server.live.stopService()
    assert not thread.is_alive() and engine.sender._thread is None
    assert thread not in threading.enumerate()
    for c in clients:
        c.sock.close()


@pytest_twisted.ensureDeferred
async def test_a_small_flush_sends_from_the_reactor_thread_only(make_server, monkeypatch):
    server = make_server(clock=Clock())
    engine = server.live.engine
    n = 3
    assert n < engine.parallel_min
    clients = await connect(server, n)
    names = spy_on_sends(monkeypatch)
    flush(server, [{"sensor_name": "vib1", "data": 2.0, "time": "t"}])
    assert names == [] and engine.sender._thread is None
    for c in clients:
        c.buf += c.ready_now()  # the bytes are in the kernel already
        assert [u["data"] for u in updates(c.frames(1))] == [2.0]
        c.sock.close()


@pytest_twisted.ensureDeferred
async def test_a_close_frame_written_mid_flush_follows_the_held_bytes(make_server):
    """A session closed while the flush still holds its client's bytes: its
    close frame (autobahn's own write) goes out behind them, not before."""
    server = make_server(clock=Clock())
    engine = server.live.engine
    engine.parallel_min = 2
    clients = await connect(server, 3, small=range(3))
    big = {"sensor_name": "vib1", "data": 3.0, "time": "x" * 100_000}  # a partial send
    engine.cork()
    try:
        server.live.namespace("m1").broadcast("update", big)
        first, last = engine._corked[0], engine._corked[-1]
        port = first.ws.transport.getPeer().port
        first.ws.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        flush_last = last.flush_held

        def close_first_then_flush(*args):
            assert first.ws.direct is not None  # its bytes wait in the batch
            first.close("test")
            return flush_last(*args)
        last.flush_held = close_first_then_flush
    finally:
        engine.uncork()
    client = next(c for c in clients if c.sock.getsockname()[1] == port)

    def read_to_close():
        frames = []  # (opcode, payload)
        while not frames or frames[-1][0] != 0x8:
            got = next_frame(client.buf)
            if got is None:
                client.buf += client.sock.recv(65536)
                continue
            frames.append((client.buf[0] & 0x0F, got[0]))
            client.buf = got[1]
        return frames
    frames = await threads.deferToThread(read_to_close)
    assert [o for o, _ in frames].count(0x8) == 1
    assert updates([p for o, p in frames if o == 0x1 and p.startswith(b'42/sio/m1,["update"')]) == [big]
    for c in clients:
        c.sock.close()


def test_the_sender_reports_each_send_and_sends_alone_once_stopped():
    pairs = [socket.socketpair() for _ in range(6)]
    try:
        for a, _ in pairs:
            a.setblocking(False)
        pairs[0][1].close()  # the peer is gone: an error
        sender = fanout.ParallelSender()
        data = [(a, b"x" * (i + 1)) for i, (a, _) in enumerate(pairs)]
        results = sender.send(data)
        assert results[0] == fanout.FAILED and results[1:] == [2, 3, 4, 5, 6]
        thread = sender._thread
        assert thread.is_alive()
        sender.stop()
        assert not thread.is_alive() and sender._thread is None
        assert sender.send(data[1:]) == [2, 3, 4, 5, 6] and sender._thread is None
        assert [b.recv(100) for _, b in pairs[1:]] == [b"x" * (i + 1) * 2 for i in range(1, 6)]
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_a_failure_in_the_helper_thread_is_logged_by_the_waiting_thread():
    import time

    from twisted.logger import Logger

    class Flaky:
        """A socket whose send fails (not an OSError) in the helper thread only;
        the calling thread's sends are slow, so the helper takes some."""

        def __init__(self, name):
            self.name = name

        def send(self, data):
            if threading.current_thread().name == self.name:
                raise RuntimeError("helper broke")
            time.sleep(0.005)
            return len(data)

    events = []
    sender = fanout.ParallelSender(name="fanout-test-helper")
    sender.log = Logger(observer=events.append)
    try:
        results = sender.send([(Flaky(sender.name), b"abc") for _ in range(20)])
    finally:
        sender.stop()
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1 and failures[0]["log_failure"].check(RuntimeError)
    assert "helper thread failed" in failures[0]["log_format"]
    assert 3 in results and 0 in results  # the helper's entry is left for transport.write
