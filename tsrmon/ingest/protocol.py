"""The DAQ TCP port: one :class:`DAQProtocol` per DAQ connection.

The first byte picks the encoding: ``{`` starts newline-delimited JSON,
anything else is the deployed pickle stream.  Each decoded frame is checked
(``schema.py``) and handed to the hub; a refused frame is skipped whole and
logged with the peer and the reason, and the connection goes on.  A
connection that cannot be resynchronised, overflows its buffer cap or sends
a refused machine name is closed.  The server never writes on this link.
"""

import hmac
import ipaddress
import socket

from twisted.application import service
from twisted.internet import defer, endpoints, protocol
from twisted.logger import Logger

from tsrmon.hub.machines import Refused
from tsrmon.ingest import schema
from tsrmon.ingest.framing import EVENT, OK, JsonLineFramer, PickleFramer
from tsrmon.ingest.safepickle import Limits

KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 60
KEEPALIVE_COUNT = 3
_LOGGED_REFUSALS_PER_MINUTE = 10
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
        # refusal log rate limit
        self._log_window = 0.0
        self._logged_in_window = 0
        self._suppressed = 0

    # -- connection ---------------------------------------------------------
    def connectionMade(self):
        peer = self.transport.getPeer()
        self.peer_host = str(getattr(peer, "host", peer))
        port = getattr(peer, "port", None)
        self.peer = f"{self.peer_host}:{port}" if port is not None else self.peer_host
        self.connected_since = self.clock.seconds()
        problem = self.factory.admit(self)
        if problem is not None:
            if self.factory.should_log_refusal(self.peer_host):
                self.log.warn("DAQ connection from {peer} refused: {reason}", peer=self.peer, reason=problem)
            self._close()
            return
        set_keepalive(self.transport)

    def connectionLost(self, reason):
        if self.framer is not None and not self.closing:
            # Frames that were complete but held back (see PickleFramer.finish).
            try:
                items = self.framer.finish()
                if items:
                    self._frames(items)
            except Exception:
                self.log.failure("decoding the last frames from {peer}", peer=self.peer)
        if self._pause_timer is not None and self._pause_timer.active():
            self._pause_timer.cancel()
        self._pause_timer = None
        self._account_pause()
        if self.machine is not None:
            self.hub.release(self.machine, self)
        self.factory.forget(self)

    def _close(self):
        if not self.closing:
            self.closing = True
            self.transport.loseConnection()

    # -- hub's DAQConnection port -------------------------------------------
    def takeover(self, reason):
        self.log.info("closing DAQ connection from {peer}: {reason}", peer=self.peer, reason=reason)
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
                self.transport.pauseProducing()
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
                self.transport.resumeProducing()
            if self.dropping:
                self.dropping = False
                self.log.warn("{machine}: storage caught up; {n} bytes of DataUpdates from {peer} were dropped",
                              machine=self._name(), n=self.dropped_bytes - self._drop_logged, peer=self.peer)

    def _pause_expired(self):
        self._pause_timer = None
        self._account_pause()
        self.transport.resumeProducing()
        self._start_dropping()

    def _start_dropping(self):
        if self.dropping:
            return
        self.dropping = True
        self._drop_logged = self.dropped_bytes
        self.log.warn("{machine}: storage is still behind after DAQ.MAX_PAUSE; "
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
                framer = self.framer = PickleFramer(self.factory.limits, events=True)
        items = framer.feed(data)
        if items:
            self._frames(items)
        if self.closing:
            return
        if framer.fatal is not None:
            self._refuse_connection(f"undecodable stream: {framer.fatal}")
        elif framer.buffered > self.factory.config["DAQ"]["MAX_BUFFER_BYTES"]:
            self._refuse_connection(
                f"{framer.buffered} bytes buffered exceed DAQ.MAX_BUFFER_BYTES "
                f"({self.factory.config['DAQ']['MAX_BUFFER_BYTES']})")

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
                self.log.failure("handling a frame from {peer} ({machine})", peer=self.peer,
                                 machine=self._name())

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
        t = event[-1] if kind != schema.NAME else None
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
            _, sensors, bad, nonfinite, t = event
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
                self.hub.data(machine, sensors)
            else:
                self.hub.data(machine, sensors, t=t, late=True)
        elif kind == schema.FAULT:
            _, score, threshold, t = event
            self.hub.fault(machine, score, threshold, t)
        elif event[1] != machine.name:
            self._refused_frame(f"a second name frame ({event[1]!r}) on a connection named {machine.name!r}")

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
                self._refuse_connection(f"machine {name!r} needs a DAQ.TOKENS token "
                                        f"in a JSON name frame ({why})", count_name=True)
                return
        try:
            machine = self.hub.claim(name, self)
        except Refused as e:
            self.factory.counters["refused_names"] += 1
            if not e.quiet:
                self.log.warn("DAQ connection from {peer} refused: {reason}", peer=self.peer, reason=str(e))
            self._close()
            return
        self.machine = machine
        machine.bytes += self.bytes
        # The hub may have called storage_congested(True) inside claim.

    def _refuse_connection(self, reason, count_name=False):
        if count_name:
            self.factory.counters["refused_names"] += 1
        self.log.warn("closing DAQ connection from {peer} ({machine}): {reason}",
                      peer=self.peer, machine=self._name(), reason=reason)
        self._close()

    def _refused_frame(self, reason):
        self.refused_frames += 1
        self.factory.counters["refused_frames"] += 1
        if self.machine is not None:
            self.machine.refused_frames += 1
        now = self.clock.seconds()
        if now - self._log_window >= 60:
            if self._suppressed:
                self.log.warn("{n} more refused frames from {peer} were not logged",
                              n=self._suppressed, peer=self.peer)
            self._log_window = now
            self._logged_in_window = 0
            self._suppressed = 0
        if self._logged_in_window < _LOGGED_REFUSALS_PER_MINUTE:
            self._logged_in_window += 1
            self.log.warn("refused frame from {peer} ({machine}): {reason}",
                          peer=self.peer, machine=self._name(), reason=reason)
        else:
            self._suppressed += 1

    def _bad_sensors(self, bad):
        machine = self.machine
        machine.dropped_sensors += len(bad)
        for sensor, why in bad:
            key = repr(sensor)
            if key not in self.warned_sensors and len(self.warned_sensors) < 1024:
                self.warned_sensors.add(key)
                self.log.warn("{machine}: sensor {sensor} from {peer} dropped: {reason}",
                              machine=machine.name, sensor=key[:80], peer=self.peer, reason=why)

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
            "dropping": self.dropping,
        }


class DAQFactory(protocol.Factory):
    log = Logger()
    noisy = False

    def __init__(self, config, hub, clock):
        self.hub = hub
        self.clock = clock
        self.connections = set()
        self.counters = dict.fromkeys(
            ("connections", "refused_connections", "refused_names", "frames", "refused_frames",
             "bytes", "dropped_bytes", "dropped_nonfinite", "paused", "errors"), 0)
        self._lost_waiters = []
        self._refusals_logged = {}
        self.reconfigure(config)

    def reconfigure(self, config):
        self.config = config
        self.limits = limits_of(config)
        self.allow = [ipaddress.ip_network(c, strict=False) for c in config["DAQ"]["ALLOW"]]

    def buildProtocol(self, addr):
        return DAQProtocol(self)

    def admit(self, conn):
        """None, or why this connection is refused (DAQ.ALLOW, DAQ.MAX_CONNECTIONS)."""
        if self.allow:
            try:
                address = ipaddress.ip_address(conn.peer_host)
            except ValueError:
                address = None
            if address is not None and address.version == 6 and address.ipv4_mapped:
                address = address.ipv4_mapped
            if address is None or not any(address in net for net in self.allow):
                self.counters["refused_connections"] += 1
                return f"{conn.peer_host} is not in DAQ.ALLOW"
        cap = self.config["DAQ"]["MAX_CONNECTIONS"]
        if len(self.connections) >= cap:
            self.counters["refused_connections"] += 1
            return f"DAQ.MAX_CONNECTIONS ({cap}) reached"
        self.connections.add(conn)
        self.counters["connections"] += 1
        return None

    def should_log_refusal(self, host):
        """One log line per source host per minute for refused connections."""
        now = self.clock.seconds()
        last = self._refusals_logged.get(host)
        if last is not None and now - last < 60:
            return False
        if len(self._refusals_logged) > 1024:
            self._refusals_logged.clear()
        self._refusals_logged[host] = now
        return True

    def forget(self, conn):
        self.connections.discard(conn)
        if not self.connections:
            waiters, self._lost_waiters = self._lost_waiters, []
            for d in waiters:
                d.callback(None)

    def when_no_connections(self):
        if not self.connections:
            return defer.succeed(None)
        d = defer.Deferred()
        self._lost_waiters.append(d)
        return d


class DAQListenerService(service.Service):
    """Listens on the DAQ port; ``stopService`` drains and closes connections."""

    log = Logger()
    name = "daq"

    def __init__(self, config, hub, reactor):
        self.config = config
        self.hub = hub
        self.reactor = reactor
        self.factory = DAQFactory(config, hub, reactor)
        self.port = None
        self.listen_error = None
        self.listening = None

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
            self.listen_error = failure.getErrorMessage()
            self.log.failure("cannot listen for DAQ connections on {description}", failure,
                             description=description)
            return failure

        d.addCallbacks(listening, failed)
        self.listening = d
        # Listening failures are logged above; callers that wait on
        # ``listening`` still see them.
        d.addErrback(lambda f: None)

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

    def counters(self):
        out = dict(self.factory.counters)
        out["open_connections"] = len(self.factory.connections)
        out["paused_now"] = sum(1 for c in self.factory.connections if c.paused_at is not None)
        out["dropping_now"] = sum(1 for c in self.factory.connections if c.dropping)
        return out

    def connection_status(self):
        """Per-connection counters (REST and metrics)."""
        return [c.status() for c in self.factory.connections]
