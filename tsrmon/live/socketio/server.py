"""Socket.IO v5 on an Engine.IO server: one client's connection
(:class:`SocketConnection`) and the handler factory (:class:`SocketServer`)."""

import reprlib
from urllib.parse import parse_qsl

from twisted.logger import Logger

from tsrmon.live.engineio import LogPeerLog
from tsrmon.live.socketio import packets as P
from tsrmon.live.socketio.namespace import RESERVED_EVENTS, ConnectRefused, NamespaceSocket

# Peer-supplied names quoted in a log line: escaped (repr) and cut short.
_quote = reprlib.Repr()
_quote.maxstring = 64


class SocketConnection:
    """The Socket.IO state of one Engine.IO session."""

    log = Logger()

    def __init__(self, server, session):
        self.server = server
        self.session = session
        self.sockets = {}  # nsp -> NamespaceSocket
        self.partial = None  # a binary packet waiting for its attachments
        self.closed = False
        # Socket.IO v4 (the revision EIO3 clients speak) joins "/" at once.
        self.v4_protocol = getattr(session, "protocol", 4) == 3
        self._connect_timer = None
        if self.v4_protocol:
            self._connect("/", None)
        else:
            self._connect_timer = server.clock.callLater(server.connect_timeout, self._connect_timed_out)

    def _connect_timed_out(self):
        self._connect_timer = None
        if not self.sockets and not self.closed:
            self.session.close("connect timeout")

    def send_packet(self, ptype, nsp, data=P.NO_DATA, ack_id=None):
        items = P.encode(ptype, nsp, data, ack_id)
        self.server.counters["events_sent"] += 1
        return self.session.send_many(["4" + items[0]] + items[1:])

    def protocol_error(self, why):
        # ``why`` is bounded: fixed texts, peer values only through _quote.
        self.server.counters["protocol_errors"] += 1
        session = self.session
        peer = getattr(session, "peer", "unknown")
        self.server.peerlog.info(peer, "bad Socket.IO packet",
                                 "live session {sid} from {peer}: closing on a bad Socket.IO packet: "
                                 "{why}", sid=session.sid, peer=peer, why=why)
        self.session.close("parse error")

    # -- engine handler interface -------------------------------------------
    def on_message(self, data):
        if self.closed:
            return
        if isinstance(data, bytes):
            partial = self.partial
            if partial is None:
                self.protocol_error("unexpected binary message")
                return
            partial.buffers.append(data)
            if partial.complete():
                self.partial = None
                try:
                    partial.reconstruct()
                except P.PacketError as e:
                    self.protocol_error(str(e))
                    return
                self.dispatch(partial)
            return
        if self.partial is not None:
            self.protocol_error("text message while binary attachments were expected")
            return
        try:
            packet = P.decode(data)
        except P.PacketError as e:
            self.protocol_error(str(e))
            return
        if packet.attachments:
            self.partial = packet
            return
        self.dispatch(packet)

    def on_close(self, reason):
        self.closed = True
        self.server.connections.discard(self)
        if self._connect_timer is not None and self._connect_timer.active():
            self._connect_timer.cancel()
        self._connect_timer = None
        for socket in list(self.sockets.values()):
            self.leave(socket, reason)

    # -- packets -----------------------------------------------------------
    def dispatch(self, packet):
        ptype = packet.type
        nsp = packet.nsp
        if ptype == P.CONNECT:
            self._connect(nsp, packet.data if packet.data is not P.NO_DATA else None)
            return
        socket = self.sockets.get(nsp)
        if ptype == P.DISCONNECT:
            if socket is not None:
                self.leave(socket, "client namespace disconnect")
            return
        if socket is None:
            self.protocol_error(f"packet for namespace {_quote.repr(nsp)}, which is not connected")
            return
        if ptype in (P.EVENT, P.BINARY_EVENT):
            event, args = packet.data[0], packet.data[1:]
            ack = None
            if packet.ack_id is not None:
                ack = self._ack_sender(nsp, packet.ack_id)
            if event in RESERVED_EVENTS:
                return
            self.server.counters["events_received"] += 1
            try:
                socket.namespace.on_event(socket, event, args, ack)
            except Exception:
                self.log.failure("live: handler of {event!r} on {nsp} failed", event=event, nsp=nsp)
        elif ptype in (P.ACK, P.BINARY_ACK):
            callback = socket.acks.pop(packet.ack_id, None)
            if callback is not None:
                try:
                    callback(*packet.data)
                except Exception:
                    self.log.failure("live: ack callback on {nsp} failed", nsp=nsp)
        else:
            self.protocol_error(f"packet type {ptype} from a client")

    def _ack_sender(self, nsp, ack_id):
        sent = []

        def ack(*args):
            if sent or self.closed or nsp not in self.sockets:
                return
            sent.append(True)
            self.send_packet(P.ACK, nsp, list(args), ack_id)
        return ack

    def _connect(self, nsp, auth):
        counters = self.server.counters
        if self.v4_protocol and "?" in nsp:
            # v4 puts the handshake query in the namespace: "/nsp?token=t".
            nsp, _, query = nsp.partition("?")
            auth = dict(parse_qsl(query))
        if nsp in self.sockets:
            return  # a duplicate CONNECT: already connected
        if auth is not None and not isinstance(auth, dict):
            auth = None
        namespace = self.server.resolve(nsp)
        if namespace is None:
            counters["connect_errors"] += 1
            self._refuse(nsp, "Invalid namespace")
            return
        try:
            token = self.server.authorize(self, auth)
            namespace.authorize(self, auth)
        except ConnectRefused as refused:
            counters["connect_errors"] += 1
            self._refuse(nsp, refused.message, refused.data)
            return
        if self._connect_timer is not None and self._connect_timer.active():
            self._connect_timer.cancel()
        self._connect_timer = None
        socket = NamespaceSocket(namespace, self)
        socket.token = token
        self.sockets[nsp] = socket
        namespace.sockets[socket.sid] = socket
        counters["connects"] += 1
        if self.v4_protocol:
            self.send_packet(P.CONNECT, nsp)
        else:
            self.send_packet(P.CONNECT, nsp, {"sid": socket.sid})
        try:
            namespace.on_connect(socket, auth if auth is not None else {})
        except Exception:
            self.log.failure("live: connect handler of {nsp} failed", nsp=nsp)

    def _refuse(self, nsp, message, data=None):
        if self.v4_protocol:
            self.send_packet(P.CONNECT_ERROR, nsp, message)  # v4: a JSON string
            return
        payload = {"message": message}
        if data is not None:
            payload["data"] = data
        self.send_packet(P.CONNECT_ERROR, nsp, payload)

    def leave(self, socket, reason):
        if self.sockets.get(socket.nsp) is socket:
            del self.sockets[socket.nsp]
        socket.namespace.sockets.pop(socket.sid, None)
        socket.acks.clear()
        try:
            socket.namespace.on_disconnect(socket, reason)
        except Exception:
            self.log.failure("live: disconnect handler of {nsp} failed", nsp=socket.nsp)


class SocketServer:
    """Socket.IO on an Engine.IO server: ``handler_factory`` for :class:`EngineServer`."""

    log = Logger()

    def __init__(self, clock, resolve, *, connect_timeout=45.0, policy=None, counters=None,
                 peerlog=None):
        """``policy``: the engine's policy (None: no API tokens); ``peerlog``:
        as for :class:`~tsrmon.live.engineio.EngineServer`."""
        self.clock = clock
        self.resolve = resolve
        self.connect_timeout = connect_timeout
        # The owner's shared policy (tokens_required, token_ok), read at each use.
        self.policy = policy
        self.connections = set()
        self.peerlog = peerlog if peerlog is not None else LogPeerLog(self.log)
        self.counters = counters if counters is not None else {}
        for key in ("events_sent", "events_received", "connects", "connect_errors",
                    "protocol_errors", "revoked"):
            self.counters.setdefault(key, 0)

    def __call__(self, session):
        connection = SocketConnection(self, session)
        if not connection.closed:
            self.connections.add(connection)
        return connection

    def authorize(self, connection, auth):
        """With API tokens set, a CONNECT needs a handshake token or an auth
        payload ``{"token": …}`` that the policy accepts now.

        Returns the token that let it in (None without API tokens); raises
        :class:`ConnectRefused` otherwise."""
        policy = self.policy
        if policy is None or not policy.tokens_required:
            return None
        session_token = getattr(connection.session, "token", None)
        if session_token is not None and policy.token_ok(session_token):
            return session_token
        token = auth.get("token") if isinstance(auth, dict) else None
        if token is not None and policy.token_ok(token):
            return token
        raise ConnectRefused("Not authorized")

    def revalidate(self):
        """After the tokens changed (SIGHUP): every namespace socket whose token
        is no longer accepted is disconnected from its namespace (the client
        sees a server-side DISCONNECT and may CONNECT again with a new token).
        Returns how many."""
        policy = self.policy
        if policy is None or not policy.tokens_required:
            return 0
        revoked = 0
        for connection in list(self.connections):
            for socket in list(connection.sockets.values()):
                if socket.token is None or not policy.token_ok(socket.token):
                    socket.disconnect()
                    revoked += 1
        self.counters["revoked"] += revoked
        return revoked
