"""``LiveService``: the hub's live sink and the ``/socket.io/`` endpoint.

The live bus (``hub/bus.py``) it attaches to calls :meth:`LiveService.second`
(from statistics), :meth:`anomaly` and :meth:`machine_status` (from the hub)
and :meth:`broadcast` (alarm rules): ``hub/sinks.py`` ``LiveSink``.  Seconds are merged
into one window per sensor; a tick on the injected clock, 0.25 s after each
LIVE.INTERVAL boundary (statistics hand a finished second over within 50 ms),
closes the windows and broadcasts ``update`` (a sensor without samples in the
window gets none).  The last LIVE.CACHE updates per sensor are
kept for ``initialize``; ``history(machine)`` (minute rows from storage)
rebuilds them after a restart.

Fan-out (issue 18): a tick corks the engine, so each client gets all of the
tick's events (every namespace, every sensor) in one transport write; the
``second`` events of one statistics roll (one synchronous loop of
:meth:`second` calls) are held until the reactor's next turn likewise.
Those writes go straight into each client's socket when nothing is buffered
(``engineio.websocket.send_now``); a flush to many clients makes them from
the reactor thread and one helper thread at once (``engineio/fanout.py``,
started on demand, joined by :meth:`stopService`).
``tsrmon_live_tick_seconds`` and ``tsrmon_live_tick_cpu_seconds``
(histograms) say how long a tick took until every client's bytes were in the
kernel, and how much of it was the daemon's own CPU (both threads).
"""

import datetime
import time
import zoneinfo

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.live.engineio import EngineServer
from tsrmon.live.machines import NAMESPACE_PREFIX, MachineNamespace, stored_summary
from tsrmon.live.socketio import Namespace, SocketServer
from tsrmon.peerlog import PeerLog
from tsrmon.reactorlag import BUCKETS, LagSeries
from tsrmon.rooms import ICounters, IHealth, IReconfigurable
from tsrmon.ticks import next_tick_delay
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

    def __init__(self, config, clock, registry, history=None, policy=None, reader=None, spectra=None,
                 bus=None):
        """``registry``: the machine registry (``hub/registry.py``: which
        machines exist, their status).  ``bus``: the live bus this service
        attaches itself to (None: events come by direct calls, as in tests).
        ``policy``: the daemon's one :class:`HttpPolicy` (CORS, API tokens),
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
        self.registry = registry
        self.reader = reader
        if history is None and reader is not None:
            history = self._stored_history
        self.history = history
        # Read by MachineNamespace; None: nothing stored to tell.
        self.stored_status = self._stored_status if reader is not None else None
        live = config.live
        self.interval = float(live.interval)
        self.cache_size = int(live.cache)
        self.max_subscriptions = int(config.daq.max_sensors)
        self.zone = zoneinfo.ZoneInfo(config.time.zone)
        self._modes = {}
        self.namespaces = {}
        self.root = Namespace("/")  # accepted but unused, as deployed
        self._counters = {"updates_sent": 0, "anomalies": 0, "status_events": 0,
                          "events_emitted": 0, "windows_closed": 0, "history_rows": 0}
        self.engine = EngineServer(
            clock, None,
            ping_interval=float(live.ping_interval),
            ping_timeout=float(live.ping_timeout),
            max_payload=MAX_PAYLOAD,
            upgrade_timeout=UPGRADE_TIMEOUT,
            max_queue=int(live.max_queue),
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
        # How long a tick takes until every client's bytes are handed to the
        # kernel: wall time, and the reactor thread's own CPU time in it
        # (wall minus CPU: waiting for a CPU on a busy machine, or for the GIL).
        self.now = time.monotonic
        self.cpu_time = time.thread_time
        self.tick_wall = LagSeries(BUCKETS, 60.0)
        self.tick_cpu = LagSeries(BUCKETS, 60.0)
        # Only a reactor has turns to batch a statistics roll's `second`
        # events in; on a test's task.Clock (no turns) they go out at once.
        self._turns = IReactorCore.providedBy(clock)
        self._roll_corked = False
        # Issue 17, the opt-in `spectrum` event: the spectra room and a
        # reader of stored spectra; without them nobody gets a spectrum.
        self.spectra = spectra
        self.spectrum_reader = reader.spectrum if reader is not None else None
        self.spectrum_lines = SPECTRUM_LINES
        if bus is not None:
            bus.attach(self)  # last: the service is whole before events arrive

    def reconfigure(self, config):
        """SIGHUP: new API tokens and CORS origins for the next handshake and
        CONNECT come with the shared policy (its owner reloads it and it calls
        :meth:`policy_changed`: namespace clients let in by a token that is no
        longer configured are disconnected).  Heartbeat
        timings and LIVE.MAX_QUEUE apply to the next ping and message;
        LIVE.INTERVAL and LIVE.CACHE need a restart."""
        if self._own_policy:
            self.policy.reconfigure(config)
        live = config.live
        self.engine.ping_interval = float(live.ping_interval)
        self.engine.ping_timeout = float(live.ping_timeout)
        self.engine.max_queue = int(live.max_queue)
        old = self.config.live
        changed = [k.upper() for k in ("interval", "cache") if getattr(live, k) != getattr(old, k)]
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

    # -- helpers used by the namespaces ----------------------------------------
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
                              self.config.database.minute_retention_days)

    def broadcast(self, machine, event, payload):
        """``event`` to every client of ``machine``'s namespace (alarm rules)."""
        self.namespace(machine).broadcast(event, payload)

    def namespace(self, machine):
        """``machine``'s ``/sio/<machine>`` namespace (made on first use)."""
        ns = self.namespaces.get(machine)
        if ns is None:
            ns = self.namespaces[machine] = MachineNamespace(machine, self)
        return ns

    def resolve(self, nsp):
        """The namespace object for a CONNECT, or None (CONNECT_ERROR)."""
        if nsp.startswith(NAMESPACE_PREFIX):
            machine = nsp[len(NAMESPACE_PREFIX):]
            if machine in self.namespaces or self.registry.known(machine):
                return self.namespace(machine)
            return None
        if nsp == "/":
            return self.root
        return None

    def resource(self):
        """The twisted.web resource for ``/socket.io/`` (putChild or a Klein branch route)."""
        return self._resource

    # -- LiveSink ------------------------------------------------------------
    def second(self, machine, sensor, stype, t, sums):
        ns = self.namespaces.get(machine) or self.namespace(machine)
        if self._turns and not self._roll_corked and ns.subscribers:
            # A statistics roll hands over every sensor's second in one
            # synchronous loop: hold the `second` events until the reactor's
            # next turn, so each subscriber gets the roll in one write.
            self._roll_corked = True
            self.engine.cork()
            self.clock.callLater(0, self._roll_done)
        ns.add_second(sensor, stype, t, sums)

    def _roll_done(self):
        self._roll_corked = False
        self.engine.uncork()

    def anomaly(self, machine, score, threshold, t):
        self._counters["anomalies"] += 1
        ns = self.namespace(machine)
        self._counters["events_emitted"] += ns.broadcast(
            "anomaly", {"score": float(score), "threshold": float(threshold)})

    def machine_status(self, machine):
        ns = self.namespace(machine.name)
        self._counters["status_events"] += 1
        self._counters["events_emitted"] += ns.broadcast("status", ns.status_payload())

    # -- the clock -------------------------------------------------------------
    TICK_OFFSET = 0.25

    def _tick(self):
        # CPU: the reactor thread's, and the fan-out helper thread's (engineio/fanout.py).
        sender = self.engine.sender
        started, cpu0, helper0 = self.now(), self.cpu_time(), sender.cpu_seconds
        text = self.time_text(self.clock.seconds())
        sent = 0
        # One write per client for the whole tick (every namespace, every sensor).
        self.engine.cork()
        try:
            for ns in list(self.namespaces.values()):
                sent += ns.close_window(text)
                if ns.spectrum_subscribers:
                    ns.push_spectra()
        finally:
            self.engine.uncork()
        done = self.now()
        self.tick_wall.record(done - started, done)
        self.tick_cpu.record(max(0.0, self.cpu_time() - cpu0 + sender.cpu_seconds - helper0), done)
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
        ns = self.namespace(machine)
        for sensor, windows in per_sensor.items():
            payloads = []
            for key in sorted(windows):
                stype, sums = windows[key]
                if sums.count:
                    payloads.append({"sensor_name": sensor,
                                     "data": float(sums.value(self.mode(stype))),
                                     "time": self.time_text(key + step)})
            ns.prepend_history(sensor, payloads[-self.cache_size:] if self.cache_size else [])

    # -- service ---------------------------------------------------------------
    def startService(self):
        super().startService()
        self.engine.accepting = True
        self.engine.start_sender()
        # Windows close TICK_OFFSET after each interval boundary: statistics
        # hand over a finished second ~50 ms after it ends, so the window
        # holds exactly the seconds before the boundary.
        self._schedule_tick()
        if self.history is not None:
            for name in list(self.registry.machines):
                self.rebuild(name)

    def stopService(self):
        super().stopService()
        if self._align is not None and self._align.active():
            self._align.cancel()
        self._align = None
        sockets = [s.ws for s in self.engine.sessions.values() if s.ws is not None]
        self.engine.close_all()
        self.engine.stop_sender()  # the helper thread of big tick flushes
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
        out["namespaces"] = len(self.namespaces)
        out["namespace_clients"] = sum(len(n.sockets) for n in self.namespaces.values())
        out["subscriptions"] = sum(len(s) for r in self.namespaces.values() for s in r.subscribers.values())
        out["cached_updates"] = sum(len(c) for r in self.namespaces.values() for c in r.cache.values())
        out["tick_seconds"] = self.tick_wall.histogram()
        out["tick_cpu_seconds"] = self.tick_cpu.histogram()
        return out

    def healthy(self):
        ticking = self._align is not None and self._align.active()
        return {"ok": bool(self.running) and ticking,
                "sessions": len(self.engine.sessions),
                "interval": self.interval}

    health = healthy  # IHealth
