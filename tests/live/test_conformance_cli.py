"""``python -m tsrmon.live.conformance`` serves the fixture the official suites expect."""

import json
import re
import sys

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor

from tests.live.helpers import HTTP, sio_ws, ws_open


class Fixture(protocol.ProcessProtocol):
    def __init__(self):
        self.listening = defer.Deferred()
        self.ended = defer.Deferred()
        self.err = b""

    def errReceived(self, data):
        self.err += data
        m = re.search(rb"conformance fixture on (http://[\d.]+:\d+)/", self.err)
        if m and not self.listening.called:
            self.listening.callback(m.group(1).decode())

    def processEnded(self, reason):
        if not self.listening.called:
            self.listening.errback(RuntimeError(self.err.decode(errors="replace")))
        self.ended.callback(None)


@pytest.mark.slow  # a real process or a minute's worth of work: the fast set stays under a minute
@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_conformance_fixture_process():
    fixture = Fixture()
    proc = reactor.spawnProcess(fixture, sys.executable,
                                [sys.executable, "-m", "tsrmon.live.conformance", "--port", "0"])
    try:
        base = await fixture.listening.addTimeout(10, reactor)
        http = HTTP(base)
        try:
            resp, body = await http.get("/engine.io/?EIO=4&transport=polling")
            opening = json.loads(body[1:])
            assert (opening["pingInterval"], opening["pingTimeout"]) == (300, 200)
            assert resp.headers.getRawHeaders("access-control-allow-origin") == ["*"]
        finally:
            await http.close()
        ws_base = base.replace("http://", "ws://")
        echo = await ws_open(ws_base + "/engine.io/?EIO=4&transport=websocket")
        await echo.recv()
        echo.send("4hello")
        assert await echo.recv() == "4hello"
        client = await sio_ws(ws_base, nsp="/custom")
        assert client.connect_reply.startswith('40/custom,{"sid":"')
        assert await client.recv() == '42/custom,["auth",{}]'
        refused = await sio_ws(ws_base, nsp="/random")
        assert refused.connect_reply == '44/random,{"message":"Invalid namespace"}'
    finally:
        proc.signalProcess("TERM")
        await fixture.ended
