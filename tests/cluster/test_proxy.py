"""PROXY protocol on the DAQ port and X-Forwarded-For on HTTP, trusted only
from SERVER.TRUSTED_PROXIES: real sockets on 127.0.0.1, headers written by
the test."""

import socket
import struct

import pytest
import pytest_twisted
from twisted.internet import endpoints, protocol, reactor, task
from twisted.web.http_headers import Headers

from tests.cluster.helpers import Collect, until
from tsrmon.cluster.proxy import (ProxiedFactory, TrustedProxies, address_of, client_address, is_trusted, networks,
                                  proxied_factory)
from tsrmon.config import build_config

pytestmark = pytest.mark.timeout(20)

V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src, sport, dst="127.0.0.1", dport=8082, local=False):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2 + bytes([0x20 if local else 0x21, 0x11]) + struct.pack("!H", len(body)) + body


class Recorder(protocol.Protocol):
    def connectionMade(self):
        self.factory.seen.append(self)
        self.peer = self.transport.getPeer()
        self.data = b""
        self.lost = False

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.lost = True


class RecorderFactory(protocol.Factory):
    protocol = Recorder

    def __init__(self):
        self.seen = []


class Client(protocol.Protocol):
    def connectionMade(self):
        self.closed = False

    def connectionLost(self, reason):
        self.closed = True


@pytest_twisted.inlineCallbacks
def serve(trusted, clock=None):
    inner = RecorderFactory()
    factory = ProxiedFactory(inner, trusted, clock or reactor)
    port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    return inner, factory, port


@pytest_twisted.inlineCallbacks
def dial(port):
    point = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    client = yield endpoints.connectProtocol(point, Client())
    return client


@pytest_twisted.inlineCallbacks
def test_trusted_proxy_header_gives_the_daq_address():
    inner, factory, port = yield serve(["127.0.0.0/8"])
    try:
        client = yield dial(port)
        wire = v2_header("10.1.2.3", 4567) + b'{"machine": "M1"}\n'
        # Split at every byte: the header is buffered, not refused.
        for i in range(len(wire)):
            client.transport.write(wire[i:i + 1])
            yield task.deferLater(reactor, 0, lambda: None)
        yield until(lambda: inner.seen and inner.seen[0].data.endswith(b"\n"))
        daq = inner.seen[0]
        assert (daq.peer.host, daq.peer.port) == ("10.1.2.3", 4567)  # already in connectionMade
        assert daq.data == b'{"machine": "M1"}\n'
        assert factory.proxy_counters["proxied"] == 1
        client.transport.loseConnection()
        yield until(lambda: daq.lost)
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_v1_header_from_a_trusted_proxy():
    inner, factory, port = yield serve(["127.0.0.1/32"])
    try:
        client = yield dial(port)
        client.transport.write(b"PROXY TCP4 192.168.7.9 127.0.0.1 5555 8082\r\nhello")
        yield until(lambda: inner.seen and inner.seen[0].data == b"hello")
        assert inner.seen[0].peer.host == "192.168.7.9"
        client.transport.loseConnection()
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_untrusted_peer_with_a_header_is_refused_without_one_passes():
    inner, factory, port = yield serve(["10.9.9.0/24"])  # 127.0.0.1 is not a trusted proxy
    try:
        plain = yield dial(port)
        plain.transport.write(b"\x80\x04frame")
        yield until(lambda: inner.seen and inner.seen[0].data == b"\x80\x04frame")
        assert inner.seen[0].peer.host == "127.0.0.1"
        spoof = yield dial(port)
        spoof.transport.write(v2_header("10.1.2.3", 1))  # a PC pretending to be another
        yield until(lambda: spoof.closed)
        assert len(inner.seen) == 2 and inner.seen[1].lost and inner.seen[1].data == b""
        assert factory.proxy_counters["refused_untrusted_proxy_header"] == 1
        v1 = yield dial(port)
        v1.transport.write(b"PROXY TCP4 10.1.2.3 127.0.0.1 1 2\r\n")
        yield until(lambda: v1.closed)
        assert factory.proxy_counters["refused_untrusted_proxy_header"] == 2
        assert not plain.closed
        plain.transport.loseConnection()
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_trusted_proxy_without_a_header_is_refused_and_local_closes_quietly():
    clock = task.Clock()
    inner, factory, port = yield serve(["127.0.0.1/32"], clock)
    try:
        bare = yield dial(port)
        bare.transport.write(b'{"machine": "M1"}\n')
        yield until(lambda: bare.closed)
        assert factory.proxy_counters["refused_no_proxy_header"] == 1
        check = yield dial(port)
        check.transport.write(v2_header("0.0.0.0", 0, local=True))
        yield until(lambda: check.closed)
        assert factory.proxy_counters["proxy_local"] == 1
        silent = yield dial(port)
        yield task.deferLater(reactor, 0.05, lambda: None)
        clock.advance(10)  # HEADER_TIMEOUT
        yield until(lambda: silent.closed)
        assert factory.proxy_counters["refused_no_proxy_header"] == 2
        assert inner.seen == []  # the DAQ protocol never saw any of them
        bad = yield dial(port)
        bad.transport.write(V2 + b"\x21\x11\x00\x03abc")
        yield until(lambda: bad.closed)
        assert factory.proxy_counters["refused_bad_proxy_header"] == 1
    finally:
        yield port.stopListening()


def test_no_trusted_proxies_leaves_the_factory_alone():
    f = RecorderFactory()
    assert proxied_factory(f, build_config({}), reactor) is f
    wrapped = proxied_factory(f, build_config({"SERVER": {"TRUSTED_PROXIES": ["10.0.0.0/8"]}}), reactor)
    assert isinstance(wrapped, ProxiedFactory) and wrapped.seen is f.seen  # the DAQ factory's attributes


@pytest_twisted.inlineCallbacks
def test_sighup_changes_the_trusted_proxies_for_the_next_connection():
    proxies = TrustedProxies.from_config(build_config({}))
    inner = RecorderFactory()
    factory = proxied_factory(inner, build_config({}), reactor, proxies)  # wrapped though none is trusted
    port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    header = v2_header("10.1.2.3", 4567)
    trusted = build_config({"SERVER": {"TRUSTED_PROXIES": ["127.0.0.1/32"]}})

    @pytest_twisted.inlineCallbacks
    def connection(wire):
        n = len(inner.seen)
        client = yield dial(port)
        client.transport.write(wire)
        yield until(lambda: client.closed or (len(inner.seen) > n and inner.seen[-1].data.endswith(b"x")))
        return client
    try:
        yield connection(header + b"x")  # nothing trusted: no header is read, every byte passes
        first = inner.seen[-1]
        assert first.peer.host == "127.0.0.1" and first.data == header + b"x"
        proxies.reconfigure(trusted)  # SIGHUP
        yield connection(header + b"x")
        assert len(inner.seen) == 2 and inner.seen[-1].peer.host == "10.1.2.3" and inner.seen[-1].data == b"x"
        refused = yield connection(b"x")  # a trusted proxy's connection must carry a header now
        assert refused.closed and factory.proxy_counters["refused_no_proxy_header"] == 1
        assert not first.lost  # a connection keeps what it was accepted with
        proxies.reconfigure(build_config({}))
        yield connection(header + b"x")
        assert inner.seen[-1].peer.host == "127.0.0.1" and inner.seen[-1].data == header + b"x"
    finally:
        yield port.stopListening()


def test_sighup_changes_what_the_site_believes():
    from twisted.web.server import Request

    proxies = TrustedProxies([])

    class Direct(Request):
        def __init__(self, peer, *xff):
            self.peer = address_of(peer, 1234)
            self.requestHeaders = Headers({b"x-forwarded-for": list(xff)})

        def getClientAddress(self):
            return self.peer
    from tsrmon.cluster.proxy import forwarded_requests

    cls = forwarded_requests(proxies, Direct)
    assert cls("10.0.0.5", b"203.0.113.7").getClientAddress().host == "10.0.0.5"
    proxies.reconfigure(build_config({"SERVER": {"TRUSTED_PROXIES": ["10.0.0.0/24"]}}))
    assert cls("10.0.0.5", b"203.0.113.7").getClientAddress().host == "203.0.113.7"


def test_trust_checks():
    nets = networks(["10.0.0.0/8", "fd00::/8"])
    assert is_trusted("10.2.3.4", nets) and is_trusted("::ffff:10.2.3.4", nets) and is_trusted("fd00::1", nets)
    assert not is_trusted("11.0.0.1", nets) and not is_trusted("junk", nets) and not is_trusted("10.0.0.1", ())


class FakeRequest:
    def __init__(self, peer, *xff):
        self.peer = address_of(peer, 1234)
        self.requestHeaders = Headers({b"x-forwarded-for": list(xff)} if xff else {})

    def getClientAddress(self):
        return self.peer


@pytest.mark.parametrize("peer, xff, expected", [
    ("10.0.0.5", [b"203.0.113.7"], "203.0.113.7"),                      # through HAProxy
    ("10.0.0.5", [b"1.1.1.1, 203.0.113.7"], "203.0.113.7"),             # the client cannot choose: right-most
    ("10.0.0.5", [b"203.0.113.7, 10.0.0.9"], "203.0.113.7"),            # a chain of trusted proxies
    ("10.0.0.5", [b"1.1.1.1", b"203.0.113.7:5555"], "203.0.113.7"),     # several headers, v4:port
    ("10.0.0.5", [b"[2001:db8::1]:80"], "2001:db8::1"),
    ("10.0.0.5", [b"not-an-ip"], "10.0.0.5"),                           # garbage: the proxy's address
    ("10.0.0.5", [], "10.0.0.5"),
    ("192.0.2.1", [b"203.0.113.7"], "192.0.2.1"),                       # not a trusted peer: header ignored
])
def test_client_address_from_x_forwarded_for(peer, xff, expected):
    assert client_address(FakeRequest(peer, *xff), ["10.0.0.0/24"]) == expected
    assert client_address(FakeRequest(peer, *xff), networks(["10.0.0.0/24"])) == expected


class ClientHost:
    isLeaf = True

    def __init__(self):
        from twisted.web import resource

        class R(resource.Resource):
            isLeaf = True

            def render_GET(self, request):
                return f"{request.getClientAddress().host} {request.getHost().host}".encode()
        self.resource = R()


@pytest.mark.parametrize("trusted, expected", [(["127.0.0.1/32"], b"203.0.113.7"), (["10.0.0.0/8"], b"127.0.0.1")])
@pytest_twisted.inlineCallbacks
def test_site_request_factory_uses_x_forwarded_for_from_a_trusted_peer(trusted, expected):
    from twisted.web import server

    from tsrmon.cluster.proxy import forwarded_requests

    site = server.Site(ClientHost().resource)
    site.requestFactory = forwarded_requests(trusted, site.requestFactory)
    port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    try:
        point = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = yield endpoints.connectProtocol(point, Collect())
        client.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                               b"X-Forwarded-For: 203.0.113.7\r\n\r\n")
        answer = yield client.done
        assert answer.endswith(expected + b" 127.0.0.1"), answer
    finally:
        yield port.stopListening()
