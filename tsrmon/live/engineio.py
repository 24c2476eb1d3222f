"""Engine.IO v4 server: sessions, HTTP long-polling and the WebSocket transport.

One :class:`EngineServer` owns the sessions of one endpoint (``/socket.io/``).
:meth:`EngineServer.resource` is an ``isLeaf`` twisted.web resource: requests
with ``Upgrade: websocket`` go to Autobahn (``WebSocketResource`` hijacks the
HTTP connection), every other request is long-polling answered here.  It works
mounted with ``putChild`` or returned from a Klein ``branch=True`` route.

A session's messages reach its *handler* (the Socket.IO layer or the
conformance echo) through ``on_message(data)`` / ``on_close(reason)``.
Outgoing packets are ``str`` (a text Engine.IO packet, type digit first),
``bytes`` (a binary message) or :class:`Outgoing` (a text packet serialised
once for a broadcast).  Each session's send queue is bounded by
``max_queue``; a client that cannot keep up is dropped, so a stalled socket
never grows memory or slows the others.  Between :meth:`EngineServer.cork`
and :meth:`EngineServer.uncork` (a live tick, a statistics roll) packets are
held per session and then go out as one transport write per WebSocket client
(one frame per packet, :func:`ws_frames`) or one answer per polling client.

Who may connect is decided by the :class:`tsrmon.web.policy.HttpPolicy`
passed in (the daemon's one policy object, shared with the REST gate and
reloaded by SIGHUP; never copied here): its CORS origins answer every
request, and with API tokens set a handshake that presents a token
(``Authorization: Bearer`` or ``?token=``) must present a valid one.  The
session id then authorises the polling requests that follow (clients such
as python-engineio send custom headers with the handshake only).
"""

import base64
import binascii
import os
import struct
from collections import deque

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from tsrmon.live.packets import dumps
from tsrmon.peerlog import PeerLog
from tsrmon.web.policy import HttpPolicy, TokenCheck

# Engine.IO error codes (engine.io server.ts) and their HTTP status.
TRANSPORT_UNKNOWN = 0
UNKNOWN_SID = 1
BAD_HANDSHAKE_METHOD = 2
BAD_REQUEST = 3
FORBIDDEN = 4
UNSUPPORTED_PROTOCOL_VERSION = 5
ERROR_MESSAGES = {
    TRANSPORT_UNKNOWN: "Transport unknown",
    UNKNOWN_SID: "Session ID unknown",
    BAD_HANDSHAKE_METHOD: "Bad handshake method",
    BAD_REQUEST: "Bad request",
    FORBIDDEN: "Forbidden",
    UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}

RS = "\x1e"  # v4 polling payload separator


class Outgoing:
    """A text packet shared by many sessions: encoded and framed once."""

    __slots__ = ("text", "_frame")

    def __init__(self, text):
        self.text = text
        self._frame = None

    def frame(self):
        """The complete WebSocket text frame (built on first use)."""
        if self._frame is None:
            self._frame = ws_frame(self.text.encode("utf-8"), 0x1)
        return self._frame


def ws_frames(packets, eio3=False):
    """The WebSocket frames of ``packets`` (str / bytes / :class:`Outgoing`),
    concatenated: one ``transport.write`` carries them all, each packet still
    its own frame (Engine.IO v4 over WebSocket is one packet per frame).

    This is the one place that writes raw frames under Autobahn, because
    Autobahn's ``sendMessage`` formats a debug line and walks its framing
    state machine per message, which cost more than the fan-out itself
    (tests/live/bench_fanout.py); and one joined write per client per tick
    instead of one per event took the update p99 of 1,000 clients × 32
    sensors from ~95 ms to the figure in docs/performance.md.  No extension
    is ever negotiated (no permessage-deflate offer is accepted), so frames
    are plain RFC 6455 §5.2 server frames: FIN, unmasked, unfragmented.
    """
    out = []
    for p in packets:
        if type(p) is Outgoing:
            out.append(p._frame or p.frame())
        elif isinstance(p, str):
            out.append(ws_frame(p.encode("utf-8"), 0x1))
        elif eio3:
            out.append(ws_frame(b"\x04" + p, 0x2))
        else:
            out.append(ws_frame(p, 0x2))
    return out[0] if len(out) == 1 else b"".join(out)


def ws_frame(payload, opcode):
    """One unmasked, unfragmented server WebSocket frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def utf16_len(text):
    """JS string length: UTF-16 code units (EIO3 length prefixes count these)."""
    return len(text.encode("utf-16-le")) // 2


def encode_payload_v3(packets):
    """EIO3 polling payload: ``<len>:<packet>`` each, binary as ``b4<base64>``.

    Binary always travels base64-encoded: clients that did not ask for
    ``b64=1`` (browsers with XHR2) still decode it.
    """
    parts = []
    for p in packets:
        if isinstance(p, Outgoing):
            p = p.text
        elif not isinstance(p, str):
            p = "b4" + base64.b64encode(p).decode("ascii")
        parts.append(f"{utf16_len(p)}:{p}")
    return "".join(parts)


def decode_payload_v3(body, binary):
    """Packets (str, or bytes for binary messages) of an EIO3 POST; None if malformed."""
    out = []
    if binary:
        # XHR2 binary payload: 0|1, length as digit bytes, 0xFF, packet.
        i, n = 0, len(body)
        while i < n:
            kind = body[i]
            j = body.find(b"\xff", i + 1)
            if kind not in (0, 1) or j < 0 or j - i - 1 > 10 or any(d > 9 for d in body[i + 1:j]):
                return None
            length = int("".join(str(d) for d in body[i + 1:j]) or "x") if j > i + 1 else None
            if length is None:
                return None
            packet = body[j + 1:j + 1 + length]
            if len(packet) != length:
                return None
            i = j + 1 + length
            if kind == 0:
                try:
                    out.append(packet.decode("utf-8"))
                except UnicodeDecodeError:
                    return None
            elif packet[:1] == b"\x04":
                out.append(packet[1:])
            else:
                return None
        return out
    try:
        units = body.decode("utf-8").encode("utf-16-le")
    except UnicodeDecodeError:
        return None
    i, n = 0, len(units)
    while i < n:
        j = units.find(b":\x00", i)
        if j < 0 or (j - i) % 2:
            return None
        digits = units[i:j].decode("utf-16-le")
        if not digits.isdigit():
            return None
        end = j + 2 + 2 * int(digits)
        if end > n:
            return None
        packet = units[j + 2:end].decode("utf-16-le", "surrogatepass")
        i = end
        if packet[:2] == "b4":
            try:
                out.append(base64.b64decode(packet[2:], validate=True))
            except (binascii.Error, ValueError):
                return None
        else:
            out.append(packet)
    return out


def new_sid():
    """20 url-safe characters from 15 random bytes."""
    return base64.urlsafe_b64encode(os.urandom(15)).decode("ascii")


class EngineServer:
    """The sessions of one Engine.IO endpoint and their timing rules."""

    log = Logger()

    def __init__(self, clock, handler_factory, *, ping_interval=25.0, ping_timeout=20.0,
                 max_payload=1_000_000, upgrade_timeout=10.0, max_queue=1000,
                 policy=None, name="socket.io", counters=None, allow_eio3=False):
        self.clock = clock
        self.handler_factory = handler_factory
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_payload = max_payload
        self.upgrade_timeout = upgrade_timeout
        self.max_queue = max_queue
        # CORS and tokens: read from the shared policy at every request.
        self.policy = policy if policy is not None else HttpPolicy()
        # Warnings about one client (dropped as slow, bad packets): a few
        # lines per client address and reason a minute.
        self.peerlog = PeerLog(self.log, clock)
        self.name = name
        self.allow_eio3 = allow_eio3
        self.sessions = {}
        self.counters = counters if counters is not None else {}
        for key in ("sessions_opened", "sessions_closed", "dropped_slow_clients",
                    "ping_timeouts", "upgrades", "packets_sent", "bad_requests",
                    "second_websockets"):
            self.counters.setdefault(key, 0)
        self.factory = WebSocketServerFactory()
        self.factory.protocol = EngineWebSocket
        self.factory.engine = self
        self.factory.setProtocolOptions(
            maxMessagePayloadSize=max_payload,
            maxFramePayloadSize=max_payload,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=2,
            failByDrop=False,  # send the 1009 close frame on an oversized message
        )
        self._ws_resource = WebSocketResource(self.factory)
        self.accepting = True
        self._cork_depth = 0  # > 0: sends are held per session until uncork()
        self._corked = []  # sessions holding packets, in the order they got their first

    # -- batching ----------------------------------------------------------
    def cork(self):
        """Hold every session's outgoing packets until the matching :meth:`uncork`
        (calls nest): a live tick's events then reach each client as one
        transport write (WebSocket) or one poll answer (polling), in order."""
        self._cork_depth += 1

    def uncork(self):
        """End one :meth:`cork`; the outermost sends what each session holds."""
        self._cork_depth -= 1
        if self._cork_depth > 0:
            return
        self._cork_depth = 0
        corked, self._corked = self._corked, []
        # Clients of one room mostly hold the very same packets (shared
        # Outgoing objects): their joined frames are built once per flush.
        joined = {}
        for session in corked:
            session.flush_held(joined)

    def resource(self):
        return EngineResource(self)

    # -- sessions ----------------------------------------------------------
    def protocol_of(self, eio):
        """4, 3 (only with allow_eio3; a missing EIO counts as 3, as in JS) or None."""
        if eio == "4":
            return 4
        if eio in (None, "3") and self.allow_eio3:
            return 3
        return None

    def open_session(self, websocket=None, token=None, query=None, protocol=4, peer=None):
        """``token``: what the handshake presented (bytes, checked) or None;
        ``peer``: the client's address (for log lines)."""
        sid = new_sid()
        while sid in self.sessions:
            sid = new_sid()
        session = EngineSession(self, sid, websocket, token, query or {}, protocol)
        session.peer = peer or "unknown"
        self.sessions[sid] = session
        self.counters["sessions_opened"] += 1
        session.start()
        return session

    def get_session(self, sid):
        """The live session for ``sid``, or None (unknown, closed or timed out)."""
        session = self.sessions.get(sid)
        if session is not None and session.expired():
            session.close("ping timeout")
            return None
        return session

    def transport_counts(self):
        polling = websocket = 0
        for s in self.sessions.values():
            if s.ws is not None:
                websocket += 1
            else:
                polling += 1
        return polling, websocket

    def close_all(self, reason="server shutting down"):
        self.accepting = False
        for session in list(self.sessions.values()):
            session.close(reason)


class EngineSession:
    """One Engine.IO client, whichever transport currently carries it."""

    log = Logger()

    def __init__(self, server, sid, websocket, token, query, protocol=4):
        self.server = server
        self.protocol = protocol  # Engine.IO revision: 4, or 3 for old clients
        self.clock = server.clock
        self.sid = sid
        # The token the handshake presented: checked against the policy of
        # the moment each time it is used (a SIGHUP may have revoked it).
        self.token = token
        self.peer = "unknown"  # the client's address, for log lines
        self.query = query
        self.ws = websocket  # the active WebSocket protocol (None while polling)
        self.probe = None  # a WebSocket probing for the upgrade
        self.upgrading = False  # 3probe sent, waiting for 5
        self.queue = deque()  # packets waiting for a polling GET
        self.held = None  # packets sent while the server is corked (a list), else None
        self.poll_request = None
        self.closed = False
        self.close_reason = None
        self._ping_call = None
        self._timeout_call = None
        self._deadline = None
        self._upgrade_call = None
        self.handler = None

    def start(self):
        open_packet = "0" + dumps({
            "sid": self.sid,
            "upgrades": [] if self.ws is not None else ["websocket"],
            "pingInterval": int(round(self.server.ping_interval * 1000)),
            "pingTimeout": int(round(self.server.ping_timeout * 1000)),
            "maxPayload": self.server.max_payload,
        })
        if self.protocol == 3:
            self._poll_encode = encode_payload_v3
        self.open_packet = open_packet
        if self.ws is not None:
            self.ws.send_packet(open_packet)
        self._schedule_ping()
        self.handler = self.server.handler_factory(self)

    @property
    def authenticated(self):
        """True while the handshake's token is one of the configured tokens."""
        return self.token is not None and self.server.policy.token_ok(self.token)

    @property
    def transport_name(self):
        return "websocket" if self.ws is not None else "polling"

    # -- heartbeat ---------------------------------------------------------
    def _schedule_ping(self):
        if self.protocol == 3:
            # EIO3: the client pings; no ping within interval + timeout closes.
            self._deadline = self.clock.seconds() + self.server.ping_interval + self.server.ping_timeout
            self._timeout_call = self.clock.callLater(
                self.server.ping_interval + self.server.ping_timeout, self._ping_timed_out)
            return
        self._ping_call = self.clock.callLater(self.server.ping_interval, self._ping)

    def _client_ping(self, data):
        if self.protocol != 3:
            return  # a v4 client ping violates the protocol; ignoring it is safer
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.cancel()
        self._timeout_call = None
        self._schedule_ping()
        self.send("3" + data)

    def _ping(self):
        self._ping_call = None
        if self.closed:
            return
        self._deadline = self.clock.seconds() + self.server.ping_timeout
        self._timeout_call = self.clock.callLater(self.server.ping_timeout, self._ping_timed_out)
        self.send("2")

    def _ping_timed_out(self):
        self._timeout_call = None
        self.close("ping timeout")

    def expired(self):
        """Timer lateness: a request after the deadline finds the session gone."""
        return self._deadline is not None and self.clock.seconds() > self._deadline

    def _pong(self):
        if self._timeout_call is None or self.protocol == 3:
            return  # unsolicited pong (EIO3 servers never ping): harmless
        self._timeout_call.cancel()
        self._timeout_call = None
        self._deadline = None
        self._schedule_ping()

    # -- outgoing ----------------------------------------------------------
    def send(self, packet):
        """Queue one packet (str / bytes / Outgoing); False if the session is gone."""
        return self.send_many((packet,))

    def send_many(self, packets):
        """Queue packets (one Socket.IO packet and its attachments, or a batch);
        False if the session is gone or was dropped as slow."""
        if self.closed:
            return False
        server = self.server
        if server._cork_depth:
            held = self.held
            if held is None:
                held = self.held = []
                server._corked.append(self)
            # Held for one tick or roll only (bounded by what it emits); the
            # queue bound applies when it is sent, against what still waits.
            held.extend(packets)
            return True
        if self.ws is not None:
            return self.ws.send_packets(packets)
        queue = self.queue
        queue.extend(packets)
        if len(queue) > server.max_queue:
            self.drop_slow()
            return False
        if self.poll_request is not None:
            self._flush_poll()
        return True

    def flush_held(self, joined=None):
        """Send what was held while the server was corked (one write / poll
        answer).  ``joined``: {(eio3, packets): frames} shared by one flush."""
        held, self.held = self.held, None
        if not held or self.closed:
            return
        ws = self.ws
        if joined is not None and ws is not None and not (ws.paused or ws.backlog):
            key = (ws.eio == 3, tuple(held))
            data = joined.get(key)
            if data is None:
                data = joined[key] = ws_frames(held, key[0])
            ws._write(held, data)
        else:
            self.send_many(held)

    def drop_slow(self):
        self.server.counters["dropped_slow_clients"] += 1
        self.server.peerlog.warn(self.peer, "slow client",
                                 "live client {sid} ({transport}) from {peer} dropped: more than "
                                 "{max} messages queued", sid=self.sid, transport=self.transport_name,
                                 peer=self.peer, max=self.server.max_queue)
        self.close("slow client")

    def _poll_encode(self, packets):
        """v4 payload: packets joined by \\x1e, binary as ``b<base64>``."""
        parts = []
        for p in packets:
            if isinstance(p, Outgoing):
                parts.append(p.text)
            elif isinstance(p, str):
                parts.append(p)
            else:
                parts.append("b" + base64.b64encode(p).decode("ascii"))
        return RS.join(parts)

    def _flush_poll(self):
        request, self.poll_request = self.poll_request, None
        self.server.counters["packets_sent"] += len(self.queue)
        body = self._poll_encode(self.queue)
        self.queue.clear()
        write_poll_body(request, body)

    # -- incoming ----------------------------------------------------------
    def receive_text(self, text):
        """One text Engine.IO packet; False if it was invalid (caller closes)."""
        if not text:
            return False
        kind = text[0]
        if kind == "4":
            self.handler.on_message(text[1:])
        elif kind == "3":
            self._pong()
        elif kind == "1":
            self.close("transport close", poll_reply="6")
        elif kind == "2":
            self._client_ping(text[1:])
        elif kind == "6":
            pass
        elif kind == "5":
            pass
        else:
            return False
        return True

    def receive_binary(self, data):
        self.handler.on_message(data)

    # -- polling -----------------------------------------------------------
    def poll(self, request):
        """A polling GET: answer now if packets wait, else park it."""
        if self.poll_request is not None:
            # Two concurrent GETs: the first gets close, the second a 400.
            self.queue.clear()
            self.queue.append("1")
            self._flush_poll()
            self.close("multiple GET requests")
            return error_body(request, BAD_REQUEST, self.server)
        self.poll_request = request
        if self.queue:
            self._flush_poll()
        elif self.upgrading:
            self.queue.append("6")
            self._flush_poll()
        else:
            request.notifyFinish().addErrback(self._poll_gone, request)
        return NOT_DONE_YET

    def _poll_gone(self, failure, request):
        if self.poll_request is request:
            self.poll_request = None
            self.close("poll connection closed prematurely")

    def post(self, request, body, binary=False):
        if self.protocol == 3:
            chunks = decode_payload_v3(body, binary)
            ok = chunks is not None
        else:
            try:
                chunks = body.decode("utf-8").split(RS)
                ok = True
            except UnicodeDecodeError:
                ok = False
        if ok:
            for chunk in chunks:
                if isinstance(chunk, bytes):
                    self.receive_binary(chunk)
                    continue
                if chunk[:1] == "b":
                    try:
                        data = base64.b64decode(chunk[1:], validate=True)
                    except (binascii.Error, ValueError):
                        ok = False
                        break
                    self.receive_binary(data)
                elif not self.receive_text(chunk):
                    ok = False
                    break
                if self.closed:
                    break
        if not ok:
            self.close("parse error")
            return error_body(request, BAD_REQUEST, self.server)
        request.setHeader(b"content-type", b"text/html")
        return b"ok"

    # -- upgrade -----------------------------------------------------------
    def probe_started(self, ws):
        self.probe = ws
        self._upgrade_call = self.clock.callLater(self.server.upgrade_timeout, self._upgrade_timed_out)

    def probe_ping(self, ws):
        """``2probe`` arrived: answer and make the pending GET return."""
        ws.send_packet("3probe")
        self.upgrading = True
        if self.poll_request is not None and not self.queue:
            self.queue.append("6")
            self._flush_poll()

    def upgrade(self, ws):
        """``5`` arrived on the probe: the WebSocket carries the session now."""
        if self._upgrade_call is not None and self._upgrade_call.active():
            self._upgrade_call.cancel()
        self._upgrade_call = None
        self.probe = None
        self.upgrading = False
        if self.poll_request is not None:
            if not self.queue:
                self.queue.append("6")
            self._flush_poll()
        self.ws = ws
        self.server.counters["upgrades"] += 1
        pending = list(self.queue)
        self.queue.clear()
        if pending:
            ws.send_packets(pending)

    def _upgrade_timed_out(self):
        self._upgrade_call = None
        probe, self.probe = self.probe, None
        self.upgrading = False
        if probe is not None:
            probe.detach()
            probe.dropConnection(abort=True)

    def probe_lost(self, ws):
        if self.probe is ws:
            self.probe = None
            self.upgrading = False
            if self._upgrade_call is not None and self._upgrade_call.active():
                self._upgrade_call.cancel()
            self._upgrade_call = None

    # -- closing -----------------------------------------------------------
    def close(self, reason, poll_reply="1"):
        """Forget the session, tell the handler, close the transport."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.server.sessions.pop(self.sid, None)
        self.server.counters["sessions_closed"] += 1
        if reason == "ping timeout":
            self.server.counters["ping_timeouts"] += 1
        for call in (self._ping_call, self._timeout_call, self._upgrade_call):
            if call is not None and call.active():
                call.cancel()
        self._ping_call = self._timeout_call = self._upgrade_call = None
        if self.poll_request is not None:
            self.queue.clear()
            self.queue.append(poll_reply)
            self._flush_poll()
        self.queue.clear()
        self.held = None
        if self.probe is not None:
            self.probe.detach()
            self.probe.dropConnection(abort=True)
            self.probe = None
        if self.ws is not None:
            ws = self.ws
            ws.detach()
            ws.close_gracefully()
        if self.handler is not None:
            try:
                self.handler.on_close(reason)
            except Exception:
                self.log.failure("live session {sid}: closing the handler failed", sid=self.sid)
        self.log.debug("live session {sid} closed: {reason}", sid=self.sid, reason=reason)


@implementer(IPushProducer)
class _Backpressure:
    """Registered on the TCP transport: paused while its write buffer is full."""

    def __init__(self, ws):
        self.ws = ws

    def pauseProducing(self):
        self.ws.paused = True

    def resumeProducing(self):
        self.ws.resume()

    def stopProducing(self):
        pass


class _ProtocolLogger(Logger):
    """Autobahn logs every handshake step and frame at debug on the
    protocol's logger; with thousands of clients that drowns the log, so
    those never leave it (warnings and failures do)."""

    def debug(self, format=None, **kwargs):
        pass


class EngineWebSocket(WebSocketServerProtocol):
    """The WebSocket transport of one session (or a probe for an upgrade)."""

    log = _ProtocolLogger()

    def __init__(self):
        super().__init__()
        self.session = None
        self.sid_wanted = None
        self.token = None
        self.query = {}
        self.paused = False
        self.backlog = deque()
        self.eio = 4
        self.lost = defer.Deferred()  # fires when the TCP connection is gone

    def connectionLost(self, reason):
        try:
            super().connectionLost(reason)
        finally:
            if not self.lost.called:
                self.lost.callback(None)

    def connectionMade(self):
        super().connectionMade()
        # The hijacked HTTP channel is still registered as the producer of the
        # TCP transport; replace it so a full write buffer pauses *us*.
        transport = self.transport
        try:
            transport.unregisterProducer()
        except Exception:
            pass  # nothing was registered
        try:
            transport.registerProducer(_Backpressure(self), True)
        except Exception:
            self.log.failure("live: no backpressure on this WebSocket transport; "
                             "slow clients are not detected on it")

    def onConnect(self, request):
        params = request.params
        sid = params.get("sid", [None])[0]
        self.sid_wanted = sid
        self.query = {k: v[0] for k, v in params.items() if v}
        engine = self.factory.engine
        if sid is None:
            self.eio = engine.protocol_of(self.query.get("EIO")) or 4
        else:
            session = engine.sessions.get(sid)
            self.eio = session.protocol if session is not None else 4
        # Refused at the HTTP step (EngineResource.render) when wrong.
        self.token = TokenCheck.presented(request.headers.get("authorization"), self.query.get("token"))
        return None

    def onOpen(self):
        engine = self.factory.engine
        if self.sid_wanted is None:
            if not engine.accepting:
                self.dropConnection(abort=False)
                return
            peer = getattr(self.transport.getPeer(), "host", None) if self.transport else None
            self.session = engine.open_session(self, self.token, self.query, self.eio, peer=peer)
            return
        session = engine.get_session(self.sid_wanted)
        if session is None or session.ws is not None or session.probe is not None:
            # A second WebSocket for one session (or it vanished meanwhile):
            # closed, the session on its first transport is untouched.
            self.factory.engine.counters["second_websockets"] += 1
            self.sendClose(1000)
            return
        self.session = session
        session.probe_started(self)

    def detach(self):
        self.session = None

    def onMessage(self, payload, isBinary):
        session = self.session
        if session is None:
            return
        if session.ws is not self:
            # Probe: only 2probe and 5 are expected before the switch.
            if isBinary:
                return
            if payload == b"2probe":
                session.probe_ping(self)
            elif payload == b"5" and session.upgrading:
                session.upgrade(self)
            return
        if isBinary:
            if self.eio == 3:
                if payload[:1] != b"\x04":
                    session.close("parse error")
                    return
                payload = payload[1:]
            session.receive_binary(payload)
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if not session.receive_text(text):
            session.close("parse error")

    def onClose(self, wasClean, code, reason):
        session, self.session = self.session, None
        self.backlog.clear()
        if session is None:
            return
        if session.ws is self:
            session.close("transport close")
        else:
            session.probe_lost(self)

    def send_packet(self, packet):
        """Write or queue one packet; drop the client when the queue overflows."""
        return self.send_packets((packet,))

    def send_packets(self, packets):
        """Write packets as ONE transport write, or queue them behind a full
        socket; drop the client when the queue overflows."""
        if self.paused or self.backlog:
            self.backlog.extend(packets)
            if len(self.backlog) > self.factory.engine.max_queue:
                if self.session is not None:
                    self.session.drop_slow()
                return False
            return True
        self._write(packets)
        return True

    def _write(self, packets, data=None):
        """``data``: the frames of ``packets`` when already joined."""
        if self.state != self.STATE_OPEN:
            return  # closing: autobahn would raise (sendMessage) or write after close
        self.transport.write(ws_frames(packets, self.eio == 3) if data is None else data)
        self.factory.engine.counters["packets_sent"] += len(packets)

    def resume(self):
        self.paused = False
        backlog = self.backlog
        if not backlog:
            return
        # What waited goes out in one write too; a write that fills the
        # buffer pauses us again (at the next write, as before).
        packets = list(backlog)
        backlog.clear()
        self._write(packets)

    def close_gracefully(self):
        self.backlog.clear()
        if self.paused:
            self.dropConnection(abort=True)  # a stalled peer will not read a close frame
        else:
            self.sendClose(1000)


# -- HTTP ------------------------------------------------------------------

def cors_headers(request, server):
    """The Engine.IO reference server's CORS answer (``cors: {origin, credentials}``),
    for the origins of the shared policy."""
    cors = server.policy.cors
    if cors.any:
        request.setHeader(b"access-control-allow-origin", b"*")
        return
    origin = request.getHeader(b"origin")
    if origin is not None and cors.allow(origin.decode("latin-1")) is not None:
        request.setHeader(b"access-control-allow-origin", origin)
        request.setHeader(b"access-control-allow-credentials", b"true")
        request.setHeader(b"vary", b"Origin")


def error_body(request, code, server):
    server.counters["bad_requests"] += 1
    request.setResponseCode(403 if code == FORBIDDEN else 400)
    request.setHeader(b"content-type", b"application/json")
    return dumps({"code": code, "message": ERROR_MESSAGES[code]}).encode("utf-8")


def write_poll_body(request, text):
    body = text.encode("utf-8")
    request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
    request.setHeader(b"content-length", str(len(body)).encode("ascii"))
    request.write(body)
    request.finish()


class EngineResource(Resource):
    """``/socket.io/``: long-polling here, WebSocket upgrades to Autobahn."""

    isLeaf = True

    def __init__(self, server):
        super().__init__()
        self.engine = server

    def render(self, request):
        server = self.engine
        cors_headers(request, server)
        request.setHeader(b"cache-control", b"no-store")
        method = request.method
        if method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"access-control-allow-methods", b"GET,HEAD,PUT,PATCH,POST,DELETE")
            wanted = request.getHeader(b"access-control-request-headers")
            if wanted:
                request.setHeader(b"access-control-allow-headers", wanted)
            request.setHeader(b"vary", b"Access-Control-Request-Headers")
            request.setHeader(b"content-length", b"0")
            return b""
        args = request.args

        def arg(name):
            v = args.get(name.encode("ascii"))
            return v[0].decode("utf-8", "replace") if v else None

        transport = arg("transport")
        upgrade = (request.getHeader(b"upgrade") or b"").lower() == b"websocket"
        if transport not in ("polling", "websocket"):
            return error_body(request, TRANSPORT_UNKNOWN, server)
        sid = arg("sid")
        if sid is not None:
            session = server.get_session(sid)
            if upgrade:
                if session is None:
                    return self._refuse_upgrade(request)
                # A second WebSocket for a session that is upgrading or already
                # upgraded is accepted and closed at once (EngineWebSocket.onOpen),
                # as the Engine.IO reference server does: the client sees a
                # close, not a failed handshake.
                return server._ws_resource.render(request)
            if session is None:
                return error_body(request, UNKNOWN_SID, server)
            if session.ws is not None or transport != "polling":
                return error_body(request, BAD_REQUEST, server)
            if method == b"GET":
                return session.poll(request)
            if method == b"POST":
                return self._post(request, session)
            return error_body(request, BAD_REQUEST, server)
        # Handshake.
        if method != b"GET":
            return error_body(request, BAD_HANDSHAKE_METHOD, server)
        protocol = server.protocol_of(arg("EIO"))
        if protocol is None:
            return error_body(request, UNSUPPORTED_PROTOCOL_VERSION, server)
        policy = server.policy
        token = TokenCheck.presented(request.getHeader(b"authorization"), arg("token"))
        # No token is fine here: the Socket.IO CONNECT may bring one in its
        # auth payload.  A wrong one is refused at once.
        if policy.tokens_required and token is not None and not policy.token_ok(token):
            return error_body(request, FORBIDDEN, server)
        if not server.accepting:
            return error_body(request, BAD_REQUEST, server)
        if upgrade:
            # Also a WebSocket whose query says transport=polling (the native
            # Dart client without setTransports does this).
            return server._ws_resource.render(request)
        if transport != "polling":
            return error_body(request, BAD_REQUEST, server)
        query = {k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace")
                 for k, v in args.items() if v}
        peer = getattr(request.getClientAddress(), "host", None)
        session = server.open_session(None, token, query, protocol, peer=peer)
        write_poll_body(request, session._poll_encode([session.open_packet]))
        return NOT_DONE_YET

    def _post(self, request, session):
        server = self.engine
        ctype = (request.getHeader(b"content-type") or b"").lower()
        binary = ctype.startswith(b"application/octet-stream")
        if binary and session.protocol == 4:
            session.close("binary payload over polling")
            return error_body(request, BAD_REQUEST, server)
        content = request.content
        content.seek(0, 2)
        size = content.tell()
        if size > server.max_payload:
            session.close("payload too large")
            request.setResponseCode(413)
            request.setHeader(b"content-type", b"application/json")
            return dumps({"code": 1, "message": "Payload Too Large"}).encode("utf-8")
        content.seek(0)
        return session.post(request, content.read(), binary)

    def _refuse_upgrade(self, request):
        self.engine.counters["bad_requests"] += 1
        request.setResponseCode(400)
        request.setHeader(b"content-type", b"text/html")
        request.setHeader(b"connection", b"close")
        return b"Session ID unknown"
