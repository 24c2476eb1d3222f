"""One Engine.IO session: heartbeat, send queue and corking, polling, upgrade."""

import base64
import binascii
from collections import deque

from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET

from tsrmon.live.engineio.codec import (
    BAD_REQUEST, RS, decode_payload_v3, dumps, encode_payload_v3, encode_payload_v4, ws_frames)
from tsrmon.live.engineio.resource import error_body, write_poll_body


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
        self.held = None  # packets sent while the server is corked (a sequence), else None
        self._held_shared = False  # held is the caller's sequence (not ours to extend)
        self.poll_request = None
        self.closed = False
        self.close_reason = None
        self._ping_call = None
        self._timeout_call = None
        self._deadline = None
        self._upgrade_call = None
        self.handler = None
        # The polling payload format of this session's Engine.IO revision.
        self._poll_encode = encode_payload_v3 if protocol == 3 else encode_payload_v4

    def start(self):
        open_packet = "0" + dumps({
            "sid": self.sid,
            "upgrades": [] if self.ws is not None else ["websocket"],
            "pingInterval": int(round(self.server.ping_interval * 1000)),
            "pingTimeout": int(round(self.server.ping_timeout * 1000)),
            "maxPayload": self.server.max_payload,
        })
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
            # Held for one tick or roll only (bounded by what it emits); the
            # queue bound applies when it is sent, against what still waits.
            held = self.held
            if held is None:
                # Kept as given, not copied: a broadcast hands every client
                # the same sequence, and the flush joins its frames once per
                # sequence, found by identity (flush_held).
                self.held = packets
                self._held_shared = True
                server._corked.append(self)
                return True
            if self._held_shared:
                held = self.held = list(held)
                self._held_shared = False
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

    def flush_held(self, joined=None, batch=None):
        """Send what was held while the server was corked (one write / poll
        answer).  ``joined``: {key: (packets, frames)} shared by one flush;
        ``batch``: its :class:`~.fanout.DirectBatch` (direct sends wait there)."""
        held, self.held = self.held, None
        if not held or self.closed:
            return
        ws = self.ws
        if joined is not None and ws is not None and not (ws.paused or ws.backlog):
            # The value keeps ``held`` alive, so its id is not reused in this flush.
            key = (ws.eio, id(held)) if self._held_shared else (ws.eio, tuple(held))
            got = joined.get(key)
            if got is None:
                got = joined[key] = (held, ws_frames(held, ws.eio == 3))
            ws._write(held, got[1], batch)
        else:
            self.send_many(held)

    def drop_slow(self):
        self.server.counters["dropped_slow_clients"] += 1
        self.server.peerlog.warn(self.peer, "slow client",
                                 "live client {sid} ({transport}) from {peer} dropped: more than "
                                 "{max} messages queued", sid=self.sid, transport=self.transport_name,
                                 peer=self.peer, max=self.server.max_queue)
        self.close("slow client")

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
