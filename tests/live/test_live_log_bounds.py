"""Per-client warnings of the live layer are rate-limited per address and reason."""

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from tests.live.helpers import ws_open


@pytest.fixture
def live_lines():
    lines = []

    def observe(event):
        if event.get("log_namespace", "").startswith("tsrmon.live"):
            lines.append(event)

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest_twisted.ensureDeferred
async def test_bad_packets_from_one_address_log_a_few_lines(make_server, live_lines):
    clock = Clock()
    server = make_server(clock=clock)
    for _ in range(12):
        ws = await ws_open(server.ws_url + "/socket.io/?EIO=4&transport=websocket")
        await ws.recv()
        ws.send("40/sio/m1," + "x" * 5000)  # not a JSON auth payload
        await ws.wait_closed()
    assert server.live.counters()["protocol_errors"] == 12
    bad = [e for e in live_lines if "why" in e]
    assert len(bad) == 5  # PeerLog's burst for (127.0.0.1, bad Socket.IO packet)
    assert all(e["peer"] == "127.0.0.1" and len(e["why"]) <= 200 for e in bad)
    # A minute later the window rolls: the suppressed count is reported once.
    clock.advance(61)
    ws = await ws_open(server.ws_url + "/socket.io/?EIO=4&transport=websocket")
    await ws.recv()
    ws.send("4?")
    await ws.wait_closed()
    assert [e["suppressed"] for e in live_lines if "suppressed" in e] == [7]
