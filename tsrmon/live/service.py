"""``LiveService``: the hub's live sink and the ``/socket.io/`` endpoint.

The hub calls :meth:`LiveService.second`, :meth:`anomaly` and
:meth:`machine_status` (``hub/ports.py`` ``LiveSink``).  Seconds are merged
into one window per sensor; a tick on the injected clock, 0.25 s after each
LIVE.INTERVAL boundary (statistics hand a finished second over within 50 ms),
closes the windows and broadcasts ``update`` (a sensor without samples in the
window gets none).  The last LIVE.CACHE updates per sensor are
kept for ``initialize``; ``history(machine)`` (minute rows from storage)
rebuilds them after a restart.

Fan-out (issue 18): a tick corks the engine, so each client gets all of the
tick's events (every room, every sensor) in one transport write; the
``second`` events of one statistics roll (one synchronous loop of
:meth:`second` calls) are held until the reactor's next turn likewise.
"""

import datetime
import zoneinfo

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.live.engineio import EngineServer
from tsrmon.live.machines import NAMESPACE_PREFIX, MachineRoom, stored_summary
from tsrmon.live.socketio import Namespace, SocketServer
from tsrmon.peerlog import PeerLog
from tsrmon.rooms import ICounters, IHealth, IReconfigurable
from tsrmon.runtime import next_tick_delay
from tsrmon.stats.sums import PartialSums
from tsrmon.web.policy import HttpPolicy

MAX_PAYLOAD = 1_000_000
CONNECT_TIMEOUT = 45.0
UPGRADE_TIMEOUT = 10.0
STOP_GRACE = 2.0  # seconds stopService waits for close handshakes
SPECTRUM_LINES = 400  # a `spectrum` event carries at most this many values (power-summed groups)


@implementer(IHealth, ICounters, IReconfigurable)
class LiveService(service.Service):
    log = Logger()
    name = "live"
    health_key = "live"  # IHealth: its /healthz check
    counters_key = "live"  # ICounters: its /metrics prefix

    def __init__(self, config, clock, hub, history=None, policy=None, reader=None, spectra=None):
        """``policy``: the daemon's one :class:`HttpPolicy` (CORS, API tokens),
        shared with the REST gate and reloaded by its owner; without one the
        service builds and reloads its own.  ``reader`` (the SQLite reader):
        stored minutes refill the caches after a restart (unless ``history``
        is given), a machine's first ``status`` carries what storage knows of
        it, and stored spectra serve the ``spectrum`` event.  ``spectra``: the
        spectra room (issue 17; its ``latest`` says which minute closed last,
        its ``catalog`` the unit)."""
        self.config = config
        self._own_policy = policy is None
        self.policy = HttpPolicy.from_config(config) if policy is None else policy
        self.clock = clock
        self.hub = hub
        self.reader = reader
        if history is None and reader is not None:
            history = self._stored_history
        self.history = history
        # Read by MachineRoom; None: nothing stored to tell.
        self.stored_status = self._stored_status if reader is not None else None
        live = config["LIVE"]
        self.interval = float(live["INTERVAL"])
        self.cache_size = int(live["CACHE"])
        self.max_subscriptions = int(config["DAQ"]["MAX_SENSORS"])
        self.zone = zoneinfo.ZoneInfo(config["TIME"]["ZONE"])
        self._modes = {}
        self.rooms = {}
        self.root = Namespace("/")  # accepted but unused, as deployed
        self._counters = {"updates_sent": 0, "anomalies": 0, "status_events": 0,
                          "events_emitted": 0, "windows_closed": 0, "history_rows": 0}
        self.engine = EngineServer(
            clock, None,
            ping_interval=float(live["PING_INTERVAL"]),
            ping_timeout=float(live["PING_TIMEOUT"]),
            max_payload=MAX_PAYLOAD,
            upgrade_timeout=UPGRADE_TIMEOUT,
            max_queue=int(live["MAX_QUEUE"]),
            policy=self.policy,
            counters=self._counters,
            allow_eio3=True,  # old clients (Dart socket_io_client <= 1.x, JS 2.x)
            # Warnings about one client: a few lines per address and reason a minute.
            peerlog=PeerLog(EngineServer.log, clock),
        )
        self.sio = SocketServer(clock, self.resolve, connect_timeout=CONNECT_TIMEOUT,
                                policy=self.policy, counters=self._counters,
                                peerlog=PeerLog(SocketServer.log, clock))
        self.engine.handler_factory = self.sio
        self.policy.on_change.append(self.policy_changed)
        self._resource = self.engine.resource()
        self._align = None  # the next window close (a DelayedCall)
        # Only a reactor has turns to batch a statistics roll's `second`
        # events in; on a test's task.Clock (no turns) they go out at once.
        self._turns = IReactorCore.providedBy(clock)
        self._roll_corked = False
        # Issue 17, the opt-in `spectrum` event: the spectra room and a
        # reader of stored spectra; without them nobody gets a spectrum.
        self.spectra = spectra
        self.spectrum_reader = reader.spectrum if reader is not None else None
        self.spectrum_lines = SPECTRUM_LINES

    def reconfigure(self, config):
        """SIGHUP: new API tokens and CORS origins for the next handshake and
        CONNECT come with the shared policy (its owner reloads it and it calls
        :meth:`policy_changed`: namespace clients let in by a token that is no
        longer configured are disconnected).  Heartbeat
        timings and LIVE.MAX_QUEUE apply to the next ping and message;
        LIVE.INTERVAL and LIVE.CACHE need a restart."""
        if self._own_policy:
            self.policy.reconfigure(config)
        live = config["LIVE"]
        self.engine.ping_interval = float(live["PING_INTERVAL"])
        self.engine.ping_timeout = float(live["PING_TIMEOUT"])
        self.engine.max_queue = int(live["MAX_QUEUE"])
        old = self.config["LIVE"]
        changed = [k for k in ("INTERVAL", "CACHE") if live[k] != old[k]]
        if changed:
            self.log.warn("SIGHUP: LIVE.{keys} changed: takes effect after a restart",
                          keys=", LIVE.".join(changed))
        self.config = config

    def policy_changed(self):
        """The shared policy was reloaded: revoke what it no longer allows."""
        revoked = self.sio.revalidate()
        if revoked:
            self.log.info("live: {n} namespace client(s) disconnected: their API token "
                          "is no longer configured", n=revoked)
        return revoked

    # -- helpers used by the rooms -------------------------------------------
    def mode(self, stype):
        mode = self._modes.get(stype)
        if mode is None:
            mode = self._modes[stype] = self.config.stat_mode(stype)[0]
        return mode

    def time_text(self, t):
        """Local naive time text as the deployed server sent it (always with µs)."""
        return datetime.datetime.fromtimestamp(t, self.zone).strftime("%Y-%m-%d %H:%M:%S.%f")

    def count_sent(self, sent):
        """``sent``: a count of recipients, or True/False for one."""
        self._counters["events_emitted"] += int(sent)

    def _stored_history(self, machine):
        # Enough stored minutes to refill LIVE.CACHE updates after a restart.
        span = max(self.interval, 60.0) * (self.cache_size + 1)
        return self.reader.recent_minutes(machine, self.clock.seconds() - span)

    def _stored_status(self, machine):
        # The first `status` of a machine also carries what storage knows of
        # it (latest minute values, last FaultDetect and anomaly, last seen).
        return stored_summary(self.reader, machine, self.clock.seconds(), self.mode, self.zone,
                              self.config["DATABASE"]["MINUTE_RETENTION_DAYS"])

    def broadcast(self, machine, event, payload):
        """``event`` to every client of ``machine``'s namespace (alarm rules)."""
        self.room(machine).broadcast(event, payload)

    def room(self, machine):
        room = self.rooms.get(machine)
        if room is None:
            room = self.rooms[machine] = MachineRoom(machine, self)
        return room

    def resolve(self, nsp):
        """The namespace object for a CONNECT, or None (CONNECT_ERROR)."""
        if nsp.startswith(NAMESPACE_PREFIX):
            machine = nsp[len(NAMESPACE_PREFIX):]
            if machine in self.rooms or self.hub.known(machine):
                return self.room(machine)
            return None
        if nsp == "/":
            return self.root
        return None

    def resource(self):
        """The twisted.web resource for ``/socket.io/`` (putChild or a Klein branch route)."""
        return self._resource

    # -- LiveSink ------------------------------------------------------------
    def second(self, machine, sensor, stype, t, sums):
        room = self.rooms.get(machine) or self.room(machine)
        if self._turns and not self._roll_corked and room.subscribers:
            # A statistics roll hands over every sensor's second in one
            # synchronous loop: hold the `second` events until the reactor's
            # next turn, so each subscriber gets the roll in one write.
            self._roll_corked = True
            self.engine.cork()
            self.clock.callLater(0, self._roll_done)
        room.add_second(sensor, stype, t, sums)

    def _roll_done(self):
        self._roll_corked = False
        self.engine.uncork()

    def anomaly(self, machine, score, threshold, t):
        self._counters["anomalies"] += 1
        room = self.room(machine)
        self._counters["events_emitted"] += room.broadcast(
            "anomaly", {"score": float(score), "threshold": float(threshold)})

    def machine_status(self, machine):
        room = self.room(machine.name)
        self._counters["status_events"] += 1
        self._counters["events_emitted"] += room.broadcast("status", room.status_payload())

    # -- the clock -------------------------------------------------------------
    TICK_OFFSET = 0.25

    def _tick(self):
        text = self.time_text(self.clock.seconds())
        sent = 0
        # One write per client for the whole tick (every room, every sensor).
        self.engine.cork()
        try:
            for room in list(self.rooms.values()):
                sent += room.close_window(text)
                if room.spectrum_subscribers:
                    room.push_spectra()
        finally:
            self.engine.uncork()
        self._counters["windows_closed"] += 1
        self._counters["updates_sent"] += sent
        self._counters["events_emitted"] += sent

    def _schedule_tick(self):
        # Each tick schedules the next from the clock: a late tick (a busy
        # reactor, a coarse test clock) never shifts the phase.
        self._align = self.clock.callLater(
            next_tick_delay(self.clock.seconds(), self.interval, self.TICK_OFFSET), self._ticked)

    def _ticked(self):
        try:
            self._tick()
        except Exception:
            self.log.failure("live: closing the update windows failed")
        self._schedule_tick()

    # -- history ---------------------------------------------------------------
    def rebuild(self, machine):
        """Refill ``machine``'s cache from stored minute rows (a Deferred)."""
        d = defer.maybeDeferred(self.history, machine)
        d.addCallback(self._rebuild, machine)
        d.addErrback(lambda f: self.log.failure(
            "live: rebuilding the cache of {machine} from storage failed", f, machine=machine))
        return d

    def _rebuild(self, rows, machine):
        # Minute rows become one cached update per window of max(INTERVAL, 60 s),
        # stamped with the window end (about when the deployed server emitted).
        step = max(self.interval, 60.0)
        per_sensor = {}
        for sensor, stype, t0, sums in rows:
            key = (t0 // step) * step
            windows = per_sensor.setdefault(sensor, {})
            entry = windows.get(key)
            if entry is None:
                windows[key] = [stype, PartialSums().merge(sums)]
            else:
                entry[1].merge(sums)
        self._counters["history_rows"] += len(rows)
        room = self.room(machine)
        for sensor, windows in per_sensor.items():
            payloads = []
            for key in sorted(windows):
                stype, sums = windows[key]
                if sums.count:
                    payloads.append({"sensor_name": sensor,
                                     "data": float(sums.value(self.mode(stype))),
                                     "time": self.time_text(key + step)})
            room.prepend_history(sensor, payloads[-self.cache_size:] if self.cache_size else [])

    # -- service ---------------------------------------------------------------
    def startService(self):
        super().startService()
        self.engine.accepting = True
        # Windows close TICK_OFFSET after each interval boundary: statistics
        # hand over a finished second ~50 ms after it ends, so the window
        # holds exactly the seconds before the boundary.
        self._schedule_tick()
        if self.history is not None:
            for name in list(self.hub.machines):
                self.rebuild(name)

    def stopService(self):
        super().stopService()
        if self._align is not None and self._align.active():
            self._align.cancel()
        self._align = None
        sockets = [s.ws for s in self.engine.sessions.values() if s.ws is not None]
        self.engine.close_all()
        waits = [ws.lost for ws in sockets if not ws.lost.called]
        if not waits:
            return defer.succeed(None)
        done = defer.DeferredList(waits)

        def too_slow():
            for ws in sockets:
                if ws.transport is not None and ws.transport.connected:
                    ws.dropConnection(abort=True)
        timer = self.clock.callLater(STOP_GRACE, too_slow)

        def finished(_):
            if timer.active():
                timer.cancel()
        done.addBoth(finished)
        return done

    # -- introspection -----------------------------------------------------------
    def counters(self):
        polling, websocket = self.engine.transport_counts()
        out = dict(self._counters)
        out["sessions"] = polling + websocket
        out["clients_polling"] = polling
        out["clients_websocket"] = websocket
        out["namespaces"] = len(self.rooms)
        out["namespace_clients"] = sum(len(r.sockets) for r in self.rooms.values())
        out["subscriptions"] = sum(len(s) for r in self.rooms.values() for s in r.subscribers.values())
        out["cached_updates"] = sum(len(c) for r in self.rooms.values() for c in r.cache.values())
        return out

    def healthy(self):
        ticking = self._align is not None and self._align.active()
        return {"ok": bool(self.running) and ticking,
                "sessions": len(self.engine.sessions),
                "interval": self.interval}

    health = healthy  # IHealth
