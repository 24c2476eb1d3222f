"""Storage stalled while 10 DAQs stream: reading pauses for DAQ.MAX_PAUSE,
then the server reads and drops (counted); buffers stay under the caps."""

import pytest_twisted
from twisted.internet import endpoints, protocol, reactor, task

from tests.ingest.helpers import frame, port_of, start_listener, wait_until

MAX_BUFFER = 256 * 1024
MAX_FRAME = 64 * 1024
PAYLOAD = frame("DataUpdate", {f"vib{i}": {"type": "VIB", "data": [0.25 * j for j in range(30)]}
                               for i in (1, 2)})


class StreamingDaq(protocol.Protocol):
    """Writes frames every 10 ms and never reads, like the deployed DAQ."""

    def __init__(self, name):
        self.name = name
        self.loop = None
        self.lost = False

    def connectionMade(self):
        self.transport.write(frame("name", self.name))
        self.loop = task.LoopingCall(self.transport.write, PAYLOAD * 20)
        self.loop.start(0.01)

    def connectionLost(self, reason):
        self.lost = True
        if self.loop is not None and self.loop.running:
            self.loop.stop()


@pytest_twisted.inlineCallbacks
def test_storage_stalled_with_ten_daqs(tmp_path):
    svc, hub, rec = start_listener(tmp_path, daq={"MAX_PAUSE": 0.3, "MAX_BUFFER_BYTES": MAX_BUFFER,
                                                  "MAX_FRAME_BYTES": MAX_FRAME})
    daqs = []
    peak = [0]

    def check_buffers():
        for conn in svc.factory.connections:
            if conn.framer is not None:
                peak[0] = max(peak[0], conn.framer.buffered)
        return True

    try:
        ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port_of(svc))
        for i in range(10):
            daqs.append((yield endpoints.connectProtocol(ep, StreamingDaq(f"M{i}"))))
        yield wait_until(lambda: len(hub.machines) == 10
                         and all(m.samples > 0 for m in hub.machines.values()))
        hub.storage_congested(True)
        counters = svc.counters()
        assert counters["paused"] == 10 and counters["paused_now"] == 10
        # After DAQ.MAX_PAUSE every connection reads again and drops.
        yield wait_until(lambda: check_buffers() and svc.counters()["dropping_now"] == 10)
        frozen = len(rec.added)
        yield wait_until(lambda: check_buffers()
                         and all(m.dropped_bytes > 0 for m in hub.machines.values()))
        assert len(rec.added) == frozen  # nothing reached the stats while dropping
        assert svc.counters()["dropped_bytes"] == sum(m.dropped_bytes for m in hub.machines.values())
        assert all(m.paused_seconds > 0 for m in hub.machines.values())
        assert all(m.connected for m in hub.machines.values())
        hub.storage_congested(False)
        counters = svc.counters()
        assert counters["dropping_now"] == 0 and counters["paused_now"] == 0
        yield wait_until(lambda: check_buffers() and len(rec.added) > frozen + 100)
        assert peak[0] <= MAX_BUFFER
        assert svc.counters()["refused_frames"] == 0  # whole frames dropped, never a torn one
    finally:
        for daq in daqs:
            daq.transport.loseConnection()
        yield svc.stopService()
