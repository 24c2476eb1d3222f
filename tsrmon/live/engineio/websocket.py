"""The WebSocket transport (Autobahn) of one Engine.IO session, or an upgrade probe."""

from collections import deque

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.live.engineio.codec import ws_frames
from tsrmon.live.engineio.fanout import direct_ok


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


def send_now(transport, data):
    """Write ``data`` on ``transport``; on a plain TCP connection with nothing
    buffered, straight into the socket now.

    ``transport.write`` only buffers: the bytes would reach the kernel on a
    later reactor pass (epoll over every client made writable, one
    ``doWrite`` each), after the whole tick was buffered.  Sent here, a
    tick's clients are served in one pass, the first at once and each without
    the two epoll registrations per write.  What the kernel does not take now
    (a partial send, EAGAIN) is handed to ``transport.write`` and follows in
    order; an error is left to the reactor's next write to find and report
    (it closes the connection as usual).  Anything already buffered (TLS, a
    wrapped transport, a backlog) keeps the ordinary path, so bytes never
    overtake each other.
    """
    if not direct_ok(transport):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])


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
        # Set while this transport's bytes wait in a flush's DirectBatch
        # (engineio/fanout.py): later writes in that flush join them.
        self.direct = None

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
        self.token = engine.policy.tokens.presented(request.headers.get("authorization"),
                                                   self.query.get("token"))
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

    def _write(self, packets, data=None, batch=None):
        """``data``: the frames of ``packets`` when already joined.  ``batch``:
        a flush's :class:`~.fanout.DirectBatch`, which sends them later (from
        two threads) when they may go straight into the socket."""
        if self.state != self.STATE_OPEN:
            return  # closing: autobahn would raise (sendMessage) or write after close
        if data is None:
            data = ws_frames(packets, self.eio == 3)
        transport = self.transport
        if self.direct is not None:
            self.direct.extend(self, data)  # behind what this flush already holds for us
        elif batch is not None and direct_ok(transport):
            batch.add(self, transport, data)
        else:
            send_now(transport, data)
        self.factory.engine.counters["packets_sent"] += len(packets)

    def sendData(self, data, sync=False, chopsize=None):
        """Autobahn's own writes (a close frame, a pong) in the middle of a
        flush that holds this client's bytes go behind them, not before."""
        if self.direct is not None and not (sync or chopsize or self.send_queue):
            self.direct.extend(self, data)
            return
        super().sendData(data, sync, chopsize)

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
