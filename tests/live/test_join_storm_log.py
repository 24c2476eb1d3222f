"""A reconnect storm of one client address writes a few join/leave lines
a minute, not one per connection (issue 15, log amplification)."""

import pytest_twisted
from twisted.internet.task import Clock

from tests.live.helpers import ws_open
from tests.live.test_live_log_bounds import live_lines  # noqa: F401  (fixture)


@pytest_twisted.ensureDeferred
async def test_join_and_leave_lines_are_rate_limited_per_address(make_server, live_lines):  # noqa: F811
    clock = Clock()
    server = make_server(clock=clock)
    for _ in range(12):
        ws = await ws_open(server.ws_url + "/socket.io/?EIO=4&transport=websocket")
        await ws.recv()  # Engine.IO open
        ws.send("40/sio/m1,")
        await ws.recv_until(lambda f: f.startswith("40/sio/m1"))
        ws.close()
        await ws.wait_closed()
    joined = [e for e in live_lines if "joined" in e.get("log_format", "")]
    left = [e for e in live_lines if " left " in e.get("log_format", "")]
    assert len(joined) == 5 and all(e["peer"] == "127.0.0.1" for e in joined)
    assert 1 <= len(left) <= 5
    clock.advance(61)
    ws = await ws_open(server.ws_url + "/socket.io/?EIO=4&transport=websocket")
    await ws.recv()
    ws.send("40/sio/m1,")
    await ws.recv_until(lambda f: f.startswith("40/sio/m1"))
    ws.close()
    await ws.wait_closed()
    assert 7 in [e["suppressed"] for e in live_lines if "suppressed" in e]
