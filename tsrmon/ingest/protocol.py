"""The DAQ TCP port: one :class:`DAQProtocol` per DAQ connection.

The first byte picks the encoding: ``{`` starts newline-delimited JSON,
anything else is the deployed pickle stream.  Each decoded frame is checked
(``schema.py``) and handed to the hub; a refused frame is skipped whole and
logged with the peer and the reason, and the connection goes on.  A
connection that cannot be resynchronised, overflows its buffer cap or sends
a refused machine name is closed.  The server never writes on this link.

A connection must send its name frame within ``DAQ.NAME_TIMEOUT`` and may
buffer at most :data:`PRE_NAME_BUFFER` bytes before it; which connections
are let in at all, and the buffer budget of all of them, is the factory's
(``admission.py``).  Every refusal has a ``refused_<reason>`` counter; every
warning about a peer goes through one :class:`~tsrmon.peerlog.PeerLog` (per
source address and reason) and quotes peer text through
:func:`~tsrmon.peerlog.peer_text`.

Frames and samples are counted once, on the hub's ``Machine``; a
connection's own counts are derived from the machine's at its claim.
"""

import hmac

from twisted.internet import protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from tsrmon.cluster.proxy import socket_transport
from tsrmon.hub.records import DataFrame, FaultFrame, NameFrame
from tsrmon.hub.registry import Refused
from tsrmon.ingest import schema
from tsrmon.ingest.framing import EVENT, OK, JsonLineFramer, PickleFramer
from tsrmon.ingest.keepalive import set_keepalive
from tsrmon.ingest.opcodes import EXPANSION_REASON
from tsrmon.peerlog import peer_text

PRE_NAME_BUFFER = 64 * 1024  # bytes a connection may buffer before its name frame
# Opcodes walked in Python per reactor turn (~10-20 ms), shared by the
# connections walking at the time (each at least MIN_WALK): a frame of
# millions of one-byte opcodes is walked over many turns.
WALK_BUDGET = 4096
MIN_WALK = 64
_REASON_CHARS = 240  # refusal reasons quote peer text: cut short in the log
_DRAIN_READS = 1024
# A DAQ that has sent a frame of LARGE_FRAME bytes (a full-rate chunk is ~920 kB)
# is read LARGE_READ bytes at a time, not Twisted's 64 KiB: 16x fewer recv and feed calls.
LARGE_FRAME, LARGE_READ = 256 * 1024, 1024 * 1024
_EARLIEST = 946684800.0  # 2000-01-01T00:00:00Z
_FUTURE_SLACK = 3600.0  # DAQ clocks drift; an hour ahead is still plausible


def _counts(machine):
    return (machine.frames, machine.samples, machine.dropped_bytes, machine.dropped_nonfinite)


class DAQProtocol(protocol.Protocol):
    """One DAQ connection; implements the hub's ``DAQConnection`` port."""

    log = Logger()

    def __init__(self, factory):
        self.factory = factory
        self.hub = factory.hub
        self.clock = factory.clock
        self.peer_host = "?"
        self.peer = "?"
        self.machine = None
        self.framer = None
        self.encoding = None
        self.known_names = set()
        self.warned_sensors = set()
        self.closing = False
        self.connected_since = None
        self.last_frame = None
        # counters of this connection (frames, samples and drops are the
        # machine's, counted once: see _since_claim)
        self.bytes = 0
        self.refused_frames = 0
        self._claimed_at = None  # the machine's counts when this connection claimed it
        # backpressure
        self.congested = False
        self.paused_at = None
        self.dropping = False
        self.draining = False
        self._pause_timer = None
        self._drop_logged = 0
        # admission
        self._name_timer = None
        self.admitted = False
        self.buffered = 0  # this connection's share of factory.buffered_total
        self.budget_paused = None  # when reading paused for the global buffer budget
        self.walking = False  # reading paused while a long walk goes on in turns
        self.lost = False
        self._reading_paused = False

    # -- connection ---------------------------------------------------------
    def connectionMade(self):
        peer = self.transport.getPeer()
        self.peer_host = str(getattr(peer, "host", peer))
        port = getattr(peer, "port", None)
        self.peer = f"{self.peer_host}:{port}" if port is not None else self.peer_host
        self.connected_since = self.clock.seconds()
        problem = self.factory.admit(self)
        if problem is not None:
            reason, text = problem
            self.factory.peerlog.warn(self.peer_host, reason, "DAQ connection from {peer} refused: {why}",
                                      peer=self.peer, why=text)
            self._close()
            return
        self.admitted = True
        set_keepalive(self.transport)
        self._name_timer = self.clock.callLater(self.factory.config.daq.name_timeout, self._name_timeout)

    def _name_timeout(self):
        self._name_timer = None
        if self.machine is None and not self.closing:
            timeout = self.factory.config.daq.name_timeout
            self._refuse_connection("name_timeout", f"no name frame within DAQ.NAME_TIMEOUT ({timeout} s)")

    def _cancel_name_timer(self):
        if self._name_timer is not None and self._name_timer.active():
            self._name_timer.cancel()
        self._name_timer = None

    def connectionLost(self, reason):
        self.lost = True
        if self.framer is not None and not self.closing and not self._finish_step():
            return  # the walk goes on from later reactor turns, then _lost()
        self._lost()

    def _finish_step(self):
        """Decode the frames the framer still holds (complete but held back,
        see PickleFramer.finish); False when its walk yielded and goes on
        from a later reactor turn."""
        try:
            items = self.framer.finish()
            if items:
                self._frames(items)
        except Exception:
            self.log.failure("decoding the last frames from {peer}", peer=self.peer)
            return True
        if self.framer is not None and self.framer.yielded and not self.closing:
            self.clock.callLater(0, self._finish_later)
            return False
        return True

    def _finish_later(self):
        if self.framer is None or self.closing or self._finish_step():
            self._lost()

    def _lost(self):
        if self._pause_timer is not None and self._pause_timer.active():
            self._pause_timer.cancel()
        self._pause_timer = None
        self._cancel_name_timer()
        self._account_pause()
        if self.machine is not None:
            self.hub.release(self.machine, self)
        self.framer = None
        self.factory.forget(self)

    def _close(self):
        if not self.closing:
            self.closing = True
            self._cancel_name_timer()
            # What it buffered is dropped now, not when the socket is gone.
            self.framer = None
            self.factory.buffer_changed(self, 0)
            self.transport.loseConnection()

    # -- hub's DAQConnection port -------------------------------------------
    def takeover(self, reason):
        # The hub logs the takeover (one line); this side closes quietly.
        self.machine = None
        self._close()

    def storage_congested(self, congested):
        if congested:
            if self.congested:
                return
            self.congested = True
            max_pause = self.factory.config.daq.max_pause
            if max_pause > 0 and not self.closing:
                self.paused_at = self.clock.seconds()
                self.factory.counters["paused"] += 1
                self.update_reading()
                self._pause_timer = self.clock.callLater(max_pause, self._pause_expired)
            else:
                self._start_dropping()
        else:
            if not self.congested:
                return
            self.congested = False
            if self._pause_timer is not None and self._pause_timer.active():
                self._pause_timer.cancel()
            self._pause_timer = None
            if self.paused_at is not None:
                self._account_pause()
                self.update_reading()
            if self.dropping:
                self.dropping = False
                self.factory.peerlog.warn(
                    self.peer_host, "storage_caught_up",
                    "{machine}: storage caught up; {n} bytes of DataUpdates from {peer} were dropped",
                    machine=self._name(), n=self.dropped_bytes - self._drop_logged, peer=self.peer)

    def _pause_expired(self):
        self._pause_timer = None
        self._account_pause()
        self.update_reading()
        self._start_dropping()

    def update_reading(self):
        """Pause reading while storage is behind or the buffer budget is
        spent; resume once neither holds."""
        if self.closing:
            return
        want = self.paused_at is not None or self.budget_paused is not None or self.walking
        if want and not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()
        elif not want and self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()

    def _start_dropping(self):
        if self.dropping:
            return
        self.dropping = True
        self._drop_logged = self.dropped_bytes
        self.factory.peerlog.warn(self.peer_host, "storage_dropping",
                                  "{machine}: storage is still behind after DAQ.MAX_PAUSE; "
                                  "reading from {peer} and dropping DataUpdates until it catches up",
                                  machine=self._name(), peer=self.peer)

    def _account_pause(self):
        if self.paused_at is not None:
            spent = self.clock.seconds() - self.paused_at
            self.paused_at = None
            if self.machine is not None:
                self.machine.paused_seconds += spent

    def _name(self):
        return self.machine.name if self.machine is not None else "(unnamed)"

    # -- bytes ----------------------------------------------------------------
    def dataReceived(self, data):
        if self.closing:
            return
        n = len(data)
        self.bytes += n
        self.factory.counters["bytes"] += n
        if self.machine is not None:
            self.machine.bytes += n
        framer = self.framer
        if framer is None:
            if data[:1] == b"{":
                self.encoding = "json"
                framer = self.framer = JsonLineFramer(self.factory.limits)
            else:
                self.encoding = "pickle"
                framer = self.framer = PickleFramer(self.factory.limits, events=True, budget=WALK_BUDGET)
        if self.encoding == "pickle":
            framer.budget = self.factory.walk_budget()
        self._fed(framer, framer.feed(data))
        if self.encoding == "pickle" and framer.shapes.largest >= LARGE_FRAME and self.transport:
            sock = socket_transport(self.transport)
            if getattr(sock, "bufferSize", LARGE_READ) < LARGE_READ:
                sock.bufferSize = LARGE_READ

    def _walk_on(self):
        """The next turn of a walk that used up its budget (``WALK_BUDGET``)."""
        framer = self.framer
        if self.lost or self.closing or framer is None:
            return
        framer.budget = self.factory.walk_budget()
        self._fed(framer, framer.feed(b""))

    def _fed(self, framer, items):
        if items:
            self._frames(items)
        if self.closing:
            return
        if framer.yielded:
            # Stop reading and let the reactor run everything else before
            # this connection's walk goes on.
            if not self.walking:
                self.walking = True
                self.factory.walking.add(self)
                self.update_reading()
            self.clock.callLater(0, self._walk_on)
        elif self.walking:
            self.walking = False
            self.factory.walking.discard(self)
            self.update_reading()
        buffered = framer.buffered
        if framer.fatal is not None:
            self._refuse_connection("undecodable", f"undecodable stream: {framer.fatal}")
        elif self.machine is None and buffered > PRE_NAME_BUFFER:
            # A name frame is a few dozen bytes: nothing big is held for a
            # connection that has not named itself.
            self._refuse_connection("unnamed_buffer", f"{buffered} bytes buffered before the name frame "
                                    f"(at most {PRE_NAME_BUFFER})")
        elif buffered > self.factory.config.daq.max_buffer_bytes:
            self._refuse_connection("buffer",
                                    f"{buffered} bytes buffered exceed DAQ.MAX_BUFFER_BYTES "
                                    f"({self.factory.config.daq.max_buffer_bytes})")
        elif buffered != self.buffered:
            self.factory.buffer_changed(self, buffered)

    def _frames(self, items):
        frame = self._frame
        for item in items:
            if self.closing:
                return
            try:
                frame(item)
            except Exception:
                # A bug downstream, not bad input: log it with context and
                # go on with the next frame.
                self.factory.counters["errors"] += 1
                # Rate-limited too: a frame that trips a bug may be resent forever.
                self.factory.peerlog.emit(LogLevel.critical, self.peer_host, "error",
                                          "handling a frame from {peer} ({machine})", log_failure=Failure(),
                                          peer=self.peer, machine=self._name())

    def _frame(self, item):
        tag = item[0]
        if tag == EVENT:  # a DataUpdate decoded by its shape's plan
            event, nbytes = item[1], item[2]
        elif tag == OK:
            try:
                if self.encoding == "json":
                    event = schema.from_json(item[1], self.known_names)
                else:
                    event = schema.from_pickle(item[1], item[2], self.known_names)
            except schema.FrameRefused as e:
                self._refused_frame(str(e))
                return
            nbytes = item[3]
        else:
            self._refused_frame(item[1])
            return
        kind = type(event)
        if kind is not NameFrame and event.t is not None:  # the frame's own time
            problem = self._time_problem(event.t)
            if problem is not None:
                self._refused_frame(problem)
                return
        machine = self.machine
        if machine is None:
            if kind is NameFrame:
                self._claim(event.name, event.token)
            else:
                self._refused_frame(f"{schema.DATA if kind is DataFrame else schema.FAULT} before the name frame")
            return
        self.last_frame = self.clock.seconds()
        if kind is DataFrame:
            if self.dropping and not self.draining:
                machine.frames += event.frames
                machine.dropped_bytes += nbytes
                return
            if event.bad:
                self._bad_sensors(event.bad)
            if event.nonfinite:
                machine.dropped_nonfinite += event.nonfinite
            if event.t is None:
                self.hub.data(machine, event.sensors, meta=event.meta, frames=event.frames)
            else:
                self.hub.data(machine, event.sensors, t=event.t, late=True, meta=event.meta)
        elif kind is FaultFrame:
            self.hub.fault(machine, event.score, event.threshold, event.t)
        elif event.name != machine.name:
            self._refused_frame(f"a second name frame ({peer_text(event.name)}) on a connection named "
                                f"{machine.name!r}")

    def _time_problem(self, t):
        """A frame's own time must be plausible: not before 2000, not in the future."""
        if t < _EARLIEST:
            return f"time {t!r} is before 2000"
        if t > self.clock.seconds() + _FUTURE_SLACK:
            return f"time {t!r} is more than {_FUTURE_SLACK:.0f} s in the future"
        return None

    def _claim(self, name, token):
        tokens = self.factory.config.daq.tokens
        expected = tokens.get(name) if type(name) is str else None
        if expected is not None:
            if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
                why = "no token" if token is None else "wrong token"
                self.factory.counters["refused_names"] += 1
                self._refuse_connection("token", f"machine {name!r} needs a DAQ.TOKENS token "
                                        f"in a JSON name frame ({why})")
                return
        try:
            machine = self.hub.claim(name, self)
        except Refused as e:
            counters = self.factory.counters
            counters["refused_names"] += 1
            key = "refused_name_" + e.kind
            counters[key] = counters.get(key, 0) + 1
            if not e.quiet:
                self.factory.peerlog.warn(self.peer_host, key, "DAQ connection from {peer} refused: {why}",
                                          peer=self.peer, why=peer_text(str(e), _REASON_CHARS))
            self._close()
            return
        self._cancel_name_timer()
        self.machine = machine
        self._claimed_at = _counts(machine)
        machine.bytes += self.bytes
        # The hub may have called storage_congested(True) inside claim.

    def _refuse_connection(self, reason, text):
        """Close this connection for ``reason`` (counted as ``refused_<reason>``)."""
        counters = self.factory.counters
        key = "refused_" + reason
        counters[key] = counters.get(key, 0) + 1
        self.factory.peerlog.warn(self.peer_host, key, "closing DAQ connection from {peer} ({machine}): {why}",
                                  peer=self.peer, machine=self._name(), why=peer_text(text, _REASON_CHARS))
        self._close()

    def _refused_frame(self, reason):
        self.refused_frames += 1
        counters = self.factory.counters
        counters["refused_frames"] += 1
        kind = "refused_frame"
        if reason.startswith(EXPANSION_REASON):
            counters["refused_expansion"] += 1
            kind = "refused_expansion"
        if self.machine is not None:
            self.machine.refused_frames += 1
        self.factory.peerlog.warn(self.peer_host, kind, "refused frame from {peer} ({machine}): {why}",
                                  peer=self.peer, machine=self._name(), why=peer_text(reason, _REASON_CHARS))

    def _bad_sensors(self, bad):
        machine = self.machine
        machine.dropped_sensors += len(bad)
        for sensor, why in bad:
            key = repr(sensor)[:200]
            if key not in self.warned_sensors and len(self.warned_sensors) < 1024:
                self.warned_sensors.add(key)
                self.factory.peerlog.warn(self.peer_host, "bad_sensor",
                                          "{machine}: sensor {sensor} from {peer} dropped: {why}",
                                          machine=machine.name, sensor=peer_text(sensor), peer=self.peer,
                                          why=peer_text(why, _REASON_CHARS))

    # -- shutdown -------------------------------------------------------------
    def drain(self):
        """Decode what the kernel already delivered, even while paused."""
        if self.closing:
            return
        self.draining = True
        read = getattr(self.transport, "doRead", None)
        if read is not None:
            for _ in range(_DRAIN_READS):
                before = self.bytes
                try:
                    result = read()
                except Exception:
                    self.log.failure("draining DAQ connection from {peer}", peer=self.peer)
                    break
                if result is not None or self.bytes == before or self.closing:
                    break
        if self.framer is not None and not self.closing:
            if isinstance(self.framer, PickleFramer):
                self.framer.budget = None  # shutdown: walk what is left at once
            self._frames(self.framer.finish())

    def _since_claim(self):
        """This connection's frames, samples and drops: the machine's counts
        since the claim (one DAQ connection per machine at a time)."""
        if self.machine is None or self._claimed_at is None:
            return (0, 0, 0, 0)
        return tuple(now - then for now, then in zip(_counts(self.machine), self._claimed_at))

    frames = property(lambda self: self._since_claim()[0])
    samples = property(lambda self: self._since_claim()[1])
    dropped_bytes = property(lambda self: self._since_claim()[2])
    dropped_nonfinite = property(lambda self: self._since_claim()[3])

    def status(self):
        return {
            "peer": self.peer,
            "machine": self.machine.name if self.machine is not None else None,
            "encoding": self.encoding,
            "connected_since": self.connected_since,
            "last_frame": self.last_frame,
            "bytes": self.bytes,
            "frames": self.frames,
            "samples": self.samples,
            "refused_frames": self.refused_frames,
            "dropped_nonfinite": self.dropped_nonfinite,
            "dropped_bytes": self.dropped_bytes,
            "paused": self.paused_at is not None,
            "buffered": self.buffered,
            "budget_paused": self.budget_paused is not None,
            "dropping": self.dropping,
        }
