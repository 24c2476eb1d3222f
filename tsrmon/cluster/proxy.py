"""Real client addresses behind HAProxy, believed only from SERVER.TRUSTED_PROXIES.

DAQ port: HAProxy sends the PROXY protocol (``send-proxy-v2``) and
:func:`proxied_factory` wraps the DAQ factory so that the DAQ protocol sees
the DAQ's own address in ``transport.getPeer()`` — DAQ.ALLOW, takeover from
the same source, per-host caps and per-source log limits keep working on it.
Parsing is Twisted's (``twisted.protocols.haproxy``'s V1/V2 parsers, as its
``haproxy:`` endpoint uses them), with what that wrapper does not do:

- trust: a connection from a trusted proxy must start with a PROXY header
  (else it is refused); a connection from anywhere else that sends one is
  refused, so a PC cannot claim another's address (and take its machine
  over) by writing a header itself.  Each refusal is one log line (rate
  limited per source and reason, :class:`tsrmon.peerlog.PeerLog`);
- the DAQ protocol is connected only once the header is read, so its
  ``connectionMade`` (where the address is checked) sees the real one;
- a header split over several reads is buffered, not refused; a header that
  does not come within HEADER_TIMEOUT closes the connection; a v2 ``LOCAL``
  header (HAProxy's own health check) closes quietly.

HTTP: :func:`client_address` reads ``X-Forwarded-For`` only when the direct
peer is a trusted proxy.

SIGHUP: :class:`TrustedProxies` holds the list; the DAQ wrapper and the
site's request factory read it at each connection and request, so a reload
(its ``reconfigure``) applies to the next ones.  With the list empty no
header is ever read, whichever way it became empty.
"""

import ipaddress

from twisted.internet import address as taddress
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser

from tsrmon.peerlog import PeerLog

HEADER_TIMEOUT = 10.0  # seconds a trusted proxy has to send the PROXY header
V2_SIGNATURE = V2Parser.PREFIX  # b"\r\n\r\n\x00\r\nQUIT\n"
V1_SIGNATURE = b"PROXY "


def networks(cidrs):
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


class TrustedProxies:
    """SERVER.TRUSTED_PROXIES as the DAQ wrapper and the HTTP site read it
    (``nets``); ``reconfigure(config)`` takes a reloaded list (SIGHUP, held in
    the tree as a ``rooms.Part``).  Established connections keep what they
    were accepted with."""

    log = Logger()

    def __init__(self, cidrs=()):
        self.cidrs = list(cidrs)
        self.nets = networks(self.cidrs)

    @classmethod
    def from_config(cls, config):
        return cls(config.server.trusted_proxies)

    def __bool__(self):
        return bool(self.nets)

    def reconfigure(self, config):
        cidrs = list(config.server.trusted_proxies)
        if cidrs == self.cidrs:
            return
        self.log.info("SIGHUP: SERVER.TRUSTED_PROXIES {old} -> {new} (for new connections)",
                      old=self.cidrs or "none", new=cidrs or "none")
        self.cidrs = cidrs
        self.nets = networks(cidrs)


def is_trusted(host, nets):
    """True when ``host`` (text) lies in one of ``nets``."""
    if not nets or host is None:
        return False
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in nets)


def _starts_like_header(data):
    """True/False once ``data`` shows whether a PROXY header starts, None while unsure."""
    for signature in (V1_SIGNATURE, V2_SIGNATURE):
        n = min(len(data), len(signature))
        if data[:n] == signature[:n]:
            if n == len(signature):
                return True
            return None
    return False


class ProxiedProtocol(policies.ProtocolWrapper):
    """Reads (or refuses) the PROXY header, then connects the wrapped protocol."""

    def __init__(self, factory, wrapped, direct):
        super().__init__(factory, wrapped)
        self.direct = direct  # the proxy's (or the PC's) own address
        nets = factory.trusted
        self.trusted = is_trusted(getattr(direct, "host", None), nets)
        self.proxy_info = None
        self._buffer = b""
        self._parser = None
        self._timer = None
        # Data goes straight to the wrapped protocol; from the start when no
        # proxy is trusted at all (no header is read then).
        self._passing = not nets
        self._refused = False

    def makeConnection(self, transport):
        # Not ProtocolWrapper.makeConnection: the wrapped protocol is connected
        # only once the real address is known.
        self.connected = 1
        self.transport = transport
        self.factory.registerProtocol(self)
        if self.trusted:
            self._timer = self.factory.clock.callLater(HEADER_TIMEOUT, self._refuse, "no_proxy_header",
                                                       "no PROXY header within {s:.0f} s".format(s=HEADER_TIMEOUT))
        else:
            self.wrappedProtocol.makeConnection(self)

    def dataReceived(self, data):
        if self._passing:
            return self.wrappedProtocol.dataReceived(data)
        if self._refused:
            return None
        self._buffer += data
        if not self.trusted:
            start = _starts_like_header(self._buffer)
            if start is None:
                return None  # fewer bytes than a signature, all matching so far
            if start:
                return self._refuse("untrusted_proxy_header",
                                    "a PROXY header from an address not in SERVER.TRUSTED_PROXIES")
            return self._pass()
        if self._parser is None:
            start = _starts_like_header(self._buffer)
            if start is None or (start and self._buffer.startswith(V2_SIGNATURE) and len(self._buffer) < 16):
                return None
            if not start:
                return self._refuse("no_proxy_header", "a trusted proxy's connection without a PROXY header")
            self._parser = V2Parser() if self._buffer.startswith(V2_SIGNATURE) else V1Parser()
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer, b""
        try:
            info, remaining = self._parser.feed(data)
        except InvalidProxyHeader:
            return self._refuse("bad_proxy_header", "an invalid PROXY header")
        if info is None:
            return None
        self._cancel_timer()
        self.proxy_info = info
        if info.source is None:
            # LOCAL (HAProxy's health check): nothing to hand on.
            self.factory.proxy_counters["proxy_local"] += 1
            self.transport.loseConnection()
            return None
        self.factory.proxy_counters["proxied"] += 1
        self.wrappedProtocol.makeConnection(self)
        self._passing = True
        if remaining and self.connected:
            self.wrappedProtocol.dataReceived(remaining)
        return None

    def _pass(self):
        data, self._buffer = self._buffer, b""
        self._passing = True
        self.wrappedProtocol.dataReceived(data)

    def _refuse(self, reason, why):
        self._cancel_timer()
        self._refused = True
        self.factory.proxy_counters["refused_" + reason] += 1
        host = getattr(self.direct, "host", str(self.direct))
        self.factory.peerlog.warn(host, reason, "DAQ connection from {peer} refused: {why}", peer=host, why=why)
        self.transport.abortConnection()

    def _cancel_timer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason):
        self._cancel_timer()
        if self.wrappedProtocol.transport is self or self._passing or not self.trusted:
            policies.ProtocolWrapper.connectionLost(self, reason)
        else:
            # The wrapped protocol never connected: nothing to tell it.
            self.factory.unregisterProtocol(self)

    def getPeer(self):
        if self.proxy_info is not None and self.proxy_info.source is not None:
            return self.proxy_info.source
        return self.transport.getPeer()

    def getHost(self):
        if self.proxy_info is not None and self.proxy_info.destination is not None:
            return self.proxy_info.destination
        return self.transport.getHost()


class ProxiedFactory(policies.WrappingFactory):
    """``wrappedFactory`` behind trusted PROXY-protocol proxies."""

    protocol = ProxiedProtocol
    log = Logger()

    def __init__(self, wrappedFactory, trusted, clock, peerlog=None):
        super().__init__(wrappedFactory)
        # A TrustedProxies (shared with the HTTP site, reloaded by SIGHUP) or CIDR texts.
        self.proxies = trusted if isinstance(trusted, TrustedProxies) else TrustedProxies(trusted)
        self.clock = clock
        self.peerlog = peerlog if peerlog is not None else PeerLog(self.log, clock)
        self.proxy_counters = dict.fromkeys(("proxied", "proxy_local", "refused_untrusted_proxy_header",
                                       "refused_no_proxy_header", "refused_bad_proxy_header"), 0)

    def buildProtocol(self, addr):
        return self.protocol(self, self.wrappedFactory.buildProtocol(addr), addr)

    @property
    def trusted(self):
        """The trusted networks now (read at each new connection)."""
        return self.proxies.nets

    def __getattr__(self, name):
        # The listener service reads its DAQ factory's counters, health etc.
        if name == "wrappedFactory":
            raise AttributeError(name)
        return getattr(self.wrappedFactory, name)

    def logPrefix(self):
        return f"{self.wrappedFactory.__class__.__name__} (PROXY)"


def proxied_factory(factory, config, clock, proxies=None):
    """``factory`` wrapped for SERVER.TRUSTED_PROXIES.  With ``proxies`` (the
    daemon's :class:`TrustedProxies`) it is always wrapped, so a SIGHUP that
    adds a proxy applies to the next connection (an empty list passes every
    byte through unread); without, ``factory`` itself when none is
    configured."""
    if proxies is not None:
        return ProxiedFactory(factory, proxies, clock)
    trusted = config.server.trusted_proxies
    if not trusted:
        return factory
    return ProxiedFactory(factory, trusted, clock)


def client_address(request, trusted, peer=None):
    """The client's address of a twisted.web ``request``: the direct peer,
    or, when that peer is a trusted proxy (``trusted``: CIDR texts or
    :func:`networks`), the right-most ``X-Forwarded-For`` address that is not
    itself a trusted proxy.  Returns the host text.  ``peer``: the direct
    peer's address when not ``request.getClientAddress()``."""
    nets = networks(trusted) if trusted and isinstance(trusted[0], str) else tuple(trusted or ())
    if peer is None:
        peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    if host is None or not is_trusted(host, nets):
        return host
    values = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
    hops = [h.strip() for v in values for h in (v.decode("latin-1") if isinstance(v, bytes) else v).split(",")]
    for hop in reversed([h for h in hops if h]):
        candidate = hop
        if candidate.startswith("[") and "]" in candidate:  # [v6]:port
            candidate = candidate[1:candidate.index("]")]
        elif candidate.count(":") == 1:  # v4:port
            candidate = candidate.split(":", 1)[0]
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            return host  # garbage in the header: keep the proxy's address
        if not is_trusted(candidate, nets):
            return candidate
    return host


def forwarded_requests(trusted, base=None):
    """A ``Site.requestFactory`` whose ``getClientAddress()`` is the
    :func:`client_address` (X-Forwarded-For from a trusted proxy), so every
    user of the client address (REST logs and token refusals, Engine.IO
    polling) sees the browser's own; ``getPeer()`` stays the direct peer.
    ``base``: the request class to extend (``twisted.web.server.Request``).
    ``trusted``: CIDR texts, or a :class:`TrustedProxies` read at each
    request (SIGHUP)."""
    if base is None:
        from twisted.web.server import Request as base
    proxies = trusted if isinstance(trusted, TrustedProxies) else TrustedProxies(trusted)

    class ForwardedRequest(base):
        def getClientAddress(self):
            direct = super().getClientAddress()
            if not proxies.nets:
                return direct
            host = client_address(self, proxies.nets, direct)
            if host is None or host == getattr(direct, "host", None):
                return direct
            return address_of(host, 0)

    return ForwardedRequest


def address_of(host, port=0):
    """A twisted address for ``host`` (for tests and log lines)."""
    version = "TCP6" if ":" in host else "TCP"
    cls = taddress.IPv6Address if version == "TCP6" else taddress.IPv4Address
    return cls(version, host, port)


def socket_transport(transport):
    """The socket's own transport under protocol wrappers (the daemon reads
    every DAQ through :class:`ProxiedProtocol`): its ``bufferSize`` is the
    size of each read; the wrapper's would be ignored."""
    while getattr(transport, "wrappedProtocol", None) is not None:
        transport = transport.transport
    return transport

