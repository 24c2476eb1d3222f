"""A second WebSocket for a session that already has one is accepted, then closed.

The Engine.IO reference server (and the engine.io-protocol / socket.io-protocol
suites' "should ignore WebSocket connection with same sid after upgrade")
expect the WebSocket handshake to succeed and the server to close it at once;
an HTTP 400 makes the client see a failed handshake instead.  The session on
its first transport must not notice.
"""

import json

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.live.helpers import HTTP, eventually, ws_open

EIO = "/engine.io/"


@pytest.fixture
def conf(conformance):
    clock = Clock()
    return conformance(clock), clock


@pytest.fixture
def http(conf):
    h = HTTP(conf[0].url)
    yield h
    pytest_twisted.blockon(defer.ensureDeferred(h.close()))


async def polling_session(http):
    resp, body = await http.get(EIO + "?EIO=4&transport=polling")
    assert resp.code == 200
    return json.loads(body.decode()[1:])["sid"]


async def upgraded(conf, http):
    """A polling session upgraded to WebSocket: (sid, the WebSocket)."""
    sid = await polling_session(http)
    ws = await ws_open(f"{conf.ws_url}{EIO}?EIO=4&transport=websocket&sid={sid}")
    ws.send("2probe")
    assert await ws.recv() == "3probe"
    ws.send("5")
    await eventually(lambda: conf.echo.sessions[sid].ws is not None)
    return sid, ws


@pytest_twisted.ensureDeferred
async def test_second_websocket_after_upgrade_is_opened_then_closed(conf, http):
    server, clock = conf
    sid, first = await upgraded(server, http)
    # Opens (no ConnectionError: the handshake succeeded), then the server closes it.
    second = await ws_open(f"{server.ws_url}{EIO}?EIO=4&transport=websocket&sid={sid}")
    assert await second.wait_closed() == 1000
    assert server.echo.counters["second_websockets"] == 1
    # The session and its first WebSocket go on.
    first.send("4still here")
    assert await first.recv() == "4still here"
    assert server.echo.sessions[sid].ws is not None
    clock.advance(0.3)
    assert await first.recv() == "2"
    assert server.echo.counters["upgrades"] == 1


@pytest_twisted.ensureDeferred
async def test_second_websocket_while_probing_is_opened_then_closed(conf, http):
    server, clock = conf
    sid = await polling_session(http)
    probe = await ws_open(f"{server.ws_url}{EIO}?EIO=4&transport=websocket&sid={sid}")
    probe.send("2probe")
    assert await probe.recv() == "3probe"
    second = await ws_open(f"{server.ws_url}{EIO}?EIO=4&transport=websocket&sid={sid}")
    assert await second.wait_closed() == 1000
    # The first probe still completes the upgrade.
    probe.send("5")
    await eventually(lambda: server.echo.sessions[sid].ws is not None)
    probe.send("4after")
    assert await probe.recv() == "4after"


@pytest_twisted.ensureDeferred
async def test_websocket_with_unknown_sid_is_still_a_raw_400(conf, http):
    server, _ = conf
    resp, body = await http.get(f"{EIO}?EIO=4&transport=websocket&sid=nope",
                                headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                         "Sec-WebSocket-Version": "13",
                                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert (resp.code, body) == (400, b"Session ID unknown")
    with pytest.raises(ConnectionError):
        await ws_open(f"{server.ws_url}{EIO}?EIO=4&transport=websocket&sid=nope")
