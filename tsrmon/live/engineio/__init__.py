"""Engine.IO v4 (and v3) server on Twisted: sessions, HTTP long-polling and
the WebSocket transport.  A small library: it imports nothing from the rest
of tsrmon (tests/live/test_library_imports.py checks), so it could be
published on its own.

- :mod:`.codec` — error codes, polling payloads, WebSocket frames (:func:`ws_frames`)
- :mod:`.session` — :class:`EngineSession`: heartbeat, send queue, corking, polling, upgrade
- :mod:`.websocket` — :class:`EngineWebSocket`, the Autobahn protocol of one session
- :mod:`.resource` — :class:`EngineResource`: handshake, polling, CORS, upgrades to Autobahn
- :mod:`.server` — :class:`EngineServer`: the sessions of one endpoint
- :mod:`.defaults` — the policy and peer logger used when none is passed in

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

**What the owner passes in** (duck-typed; tsrmon passes its one
``tsrmon.web.policy.HttpPolicy``, shared with the REST gate and reloaded by
SIGHUP — it is read at every request, never copied):

``policy``
    ``cors.any`` (bool: answer ``*``) and ``cors.allow(origin)`` (the allowed
    origin or None); ``tokens_required`` (bool); ``token_ok(token)`` (bytes →
    bool, the policy of the moment); ``tokens.presented(authorization,
    query_token)`` (the token a request presents — ``Authorization: Bearer``
    or ``?token=`` — as bytes, or None).  Default :class:`OpenPolicy`.  The
    Socket.IO layer re-checks ``token_ok`` when its owner calls
    ``SocketServer.revalidate`` (tsrmon does so from ``policy.on_change``).
    With tokens set, a handshake that presents a token must present a valid
    one; the session id then authorises the polling requests that follow
    (clients such as python-engineio send custom headers with the handshake
    only).
``peerlog``
    ``warn(source, reason, fmt, **fields)`` and ``info(…)``: warnings about
    one client (dropped as slow, bad packets); tsrmon passes its rate-limited
    ``tsrmon.peerlog.PeerLog``.  Default :class:`LogPeerLog`.
``clock``
    an ``IReactorTime`` (tests pass ``task.Clock``).
"""

from tsrmon.live.engineio.codec import (
    BAD_HANDSHAKE_METHOD, BAD_REQUEST, ERROR_MESSAGES, FORBIDDEN, RS, TRANSPORT_UNKNOWN,
    UNKNOWN_SID, UNSUPPORTED_PROTOCOL_VERSION, Outgoing, decode_payload_v3, dumps,
    encode_payload_v3, encode_payload_v4, new_sid, utf16_len, ws_frame, ws_frames)
from tsrmon.live.engineio.defaults import LogPeerLog, OpenPolicy
from tsrmon.live.engineio.resource import EngineResource, cors_headers, error_body, write_poll_body
from tsrmon.live.engineio.server import EngineServer
from tsrmon.live.engineio.session import EngineSession
from tsrmon.live.engineio.websocket import EngineWebSocket

__all__ = [
    "BAD_HANDSHAKE_METHOD", "BAD_REQUEST", "ERROR_MESSAGES", "FORBIDDEN", "RS",
    "TRANSPORT_UNKNOWN", "UNKNOWN_SID", "UNSUPPORTED_PROTOCOL_VERSION", "EngineResource",
    "EngineServer", "EngineSession", "EngineWebSocket", "LogPeerLog", "OpenPolicy", "Outgoing",
    "cors_headers", "decode_payload_v3", "dumps", "encode_payload_v3", "encode_payload_v4",
    "error_body", "new_sid", "utf16_len", "write_poll_body", "ws_frame", "ws_frames",
]
