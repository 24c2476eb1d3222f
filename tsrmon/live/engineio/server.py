"""The sessions of one Engine.IO endpoint, their timing rules and corking."""

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.logger import Logger

from tsrmon.live.engineio.codec import new_sid
from tsrmon.live.engineio.defaults import LogPeerLog, OpenPolicy
from tsrmon.live.engineio.fanout import DirectBatch, ParallelSender
from tsrmon.live.engineio.resource import EngineResource
from tsrmon.live.engineio.session import EngineSession
from tsrmon.live.engineio.websocket import EngineWebSocket


PARALLEL_MIN = 64


class EngineServer:
    """The sessions of one Engine.IO endpoint and their timing rules."""

    log = Logger()

    def __init__(self, clock, handler_factory, *, ping_interval=25.0, ping_timeout=20.0,
                 max_payload=1_000_000, upgrade_timeout=10.0, max_queue=1000,
                 policy=None, name="socket.io", counters=None, allow_eio3=False, peerlog=None):
        """``policy``: who may connect (see the package docstring; default
        :class:`OpenPolicy`: any origin, no tokens).  ``peerlog``: where
        warnings about one client go, ``warn``/``info``(source, reason, fmt,
        **fields) — tsrmon passes its rate-limited ``PeerLog``; the default
        logs every line through twisted.logger."""
        self.clock = clock
        self.handler_factory = handler_factory
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_payload = max_payload
        self.upgrade_timeout = upgrade_timeout
        self.max_queue = max_queue
        # CORS and tokens: read from the shared policy at every request.
        self.policy = policy if policy is not None else OpenPolicy()
        # Warnings about one client (dropped as slow, bad packets).
        self.peerlog = peerlog if peerlog is not None else LogPeerLog(self.log)
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
        # A flush to at least this many WebSocket clients sends from two
        # threads (fanout.py); below it the thread hop costs more than it saves.
        self.parallel_min = PARALLEL_MIN
        self.sender = ParallelSender()

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
        if len(corked) < self.parallel_min:
            for session in corked:
                session.flush_held(joined)
            return
        # Many clients: collect the sends that may go straight into a socket,
        # then make them from two threads at once (fanout.py) before
        # returning, so nothing else writes to those transports meanwhile.
        batch = DirectBatch()
        try:
            for session in corked:
                session.flush_held(joined, batch)
        finally:
            if batch.pairs:
                batch.send(self.sender if len(batch) >= self.parallel_min else None)

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

    def stop_sender(self):
        """End the helper thread of big flushes (joined); later flushes send
        from the calling thread only, until :meth:`start_sender`."""
        self.sender.stop()

    def start_sender(self):
        self.sender.restart()

    def close_all(self, reason="server shutting down"):
        self.accepting = False
        for session in list(self.sessions.values()):
            session.close(reason)
