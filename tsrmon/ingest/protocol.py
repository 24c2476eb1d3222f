"""The DAQ TCP port: one :class:`DAQProtocol` per DAQ connection.

The first byte picks the encoding: ``{`` starts newline-delimited JSON,
anything else is the deployed pickle stream.  Each decoded frame is checked
(``schema.py``) and handed to the hub; a refused frame is skipped whole and
logged with the peer and the reason, and the connection goes on.  A
connection that cannot be resynchronised, overflows its buffer cap or sends
a refused machine name is closed.  The server never writes on this link.

Admission (see docs/security.md): a connection must send its name frame
within ``DAQ.NAME_TIMEOUT`` and may buffer at most :data:`PRE_NAME_BUFFER`
bytes before it; one source address holds at most
``DAQ.MAX_CONNECTIONS_PER_HOST`` connections and all of them at most
``DAQ.MAX_CONNECTIONS``.  When either table is full, the oldest connection
that has not named itself yet is closed to make room, so unnamed connections
never lock a DAQ out.  All buffered bytes together stay under
``DAQ.MAX_TOTAL_BUFFER_BYTES``: over it, the connection that grew stops being
read (as under storage backpressure) until the total falls; one paused longer
than ``DAQ.MAX_PAUSE`` while the total stays over is closed, largest buffer
first.  Every refusal has a ``refused_<reason>`` counter; every warning about
a peer goes through one :class:`~tsrmon.peerlog.PeerLog` (per source address
and reason) and quotes peer text through :func:`~tsrmon.peerlog.peer_text`.
"""

import hmac
import ipaddress
import socket

from twisted.application import service
from twisted.internet import defer, endpoints, protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from tsrmon.hub.machines import Refused
from tsrmon.ingest import schema
from tsrmon.ingest.framing import EVENT, OK, JsonLineFramer, PickleFramer
from tsrmon.ingest.safepickle import EXPANSION_REASON, Limits
from tsrmon.peerlog import PeerLog, peer_text
from tsrmon.rooms import ICounters, IHealth, IReconfigurable

KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 60
KEEPALIVE_COUNT = 3
PRE_NAME_BUFFER = 64 * 1024  # bytes a connection may buffer before its name frame
# Opcodes walked in Python per reactor turn (~10-20 ms), shared by the
# connections walking at the time (each at least _MIN_WALK): a frame of
# millions of one-byte opcodes is walked over many turns.
WALK_BUDGET = 4096
_MIN_WALK = 64
_REASON_CHARS = 240  # refusal reasons quote peer text: cut short in the log
_DRAIN_READS = 1024
_EARLIEST = 946684800.0  # 2000-01-01T00:00:00Z
_FUTURE_SLACK = 3600.0  # DAQ clocks drift; an hour ahead is still plausible


def limits_of(config):
    daq = config["DAQ"]
    return Limits(max_frame_bytes=daq["MAX_FRAME_BYTES"], max_samples=daq["MAX_SAMPLES_PER_FRAME"])


def set_keepalive(transport):
    """SO_KEEPALIVE with the deployed DAQ's timings (dead peer after ~240 s)."""
    try:
        transport.setTcpKeepAlive(1)
    except AttributeError:  # not a TCP transport (a UNIX socket endpoint)
        return False
    sock = transport.getHandle()
    for opt, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                       ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    return True


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
        # counters of this connection
        self.bytes = 0
        self.frames = 0
        self.samples = 0
        self.refused_frames = 0
        self.dropped_bytes = 0
        self.dropped_nonfinite = 0
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
        self._name_timer = self.clock.callLater(self.factory.config["DAQ"]["NAME_TIMEOUT"], self._name_timeout)

    def _name_timeout(self):
        self._name_timer = None
        if self.machine is None and not self.closing:
            timeout = self.factory.config["DAQ"]["NAME_TIMEOUT"]
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
            max_pause = self.factory.config["DAQ"]["MAX_PAUSE"]
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
        elif buffered > self.factory.config["DAQ"]["MAX_BUFFER_BYTES"]:
            self._refuse_connection("buffer",
                                    f"{buffered} bytes buffered exceed DAQ.MAX_BUFFER_BYTES "
                                    f"({self.factory.config['DAQ']['MAX_BUFFER_BYTES']})")
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
        kind = event[0]
        # The frame's own time: (DATA, sensors, bad, nonfinite, t, meta), (FAULT, score, threshold, t).
        t = event[4] if kind == schema.DATA else event[3] if kind == schema.FAULT else None
        if t is not None:
            problem = self._time_problem(t)
            if problem is not None:
                self._refused_frame(problem)
                return
        machine = self.machine
        if machine is None:
            if kind == schema.NAME:
                self._claim(event[1], event[2])
            else:
                self._refused_frame(f"{kind} before the name frame")
            return
        counters = self.factory.counters
        self.frames += 1
        counters["frames"] += 1
        self.last_frame = self.clock.seconds()
        if kind == schema.DATA:
            _, sensors, bad, nonfinite, t, meta = event
            if self.dropping and not self.draining:
                self.dropped_bytes += nbytes
                machine.dropped_bytes += nbytes
                counters["dropped_bytes"] += nbytes
                return
            if bad:
                self._bad_sensors(bad)
            if nonfinite:
                self.dropped_nonfinite += nonfinite
                machine.dropped_nonfinite += nonfinite
                counters["dropped_nonfinite"] += nonfinite
            for s in sensors:
                self.samples += len(s[2])
            if t is None:
                self.hub.data(machine, sensors, meta=meta)
            else:
                self.hub.data(machine, sensors, t=t, late=True, meta=meta)
        elif kind == schema.FAULT:
            _, score, threshold, t = event
            self.hub.fault(machine, score, threshold, t)
        elif event[1] != machine.name:
            self._refused_frame(f"a second name frame ({peer_text(event[1])}) on a connection named "
                                f"{machine.name!r}")

    def _time_problem(self, t):
        """A frame's own time must be plausible: not before 2000, not in the future."""
        if t < _EARLIEST:
            return f"time {t!r} is before 2000"
        if t > self.clock.seconds() + _FUTURE_SLACK:
            return f"time {t!r} is more than {_FUTURE_SLACK:.0f} s in the future"
        return None

    def _claim(self, name, token):
        tokens = self.factory.config["DAQ"]["TOKENS"]
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


class DAQFactory(protocol.Factory):
    log = Logger()
    noisy = False

    COUNTERS = (
        "connections", "refused_connections", "refused_allow", "refused_max_connections", "refused_per_host",
        "evicted_unnamed", "refused_name_timeout", "refused_unnamed_buffer", "refused_buffer",
        "refused_buffer_budget", "refused_undecodable", "refused_token", "refused_names",
        "refused_name_bad", "refused_name_not_allowed", "refused_name_max_machines", "refused_name_in_use",
        "refused_name_case", "frames", "refused_frames", "refused_expansion", "bytes", "dropped_bytes",
        "dropped_nonfinite", "paused", "budget_paused", "errors")

    def __init__(self, config, hub, clock):
        self.hub = hub
        self.clock = clock
        self.connections = set()
        self._order = {}  # the same connections, oldest first (conn -> None)
        self.per_host = {}  # peer host -> number of open connections
        self.buffered_total = 0  # bytes buffered by every connection together
        self.budget_paused = set()  # connections not read for the buffer budget
        self.walking = set()  # connections walking a long frame in turns
        self.counters = dict.fromkeys(self.COUNTERS, 0)
        self.peerlog = PeerLog(self.log, clock)
        self._lost_waiters = []
        self._budget_timer = None
        self.reconfigure(config)

    def reconfigure(self, config):
        self.config = config
        self.limits = limits_of(config)
        self.allow = [ipaddress.ip_network(c, strict=False) for c in config["DAQ"]["ALLOW"]]
        self.check_budget()

    def buildProtocol(self, addr):
        return DAQProtocol(self)

    def admit(self, conn):
        """None, or (reason, text) why this connection is refused.

        DAQ.ALLOW first; then the per-host and the global cap, each of which
        closes the oldest unnamed connection (of that host, or of all) to
        make room before it refuses anyone."""
        counters = self.counters
        daq = self.config["DAQ"]
        host = conn.peer_host
        if self.allow:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                address = None
            if address is not None and address.version == 6 and address.ipv4_mapped:
                address = address.ipv4_mapped
            if address is None or not any(address in net for net in self.allow):
                counters["refused_connections"] += 1
                counters["refused_allow"] += 1
                return "refused_allow", f"{host} is not in DAQ.ALLOW"
        per_host = daq["MAX_CONNECTIONS_PER_HOST"]
        if self.per_host.get(host, 0) >= per_host and not self._evict_unnamed(host):
            counters["refused_connections"] += 1
            counters["refused_per_host"] += 1
            return "refused_per_host", f"DAQ.MAX_CONNECTIONS_PER_HOST ({per_host}) reached for {host}"
        cap = daq["MAX_CONNECTIONS"]
        if len(self.connections) >= cap and not self._evict_unnamed(None):
            counters["refused_connections"] += 1
            counters["refused_max_connections"] += 1
            return "refused_max_connections", f"DAQ.MAX_CONNECTIONS ({cap}) reached"
        self.connections.add(conn)
        self._order[conn] = None
        self.per_host[host] = self.per_host.get(host, 0) + 1
        counters["connections"] += 1
        return None

    def _evict_unnamed(self, host):
        """Close the oldest connection without a name (of ``host`` if given)."""
        for old in self._order:
            if old.machine is None and not old.closing and (host is None or old.peer_host == host):
                self.counters["evicted_unnamed"] += 1
                self.peerlog.warn(old.peer_host, "evicted_unnamed",
                                  "closing DAQ connection from {peer}: no name frame yet and the "
                                  "connection table is full", peer=old.peer)
                old._close()
                self._remove(old)  # its slot is free now, not when the socket is gone
                return True
        return False

    def _remove(self, conn):
        if conn in self.connections:
            self.connections.discard(conn)
            self._order.pop(conn, None)
            n = self.per_host.get(conn.peer_host, 0) - 1
            if n > 0:
                self.per_host[conn.peer_host] = n
            else:
                self.per_host.pop(conn.peer_host, None)

    # -- the global buffer budget ------------------------------------------
    def buffer_changed(self, conn, buffered):
        """``conn`` now buffers ``buffered`` bytes (0 once it closes)."""
        self.buffered_total += buffered - conn.buffered
        conn.buffered = buffered
        budget = self.config["DAQ"]["MAX_TOTAL_BUFFER_BYTES"]
        if self.buffered_total > budget:
            if buffered and conn.budget_paused is None and not conn.closing:
                conn.budget_paused = self.clock.seconds()
                self.budget_paused.add(conn)
                self.counters["budget_paused"] += 1
                conn.update_reading()
                self.peerlog.warn(conn.peer_host, "budget_paused",
                                  "{total} bytes buffered over all DAQ connections exceed "
                                  "DAQ.MAX_TOTAL_BUFFER_BYTES ({budget}): reading from {peer} paused",
                                  total=self.buffered_total, budget=budget, peer=conn.peer)
                self._arm_budget_timer()
        elif self.budget_paused:
            self._resume_budget()

    def _paused_for_budget(self):
        return [c for c in self.budget_paused if not c.closing]

    def _resume_budget(self):
        paused, self.budget_paused = self.budget_paused, set()
        for c in paused:
            c.budget_paused = None
            c.update_reading()

    def _arm_budget_timer(self):
        if self._budget_timer is None or not self._budget_timer.active():
            wait = max(float(self.config["DAQ"]["MAX_PAUSE"]), 1.0)
            self._budget_timer = self.clock.callLater(wait, self._budget_expired)

    def _budget_expired(self):
        """Still over the budget after DAQ.MAX_PAUSE: the paused connection
        holding the most is closed so the others can finish their frames."""
        self._budget_timer = None
        budget = self.config["DAQ"]["MAX_TOTAL_BUFFER_BYTES"]
        paused = self._paused_for_budget()
        if self.buffered_total > budget and paused:
            victim = max(paused, key=lambda c: c.buffered)
            victim._refuse_connection(
                "buffer_budget", f"{victim.buffered} bytes of an unfinished frame held while all DAQ "
                f"connections buffer more than DAQ.MAX_TOTAL_BUFFER_BYTES ({budget})")
        self.check_budget()

    def check_budget(self):
        if self.buffered_total <= self.config["DAQ"]["MAX_TOTAL_BUFFER_BYTES"]:
            self._resume_budget()
        elif self._paused_for_budget():
            self._arm_budget_timer()

    def walk_budget(self):
        """Opcodes one connection may walk this turn (WALK_BUDGET shared)."""
        return max(_MIN_WALK, WALK_BUDGET // max(1, len(self.walking)))

    def forget(self, conn):
        self.buffer_changed(conn, 0)
        self.budget_paused.discard(conn)
        self.walking.discard(conn)
        self._remove(conn)
        if not self.connections:
            if self._budget_timer is not None and self._budget_timer.active():
                self._budget_timer.cancel()
            self._budget_timer = None
            waiters, self._lost_waiters = self._lost_waiters, []
            for d in waiters:
                d.callback(None)

    def when_no_connections(self):
        if not self.connections:
            return defer.succeed(None)
        d = defer.Deferred()
        self._lost_waiters.append(d)
        return d


@implementer(IHealth, ICounters, IReconfigurable)
class DAQListenerService(service.Service):
    """Listens on the DAQ port; ``stopService`` drains and closes connections."""

    log = Logger()
    name = "daq"
    health_key = "daq"  # IHealth: its /healthz check
    counters_key = "ingest"  # ICounters: its /metrics prefix

    def __init__(self, config, hub, reactor):
        self.config = config
        self.hub = hub
        self.reactor = reactor
        self.factory = DAQFactory(config, hub, reactor)
        self.port = None
        self.listen_error = None
        self.listening = None

    def local_address(self):
        """(host, port) a local client dials to reach the listener (the demo
        DAQs), or None before it listens."""
        if self.port is None:
            return None
        host = self.port.getHost()
        wildcard = host.host in ("0.0.0.0", "::", "")
        return ("127.0.0.1" if wildcard else host.host, host.port)

    def endpoint_description(self):
        server = self.config["SERVER"]
        if server["TCP_ENDPOINT"]:
            return server["TCP_ENDPOINT"]
        host = server["HOST"].replace(":", "\\:")
        return f"tcp:port={server['TCP_PORT']}:interface={host}"

    def startService(self):
        super().startService()
        description = self.endpoint_description()
        endpoint = endpoints.serverFromString(self.reactor, description)
        d = endpoint.listen(self.factory)

        def listening(port):
            self.port = port
            self.log.info("DAQ feed listening on {address}", address=port.getHost())
            return port

        def failed(failure):
            # The top service reports it in one critical line and stops the
            # daemon (exit status 1): no traceback for a port in use.
            self.listen_error = failure.getErrorMessage()
            return failure

        d.addCallbacks(listening, failed)
        self.listening = d

    def reconfigure(self, config):
        self.config = config
        self.factory.reconfigure(config)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            yield port.stopListening()
        conns = list(self.factory.connections)
        for conn in conns:
            conn.drain()
        for conn in conns:
            conn._close()
        if conns:
            waiting = self.factory.when_no_connections()
            timeout = self.reactor.callLater(5, self._abort_all)
            yield waiting
            if timeout.active():
                timeout.cancel()

    def _abort_all(self):
        for conn in list(self.factory.connections):
            self.log.warn("DAQ connection from {peer} did not close: aborting", peer=conn.peer)
            conn.transport.abortConnection()

    def healthy(self):
        return {
            "ok": self.port is not None and self.listen_error is None,
            "listening": str(self.port.getHost()) if self.port is not None else None,
            "error": self.listen_error,
            "connections": len(self.factory.connections),
        }

    health = healthy  # IHealth

    def counters(self):
        out = dict(self.factory.counters)
        # Refusals decided by the hub (sensor names) are DAQ refusals too.
        out.update(getattr(self.hub, "counters", None) or {})
        out["open_connections"] = len(self.factory.connections)
        out["unnamed_now"] = sum(1 for c in self.factory.connections if c.machine is None)
        out["buffered_bytes_now"] = self.factory.buffered_total
        out["budget_paused_now"] = sum(1 for c in self.factory.connections if c.budget_paused is not None)
        out["paused_now"] = sum(1 for c in self.factory.connections if c.paused_at is not None)
        out["dropping_now"] = sum(1 for c in self.factory.connections if c.dropping)
        return out

    def connection_status(self):
        """Per-connection counters (REST and metrics)."""
        return [c.status() for c in self.factory.connections]
