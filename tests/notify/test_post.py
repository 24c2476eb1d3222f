"""The notifier's one HTTP exchange (``delivery.post``, on treq): the deadline
covers the whole response, not only its headers, and the request says who
sends it."""

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.web.client import HTTPConnectionPool

from tests.notify.fakes import get, until
from tsrmon.notify.delivery import MAX_RESPONSE_BYTES, USER_AGENT, http_client, post


class _Peer(protocol.Protocol):
    """Reads a request, answers with ``reply`` and then, if ``hang``, says
    no more while keeping the connection open."""

    def connectionMade(self):
        self.factory.conns.append(self)
        self.got = b""

    def dataReceived(self, data):
        self.got += data
        if b"\r\n\r\n" in self.got and not getattr(self, "answered", False):
            self.answered = True
            self.factory.requests.put(self.got)
            self.transport.write(self.factory.reply)
            if not self.factory.hang:
                self.transport.loseConnection()

    def connectionLost(self, reason):
        self.factory.lost.append(reason)


@pytest_twisted.async_yield_fixture
async def peer():
    factory = protocol.Factory.forProtocol(_Peer)
    factory.conns, factory.lost, factory.requests = [], [], defer.DeferredQueue()
    factory.reply, factory.hang = b"", False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    factory.url = f"http://127.0.0.1:{port.getHost().port}/hook"
    yield factory
    for conn in factory.conns:
        conn.transport.abortConnection()
    await defer.maybeDeferred(port.stopListening)


@pytest_twisted.inlineCallbacks
def test_a_body_that_stops_halfway_times_out_and_the_connection_is_aborted(peer):
    # Headers arrive at once, then 3 of 100 body bytes and silence: treq's own
    # timeout would be over; the deadline still ends the exchange.
    peer.reply, peer.hang = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", True
    clock = task.Clock()
    d = post(http_client(reactor), clock, peer.url, b"{}", {"content-type": "application/json"}, 5)
    ended = []
    d.addBoth(lambda result: ended.append(result) or result)
    yield get(peer.requests)
    yield task.deferLater(reactor, 0.05, lambda: None)
    assert ended == []
    clock.advance(5)
    with pytest.raises(defer.TimeoutError, match="no answer within 5s"):
        yield d
    yield until(lambda: len(peer.lost) == 1)  # our side hung up


@pytest_twisted.inlineCallbacks
def test_request_carries_the_user_agent_and_the_body_through_an_injected_pool(peer):
    peer.reply = b"HTTP/1.1 202 Accepted\r\nRetry-After: 7\r\nContent-Length: 2\r\n\r\nok"
    pool = HTTPConnectionPool(reactor, persistent=False)
    reply = yield post(http_client(reactor, pool), task.Clock(), peer.url, b'{"a":1}',
                       {"x-tsrmon-event": "fault"}, 5)
    request = yield get(peer.requests)
    head = request.split(b"\r\n\r\n")[0].lower()
    assert f"user-agent: {USER_AGENT}".lower().encode() in head
    assert b"x-tsrmon-event: fault" in head and b"content-length: 7" in head
    assert (reply.code, reply.header("Retry-After"), reply.body) == (202, "7", b"ok")


@pytest_twisted.inlineCallbacks
def test_a_long_body_is_read_up_to_the_cap(peer):
    size = 4 * MAX_RESPONSE_BYTES
    peer.reply = b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size
    reply = yield post(http_client(reactor), task.Clock(), peer.url, b"", {}, 5)
    assert reply.code == 500 and reply.body == b"y" * MAX_RESPONSE_BYTES
    assert reply.text(10) == "y" * 10 + "…"


@pytest_twisted.inlineCallbacks
def test_header_values_go_as_latin_1(peer):
    # NOTIFY.WEBHOOKS headers are checked to be latin-1 strings; they are sent so.
    peer.reply = b"HTTP/1.1 204 No Content\r\n\r\n"
    yield post(http_client(reactor), task.Clock(), peer.url, b"", {"x-site": "Usine Bâle"}, 5)
    request = yield get(peer.requests)
    assert b"x-site: usine b\xe2le\r\n" in request.lower()


@pytest_twisted.inlineCallbacks
def test_a_receivers_cookie_is_not_sent_back(peer):
    peer.reply = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\nContent-Length: 0\r\n\r\n"
    client = http_client(reactor)
    yield post(client, task.Clock(), peer.url, b"", {}, 5)
    yield post(client, task.Clock(), peer.url, b"", {}, 5)
    first, second = (yield get(peer.requests)), (yield get(peer.requests))
    assert b"cookie" not in first.lower() and b"cookie" not in second.lower()
