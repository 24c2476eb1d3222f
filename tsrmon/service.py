"""``makeService(config)``: the one place the rooms are built, each with the
rooms it uses (docs/architecture.md, "Composition").

Start order (each start awaited before the next; stop is the exact reverse,
one child after the other, see ``ordered.OrderedMultiService``)::

    lock → clock-jump guard → reactor lag → log files → (sensor catalog, HTTP policy) → SQLite store
         → raw CSV → statistics → spectra → hub → notifier → reader → live → alarms → (REST routes)
         → HTTP site → DAQ listener → systemd READY → (demo DAQs)

so on SIGTERM the DAQ listener stops accepting and drains first, then the
HTTP site and live clients close, then statistics flush into the store, the
raw CSV buffers are written, and the store commits and closes.
"""

import os
import signal
import sys

import attrs
from twisted.application import internet, service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from tsrmon import rooms as room_interfaces
from tsrmon.config import ConfigError, default_config_path, load_config
from tsrmon.daemon import ProcessExit, tune_gc_for_a_daemon
from tsrmon.listeners import EndpointListener, address_text, listen_exception_text, listener_problem
from tsrmon.lock import InstanceLock, LockError
from tsrmon.ordered import OrderedMultiService
from tsrmon.systemd import SystemdNotifyService

log = Logger()


class LockService(service.Service):
    """Holds the instance lock taken in makeService; releases it last."""

    name = "lock"

    def __init__(self, lock):
        self.lock = lock

    def stopService(self):
        super().stopService()
        self.lock.release()


# Exit status of a daemon that stops because a listener failed (a bad
# configuration exits 2 before anything starts).
LISTENER_FAILED = 1
# Seconds between checks that every listening socket still accepts.
LISTENER_CHECK_INTERVAL = 1.0


class TsrmonService(OrderedMultiService):
    """The top service; keeps references to the rooms for tests and tools.

    The rooms declare what they offer (``tsrmon.rooms``: IHealth, ICounters,
    IReconfigurable); start-up verifies the declarations, and a child whose
    ``startService`` returns a Deferred is awaited before the next starts.
    SIGHUP re-reads the configuration file and hands it to every
    ``IReconfigurable`` room (tokens, allow-lists, caps,
    thresholds, alarm rules, log level).  Ports, paths and the time zone
    need a restart; a file that no longer validates is logged and ignored.

    Listeners (children with a ``listening`` Deferred, or any
    ``StreamServerEndpointService``) are all or nothing: one that cannot
    listen stops start-up there (later children, systemd's READY=1 among
    them, never start), and one whose socket stops accepting later stops
    the daemon.  Either is one log line, a clean stop of what had started,
    and exit status ``LISTENER_FAILED`` through ``exit_status`` (a
    ``ProcessExit``; without one, as when the tree is embedded in another
    program, the failure is only logged and kept in ``failure``).
    """

    name = "tsrmon"

    def __init__(self, config, reactor, handle_signals=True, exit_status=None, demo=False):
        super().__init__(clock=reactor, stop_timeout=config.server.shutdown_timeout)
        self.config = config
        self.reactor = reactor
        self.rooms = {}
        self.handle_signals = handle_signals
        self.exit_status = exit_status
        self.demo = demo  # --demo: SIGHUP keeps demo_config's settings
        self.failure = None
        self._ports = []  # (child, listening port, its address)
        self._port_check = None
        self._old_handlers = {}

    # The twistd plugin sets this (tsrmon.logs.console_observer): twistd asks
    # the application for an ILogObserver before building its unfiltered one.
    console_observer = None

    def setServiceParent(self, parent):
        if self.console_observer is not None:
            from twisted.logger import ILogObserver

            if hasattr(parent, "setComponent") and parent.getComponent(ILogObserver, None) is None:
                parent.setComponent(ILogObserver, self.console_observer)
        return super().setServiceParent(parent)

    def startService(self):
        # MultiService.startService, but each child's start is awaited before
        # the next one starts (Buildbot's AsyncMultiService), and a listener
        # or a start that fails ends start-up there: the children after it,
        # systemd's READY=1 among them, never start.  ``started`` fires once
        # every child has started (or start-up has ended early).
        service.Service.startService(self)
        self.started = defer.Deferred()
        if self.handle_signals:
            # Before any port opens: a SIGTERM between the first listener and
            # reactor.run() (a supervisor that saw the port open) is a clean
            # stop too, not Python's default death by signal.
            self._install_signal_handlers()
        problems = room_interfaces.problems(self)
        if problems:
            # A room that declares an interface it does not keep: a bug, said
            # in one line before anything listens.
            self._fatal("cannot start: " + "; ".join(problems))
        self._start_children(iter(list(self)))
        self._port_check = LoopingCall(self._check_ports)
        self._port_check.clock = self.reactor
        self._port_check.start(LISTENER_CHECK_INTERVAL, now=False)
        if self.handle_signals:
            # Again after the reactor has installed its own handlers (twistd
            # starts the application before reactor.run()).
            self.reactor.callWhenRunning(self._install_signal_handlers)
        return self.started

    def _start_children(self, children):
        """Start ``children`` one after the other; a child whose
        ``startService`` returns a Deferred is awaited before the next."""
        for child in children:
            if self.failure is not None or not self.running:
                break
            try:
                result = child.startService()
            except Exception as e:
                self._start_failed(child, e)
                break
            self._watch_listener(child)
            if isinstance(result, defer.Deferred):
                result.addCallbacks(lambda _: self._start_children(children),
                                    lambda failure, child=child: self._start_failed(child, failure))
                return
        if not self.started.called:
            self.started.callback(None)

    def _start_failed(self, child, error):
        if isinstance(error, Failure):
            error = error.value
        if self._is_listener(child):
            describe = getattr(child, "endpoint_description", lambda: "")
            self._fatal(f"cannot listen: {self._listener_text(child)}: "
                        f"{listen_exception_text(describe(), error)}")
        else:
            self.log.failure("starting {service} failed", Failure(error), service=child.name)
            self._fatal(f"cannot start: {child.name or type(child).__name__} failed: {error}")
        if not self.started.called:
            self.started.callback(None)

    # -- listeners: all or nothing -------------------------------------
    @staticmethod
    def _listening_deferred(child):
        d = getattr(child, "listening", None)
        if not isinstance(d, defer.Deferred):
            d = getattr(child, "_waitingForPort", None)  # a plain StreamServerEndpointService
        return d if isinstance(d, defer.Deferred) else None

    def _is_listener(self, child):
        return (self._listening_deferred(child) is not None or hasattr(child, "endpoint_description")
                or isinstance(child, internet.StreamServerEndpointService))

    @staticmethod
    def _listener_text(child):
        label = getattr(child, "label", None) or {"daq": "DAQ", "http": "HTTP"}.get(child.name, child.name)
        describe = getattr(child, "endpoint_description", None)
        where = f" on {describe()}" if describe is not None else ""
        return f"the {label} listener{where}"

    def _watch_listener(self, child):
        d = self._listening_deferred(child)
        if d is None:
            return

        def settled(result):
            if not self.running:
                return None if isinstance(result, Failure) else result
            if isinstance(result, Failure) or result is None:
                error = getattr(child, "listen_error", None)
                if error is None:
                    error = result.getErrorMessage() if isinstance(result, Failure) else "did not listen"
                self._fatal(f"cannot listen: {self._listener_text(child)}: {error}")
                return None
            self._ports.append((child, result, result.getHost()))
            return result

        d.addBoth(settled)

    def _check_ports(self):
        for child, port, address in self._ports:
            try:
                problem = listener_problem(port)
            except Exception as e:  # never let the check itself stop checking
                problem = f"cannot check the socket ({e})"
            if problem is not None:
                if getattr(port, "connected", False) and hasattr(port, "stopReading"):
                    port.stopReading()  # Twisted would retry accept() on every loop
                self._fatal(f"listener lost: {self._listener_text(child)} ({address_text(address)}): {problem}")
                return

    def _fatal(self, line, code=LISTENER_FAILED):
        if self.failure is not None:
            return
        self.failure = line
        if self.exit_status is None:
            self.log.critical("{line}", line=line)
            return
        self.log.critical("{line}; stopping (exit status {code})", line=line, code=code)
        self.exit_status.code = code
        self.reactor.callWhenRunning(self._stop_reactor_now)

    def _stop_reactor_now(self):
        if self.reactor.running:
            self.reactor.stop()

    def _install_signal_handlers(self):
        if not self.running:
            return
        # The reactor's own SIGTERM handler makes twistd re-raise the signal
        # after a clean stop (exit status -15); systemd and the operator
        # expect 0 after a graceful shutdown, so we stop the reactor ourselves.
        handlers = {signal.SIGTERM: self._sigterm}
        if self.config.source:
            handlers[signal.SIGHUP] = self._sighup
        for signum, handler in handlers.items():
            old = signal.signal(signum, handler)
            # The handler to restore at stop is the one from before us (the
            # second install replaces the reactor's, which goes with it).
            self._old_handlers.setdefault(signum, old)

    def _sighup(self, *_):
        self.reactor.callFromThread(self.reload)

    def _sigterm(self, *_):
        self.reactor.callFromThread(self._stop_reactor)

    def _stop_reactor(self):
        if self.reactor.running:
            log.info("SIGTERM: shutting down")
            self.reactor.stop()
        else:  # during start-up, before reactor.run(): stop as soon as it runs
            log.info("SIGTERM during start-up: shutting down")
            self.reactor.callWhenRunning(self.reactor.stop)

    def stopService(self):
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers = {}
        if self._port_check is not None and self._port_check.running:
            self._port_check.stop()
        self._ports = []
        return super().stopService()

    def reload(self):
        """Apply the configuration file again (SIGHUP)."""
        try:
            new = load_config(self.config.source, base_dir=self.config.base_dir)
        except ConfigError as e:
            log.error("SIGHUP: configuration not reloaded: {error}", error=str(e))
            return None
        restart_needed = [
            (section, key)
            for section, key in (("server", "host"), ("server", "port"), ("server", "tcp_port"),
                                 ("server", "http_endpoint"), ("server", "tcp_endpoint"),
                                 ("database", "path"), ("data", "path"), ("time", "zone"))
            if getattr(getattr(new, section), key) != getattr(getattr(self.config, section), key)
        ]
        if restart_needed:
            log.warn("SIGHUP: {keys} changed: takes effect after a restart",
                     keys=", ".join(f"{section}.{key}".upper() for section, key in restart_needed))
            # Keep the running values: the section objects with those settings put back.
            for section, key in restart_needed:
                kept = attrs.evolve(getattr(new, section), **{key: getattr(getattr(self.config, section), key)})
                new = new.replace(**{section: kept})
        if self.demo:
            new = demo_config(new)
        self.config = new
        for room in room_interfaces.providers(self, room_interfaces.IReconfigurable):
            try:
                room.reconfigure(new)
            except Exception:
                log.failure("SIGHUP: {room} could not take the new configuration", room=room.name)
        log.info("SIGHUP: configuration reloaded from {path}", path=new.source)
        return new


def demo_config(config):
    """``--demo``: updates every second so a newcomer sees data at once; the
    full-rate demo machine's sensor metadata (issue 17) after any SENSORS."""
    from tsrmon.analytics.meta import validate_entries
    from tsrmon.daqside.demo import DEMO_SENSORS
    return config.replace(live={"interval": 1.0}, sensors=list(config.sensors) + validate_entries(DEMO_SENSORS))


def http_endpoint(config):
    server = config.server
    return server.http_endpoint or f"tcp:port={server.port}:interface={_escape(server.host)}"


def _escape(host):
    # Endpoint strings use ':' as a separator; IPv6 hosts need it escaped.
    return host.replace(":", "\\:")


def makeService(config, reactor=None, demo=False, lock=True, exit_status=None):
    """Build the service tree for ``config`` (a validated ``Config``).

    Raises ``LockError`` if another daemon uses the same folders.  Nothing
    listens until the returned service is started.  ``exit_status`` (a
    ``daemon.ProcessExit``) receives the exit status when a listener fails.
    """
    if reactor is None:
        from twisted.internet import reactor
    if demo:
        config = demo_config(config)

    top = TsrmonService(config, reactor, exit_status=exit_status, demo=demo)
    if lock:
        instance_lock = InstanceLock([config.data.path, config.database.path]).acquire()
        LockService(instance_lock).setServiceParent(top)

    from tsrmon.alarms.service import AlarmService
    from tsrmon.clockjump import ClockJumpService
    from tsrmon.dashboard import dashboard_front
    from tsrmon.cluster import room as cluster_room
    from tsrmon.cluster.proxy import TrustedProxies, forwarded_requests
    from tsrmon.hub import LiveBus, MachineHub, MachineRegistry
    from tsrmon.ingest.listener import DAQListenerService
    from tsrmon.live.service import LiveService
    from tsrmon.logs import LogFileService
    from tsrmon.notify.service import NotifierService
    from tsrmon.reactorlag import ReactorLagService
    from tsrmon.spectra.catalog import SensorCatalog
    from tsrmon.spectra.service import SpectraService
    from tsrmon.stats.service import StatsService
    from tsrmon.rawlog.service import RawCSVService
    from tsrmon.reader.backends import build_reader
    from tsrmon.store.backends import build_store
    from tsrmon.web.policy import HttpPolicy
    from tsrmon.web.rest import RestAPI

    rooms = top.rooms  # by name, for tests and tools; the tree is the registry
    # Before every room: starts first and stops last, so flush, ping, rollover
    # and shutdown timers stay on schedule across wall-clock steps.
    clockjump = rooms["clockjump"] = ClockJumpService(reactor)
    clockjump.setServiceParent(top)
    # Timer lateness for /metrics (tsrmon_reactor_lag_seconds) and /healthz.
    lag = rooms["reactorlag"] = ReactorLagService(reactor)
    lag.setServiceParent(top)
    rooms["logfile"] = LogFileService(config)
    # Each room is built once with the rooms it uses, so those come first;
    # nothing is handed to a room after it was built.  The machine registry
    # and the live bus come before everything that needs machines or talks
    # to live clients; the hub's data path is built last, with every sink.
    # Issue 17: sensor metadata and per-minute spectra/features (tsrmon/spectra/).
    catalog = rooms["sensor_catalog"] = SensorCatalog(config)
    # CORS origins and API tokens of the whole HTTP site (REST, dashboard,
    # /socket.io/): one object, shared; SIGHUP reloads it as a room of its own.
    policy = rooms["http_policy"] = HttpPolicy.from_config(config)
    registry = MachineRegistry(config, reactor)
    # Alarm rules emit to the live layer, which reads spectra, which feed
    # alarm rules: the bus, built first, breaks that cycle (hub/bus.py).
    bus = LiveBus()
    # Issue 16 (CLUSTER.REDIS): live events, machine leases and the notification
    # throttle shared through Redis (tsrmon/cluster/); None on a single node.
    cluster = cluster_room.build(config, reactor, registry, bus)
    if cluster is not None:
        rooms["cluster"] = cluster
    # DATABASE.BACKEND: the store publishes each commit on its change feed (in
    # process, or LISTEN/NOTIFY for every node's commits); the reader's cache
    # follows it.  The store pauses DAQ reading through the registry when behind.
    store, feed = build_store(config, reactor, registry)
    rooms["store"] = store
    reader = rooms["reader"] = build_reader(config, reactor, feed)
    notifier = rooms["notifier"] = NotifierService(
        config, reactor, reactor, throttle=cluster.throttle(reactor) if cluster else None)
    raw = rooms["raw"] = RawCSVService(config, reactor, reactor, worker=config.data.writer,
                                       backpressure=registry.raw_csv_congested)
    # The raw CSV log pauses DAQ reading through the registry too (each room
    # has its own congestion flag).
    registry.remember(store.known_machines())
    # Case checks of sensor names survive restarts (a stored 'Vib' refuses 'vib').
    for machine in store.known_machines():
        registry.remember_sensors(machine, store.known_sensors(machine))
    # Raise/clear go to live clients through the bus and to push through the
    # notifier; the catalog lets the ISO preset judge true velocity RMS.
    alarms = rooms["alarms"] = AlarmService(config, reactor, registry, emit=bus.broadcast,
                                            notify=notifier.alarm, catalog=catalog)
    # Per-minute features feed velocity_rms, band:, order: and tone rules.
    spectra = rooms["spectra"] = SpectraService(config, reactor, store, catalog, reactor=reactor, alarms=alarms)
    # The reader refills live caches after a restart, tells a machine's first
    # `status` what storage knows and serves stored spectra; the live
    # `spectrum` event follows spectra.latest (issue 17).  It attaches to the bus.
    live = rooms["live"] = LiveService(config, reactor, registry, policy=policy, reader=reader,
                                       spectra=spectra, bus=bus)
    # Each finished second: to live clients (the bus), then to alarm rules.
    stats = rooms["stats"] = StatsService(config, reactor, (bus, alarms), store)
    hub = rooms["hub"] = MachineHub(
        config, reactor, registry=registry, stats=stats, raw=raw if config.data.enabled else None,
        faults=store, live=bus, notifier=notifier, spectra=spectra,
        catalog=catalog,  # catalog: JSON frames' own rate/unit/rpm
        lease=cluster.gate if cluster else None)
    # SERVER.TRUSTED_PROXIES for the DAQ port's PROXY header and the HTTP
    # site's X-Forwarded-For: one object, read at each new connection and
    # request, so a SIGHUP reload applies to the next ones.
    proxies = TrustedProxies.from_config(config)
    daq = rooms["daq"] = DAQListenerService(config, hub, reactor, proxies=proxies)

    rest = rooms["rest"] = RestAPI(
        config, reactor, registry, reader, live=live, notifier=notifier, policy=policy,
        # /healthz and /metrics ask every room of the tree that declares
        # IHealth / ICounters (tsrmon/rooms.py), read at each request.
        health=room_interfaces.health_checks(top), counters=room_interfaces.counter_readers(top),
        alarms=alarms, catalog=catalog, cluster=cluster,
    )
    # The dashboard's page and assets in front of the REST resource (they
    # hold no data, so they load without a token and can ask for one).
    site = Site(dashboard_front(rest.resource(), config))
    site.displayTracebacks = False
    site.requestFactory = forwarded_requests(proxies, site.requestFactory)  # trusted peers only
    http = rooms["http"] = EndpointListener(reactor, http_endpoint(config), site, "http", label="HTTP")

    # spectra after the store: stopped before it, so its last minutes are committed.
    # Plain objects that take SIGHUP sit in the tree too (room_interfaces.Part),
    # before the rooms that use them, so they are reconfigured first.
    catalog_part = room_interfaces.Part("sensor_catalog", catalog)
    policy_part = room_interfaces.Part("http_policy", policy)
    proxies_part = room_interfaces.Part("trusted_proxies", proxies)
    rest_part = room_interfaces.Part("rest", rest)
    for child in (rooms["logfile"], catalog_part, policy_part, proxies_part, store, raw, stats, spectra,
                  *([cluster] if cluster else []), hub, notifier, reader, live, alarms, rest_part, http, daq):
        child.setServiceParent(top)
    # Last to start (READY=1 once listeners are up), first to stop (STOPPING=1).
    SystemdNotifyService(reactor).setServiceParent(top)

    if demo:
        from tsrmon.daqside.demo import DemoService

        rooms["demo"] = DemoService(config, reactor, daq.local_address, hub=hub)  # hub: 14 days of history
        rooms["demo"].setServiceParent(top)
    return top


def service_or_exit(path, demo=False, reactor=None):
    """For twistd and the .tac: a bad configuration or a held lock is one
    line on stderr and exit status 2, before any port opens or any folder
    is made; a listener that fails later gives exit status 1."""
    exit_status = ProcessExit().arm()
    try:
        if path is None:
            path = default_config_path()
            if not os.path.exists(path):
                path = None
        config = load_config(path)
        top = makeService(config, reactor=reactor, demo=demo, exit_status=exit_status)
        tune_gc_for_a_daemon()
        return top
    except (ConfigError, LockError) as e:
        sys.stderr.write(f"tsrmon: {e}\n")
        sys.stderr.flush()
        raise SystemExit(2)
