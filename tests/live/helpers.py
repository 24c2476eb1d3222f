"""Test clients that run inside the test's reactor: raw WebSocket and HTTP."""

import json

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

TIMEOUT = 5


class _Protocol(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.client._opened(self)

    def onMessage(self, payload, isBinary):
        self.factory.client.messages.put(payload if isBinary else payload.decode("utf-8"))

    def onClose(self, wasClean, code, reason):
        self.factory.client._closed(code, reason)


class WSClient:
    """A raw WebSocket client: ``await recv()`` frames, ``send`` text or bytes."""

    def __init__(self, url, headers=None):
        self.messages = defer.DeferredQueue()
        self.opened = defer.Deferred()
        self.closed = defer.Deferred()
        self.close_code = None
        self.close_reason = None
        self.protocol = None
        factory = WebSocketClientFactory(url, headers=headers or {})
        factory.protocol = _Protocol
        factory.client = self
        factory.setProtocolOptions(autoPingInterval=0)
        connectWS(factory)

    def _opened(self, protocol):
        self.protocol = protocol
        self.opened.callback(self)

    def _closed(self, code, reason):
        self.close_code = code
        self.close_reason = reason
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        if not self.closed.called:
            self.closed.callback(code)

    def send(self, data):
        if isinstance(data, str):
            self.protocol.sendMessage(data.encode("utf-8"), isBinary=False)
        else:
            self.protocol.sendMessage(data, isBinary=True)

    async def recv(self, timeout=TIMEOUT):
        d = self.messages.get()
        d.addTimeout(timeout, reactor)
        return await d

    async def recv_until(self, predicate, timeout=TIMEOUT, limit=10000):
        """Frames up to and including the first matching one (pongs answered)."""
        seen = []
        for _ in range(limit):
            frame = await self.recv(timeout)
            if frame == "2":
                self.send("3")
            seen.append(frame)
            if predicate(frame):
                return seen
        raise AssertionError(f"no matching frame in {seen[-5:]}")

    async def wait_closed(self, timeout=TIMEOUT):
        d = self.closed
        if not d.called:
            d.addTimeout(timeout, reactor)
        return await d

    def close(self):
        if self.protocol is not None:
            self.protocol.sendClose()


async def ws_open(url, headers=None):
    client = WSClient(url, headers)
    d = client.opened
    d.addTimeout(TIMEOUT, reactor)
    await d
    return client


async def sio_ws(ws_url, nsp="/sio/m1", auth=None, path="/socket.io/", query=""):
    """Websocket-only EIO=4 client connected to ``nsp`` (the deployed app's way)."""
    client = await ws_open(f"{ws_url}{path}?EIO=4&transport=websocket{query}")
    opening = await client.recv()
    assert opening.startswith("0{")
    client.open_packet = json.loads(opening[1:])
    prefix = "" if nsp == "/" else nsp + ","
    client.send("40" + prefix + ("" if auth is None else json.dumps(auth)))
    reply = await client.recv()
    client.connect_reply = reply
    return client


def events(frames, nsp="/sio/m1"):
    """(name, args) of the EVENT frames of one namespace."""
    head = "42" + ("" if nsp == "/" else nsp + ",")
    out = []
    for f in frames:
        if isinstance(f, str) and f.startswith(head):
            data = json.loads(f[len(head):])
            out.append((data[0], data[1:]))
    return out


class HTTP:
    """treq with its own pool, closed at the end (no dirty reactor)."""

    def __init__(self, base):
        self.base = base
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    async def request(self, method, path, data=None, headers=None):
        resp = await treq.request(method, self.base + path, data=data, headers=headers,
                                  pool=self.pool, timeout=TIMEOUT)
        body = await treq.content(resp)
        return resp, body

    async def get(self, path, **kw):
        return await self.request("GET", path, **kw)

    async def post(self, path, data, **kw):
        return await self.request("POST", path, data=data, **kw)

    async def close(self):
        await self.pool.closeCachedConnections()


async def eventually(check, timeout=TIMEOUT, step=0.02):
    """Wait (real reactor) until ``check()`` is true."""
    waited = 0.0
    while not check():
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        await deferLater(reactor, step, lambda: None)
        waited += step
