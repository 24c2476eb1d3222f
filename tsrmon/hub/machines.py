"""The machine hub: one :class:`Machine` per name, and every consequence of a
DAQ frame.

``ingest/`` calls :meth:`MachineHub.claim` when a handshake arrives,
:meth:`MachineHub.data` / :meth:`MachineHub.fault` for each decoded frame and
:meth:`MachineHub.release` when the connection ends.  The hub is the only
place that fans a frame out to the other rooms (statistics, raw log, fault
store, live layer, notifier, alarm rules), so a reader finds here everything a frame
causes.  The rooms it feeds are given to the constructor, or, for the rooms that
need the hub themselves, once through :meth:`MachineHub.feed`; a room that is
not given (None) is simply not fed.
"""

from twisted.application import service
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.names import case_key, name_problem
from tsrmon.peerlog import PeerLog, peer_text
from tsrmon.rooms import IReconfigurable


class Refused(Exception):
    """A handshake the hub will not accept; the text is for the log (peer
    text in it is already cut short and escaped).

    ``quiet`` asks the caller not to log it again (a refusal repeated within
    a minute, so a misconfigured DAQ retrying in a loop cannot flood the log).
    ``kind`` names the reason for counters (``refused_name_<kind>``): ``bad``,
    ``not_allowed``, ``max_machines``, ``in_use``, ``case``.
    """

    def __init__(self, reason, quiet=False, kind="bad"):
        super().__init__(reason)
        self.quiet = quiet
        self.kind = kind


class Machine:
    """One machine: its sensors, its current DAQ connection and its counters."""

    def __init__(self, name):
        self.name = name
        self.sensors = {}  # sensor name -> type, first-seen order
        self.sensor_case = {}  # case_key(sensor) -> sensor (known and remembered)
        self.warned_sensors = set()  # dropped sensors already logged
        self.connection = None
        self.peer_host = None
        self.connected_since = None
        self.disconnected_at = None
        self.last_frame = None
        self.last_fault = None  # (score, threshold, t)
        self.frames = 0
        self.samples = 0
        self.faults = 0
        self.bytes = 0
        self.refused_frames = 0
        self.dropped_nonfinite = 0
        self.dropped_sensors = 0
        self.dropped_bytes = 0
        self.paused_seconds = 0.0
        self.connects = 0
        self.takeovers = 0

    @property
    def connected(self):
        return self.connection is not None

    def status(self):
        """A JSON-ready summary (REST ``/machines``, live ``status``)."""
        return {
            "machine": self.name,
            "connected": self.connected,
            "peer": self.peer_host,
            "connected_since": self.connected_since,
            "disconnected_at": self.disconnected_at,
            "last_frame": self.last_frame,
            "sensors": dict(self.sensors),
            "frames": self.frames,
            "samples": self.samples,
            "faults": self.faults,
            "bytes": self.bytes,
            "refused_frames": self.refused_frames,
            "dropped_nonfinite": self.dropped_nonfinite,
            "dropped_sensors": self.dropped_sensors,
            "dropped_bytes": self.dropped_bytes,
            "paused_seconds": self.paused_seconds,
            "connects": self.connects,
            "takeovers": self.takeovers,
        }


@implementer(IReconfigurable)
class MachineHub(service.Service):
    """Registry of machines and the one-way fan-out of their data."""

    log = Logger()
    name = "hub"

    def __init__(self, config, clock, *, stats=None, raw=None, faults=None, live=(), notifier=None,
                 alarms=None, spectra=None, catalog=None):
        self.config = config
        self.clock = clock
        self.machines = {}
        # The rooms fed (see ports.py for what each does); None is not fed.
        self.stats = stats
        self.raw = raw
        self.faults = faults
        self.live = list(live)
        self.notifier = notifier
        self.alarms = alarms
        self.spectra = spectra  # issue 17: spectra room (tsrmon/spectra/)
        self.catalog = catalog  # the sensor catalog (tsrmon/spectra/catalog.py): JSON frames' own metadata
        self._refusal_logged = {}  # (name, host) -> last log time
        self._stype_warned = set()
        self._congested = False
        self._case = {}  # case_key(machine) -> machine name
        # Connect, takeover and disconnect lines: a reconnect storm writes a
        # few lines a minute per machine and source, not one per reconnect.
        self.peerlog = PeerLog(self.log, clock, burst=5, global_burst=100)
        self.counters = dict.fromkeys(("refused_sensor_case", "refused_sensor_max",
                                       "refused_sensor_meta"), 0)
        self._reported = {}  # (machine, sensor) -> the metadata last handed to the catalog

    def feed(self, *, stats=None, faults=None, live=(), alarms=None, spectra=None):
        """Give the hub the rooms that were built after it because they need
        the hub themselves (its machines, ``storage_congested``, ``second``):
        the one late binding of the service tree, done once by makeService
        before anything starts."""
        self.stats = stats if stats is not None else self.stats
        self.faults = faults if faults is not None else self.faults
        self.live.extend(live)
        self.alarms = alarms if alarms is not None else self.alarms
        self.spectra = spectra if spectra is not None else self.spectra

    def emit(self, machine, event, payload):
        """A live event of ``machine`` (alarm rules' raise/clear) to every live sink."""
        for live in self.live:
            live.broadcast(machine, event, payload)

    # -- configuration -------------------------------------------------
    def reconfigure(self, config):
        """Take new allow-lists and caps (SIGHUP)."""
        self.config = config

    def remember(self, names):
        """Machines known from storage: clients may subscribe before their DAQ connects."""
        for name in names:
            if name_problem(name) is None and name not in self.machines:
                self.machines[name] = Machine(name)
                self._case.setdefault(case_key(name), name)

    def remember_sensors(self, machine_name, sensors):
        """Sensor names known from storage, so a name differing only in case
        is refused after a restart too (types are learnt from the DAQ)."""
        machine = self.machines.get(machine_name)
        if machine is not None:
            for sensor in sensors:
                machine.sensor_case.setdefault(case_key(sensor), sensor)

    def known(self, name):
        return name in self.machines

    def get(self, name):
        return self.machines.get(name)

    # -- connections -----------------------------------------------------
    def claim(self, name, connection):
        """Bind ``connection`` to machine ``name`` or raise :class:`Refused`.

        A reconnect from the DAQ's own address takes over (the old socket is
        closed: the DAQ only reconnects once it thinks the old one is dead).
        Another address claiming a connected name is refused, so two PCs
        configured with one name cannot knock each other off in a loop.
        """
        problem = name_problem(name)
        if problem is not None:
            raise Refused(f"bad machine name {peer_text(name)}: {problem}")
        daq = self.config["DAQ"]
        if daq["MACHINES"] and name not in daq["MACHINES"]:
            raise Refused(f"machine {name!r} is not in DAQ.MACHINES", kind="not_allowed")
        machine = self.machines.get(name)
        if machine is None:
            other = self._case.get(case_key(name))
            if other is not None:
                # One SQLite database/table set and, on a case-insensitive
                # file system, one file: refused, never merged.
                raise Refused(f"machine name {name!r} differs only in case from the known machine {other!r}",
                              kind="case")
            if len(self.machines) >= daq["MAX_MACHINES"]:
                raise Refused(f"DAQ.MAX_MACHINES ({daq['MAX_MACHINES']}) reached; machine {name!r} refused",
                              kind="max_machines")
            machine = self.machines[name] = Machine(name)
            self._case[case_key(name)] = name
        old = machine.connection
        takeover = False
        if old is not None and old is not connection:
            if old.peer_host != connection.peer_host:
                key = (name, connection.peer_host)
                now = self.clock.seconds()
                last = self._refusal_logged.get(key)
                if len(self._refusal_logged) >= 4096:
                    self._refusal_logged.clear()
                self._refusal_logged[key] = now
                raise Refused(f"machine {name!r} is already connected from {old.peer_host}",
                              quiet=last is not None and now - last < 60, kind="in_use")
            machine.takeovers += 1
            takeover = True
            machine.connection = None
            old.takeover(f"{name} reconnected")
        t = self.clock.seconds()
        machine.connection = connection
        machine.peer_host = connection.peer_host
        machine.connected_since = t
        machine.disconnected_at = None
        machine.connects += 1
        if self._congested:
            connection.storage_congested(True)
        if takeover:
            # One line per takeover (the old connection closes without one).
            self.peerlog.info(connection.peer_host, "takeover " + name,
                              "{machine} reconnected from {peer}: the old connection was closed "
                              "({n} takeovers)", machine=name, peer=connection.peer_host, n=machine.takeovers)
        else:
            self.peerlog.info(connection.peer_host, "connect " + name, "{machine} connected from {peer}",
                              machine=name, peer=connection.peer_host)
        for live in self.live:
            live.machine_status(machine)
        return machine

    def release(self, machine, connection):
        """``connection`` ended; the machine goes offline unless it was taken over."""
        if machine is None or machine.connection is not connection:
            return
        machine.connection = None
        machine.disconnected_at = self.clock.seconds()
        self.peerlog.info(connection.peer_host, "disconnect " + machine.name, "{machine} disconnected",
                          machine=machine.name)
        for live in self.live:
            live.machine_status(machine)

    def connections(self):
        return [m.connection for m in self.machines.values() if m.connection is not None]

    # -- data ------------------------------------------------------------
    def data(self, machine, sensors, t=None, late=False, meta=None, raw_csv=True):
        """One DataUpdate: ``sensors`` is a list of (name, type, finite values).

        Names were checked by ingest.  ``t`` is the frame's own time for late
        samples (``late=True``); otherwise now.  ``meta``: the DAQ's own
        sensor metadata (JSON ``rate``/``unit``/``rpm``) by sensor name.
        ``raw_csv=False``: samples that are not raw data (the demo's
        backfilled history) skip the raw CSV log.
        """
        now = self.clock.seconds()
        if t is None:
            t = now
        machine.frames += 1
        machine.last_frame = now
        known = machine.sensors
        stats = self.stats
        raw = self.raw if raw_csv else None
        spectra = self.spectra
        for sensor, stype, values in sensors:
            if known.get(sensor) != stype:
                if not self._new_sensor(machine, sensor, stype):
                    continue
            if meta is not None and sensor in meta:
                self._report_meta(machine, sensor, stype, meta[sensor])
            if len(values) == 0:  # a list, or a numpy array for long chunks
                continue
            machine.samples += len(values)
            if stats is not None:
                if late:
                    stats.add_late(machine.name, sensor, stype, values, t)
                else:
                    stats.add(machine.name, sensor, stype, values, t)
            if raw is not None:
                raw.write(machine.name, sensor, values, t)
            if spectra is not None:
                spectra.data(machine.name, sensor, stype, values, t, late)

    def _report_meta(self, machine, sensor, stype, reported):
        """Hand a sensor's reported metadata to the catalog when it changed;
        a refused value is logged (rate-limited) and counted, and the
        samples are kept with the metadata the catalog had."""
        catalog = self.catalog
        if catalog is None:
            return
        key = (machine.name, sensor)
        if self._reported.get(key) == reported:
            return
        try:
            catalog.report(machine.name, sensor, stype, reported)
        except ValueError as e:
            self.counters["refused_sensor_meta"] += 1
            self.peerlog.warn(machine.name, "sensor meta " + sensor,
                              "{machine}/{sensor}: sensor metadata refused ({why}); samples kept",
                              machine=machine.name, sensor=peer_text(sensor), why=peer_text(str(e), 200))
            return
        if len(self._reported) < 65536:
            self._reported[key] = reported

    def _new_sensor(self, machine, sensor, stype):
        if sensor not in machine.sensors:
            key = case_key(sensor)
            other = machine.sensor_case.get(key)
            if other is not None and other != sensor:
                # "Vib" and "vib" would share the table "Vib_hour_avg".
                machine.dropped_sensors += 1
                self.counters["refused_sensor_case"] += 1
                if self._first_warning(machine, sensor):
                    self.peerlog.warn(machine.name, "sensor case " + sensor,
                                      "{machine}: sensor {sensor!r} refused: it differs only in case from "
                                      "the known sensor {other!r}", machine=machine.name, sensor=sensor,
                                      other=other)
                return False
            cap = self.config["DAQ"]["MAX_SENSORS"]
            if len(machine.sensors) >= cap:
                machine.dropped_sensors += 1
                self.counters["refused_sensor_max"] += 1
                if self._first_warning(machine, sensor):
                    self.peerlog.warn(machine.name, "max sensors",
                                      "{machine}: DAQ.MAX_SENSORS ({cap}) reached; sensor {sensor!r} dropped",
                                      machine=machine.name, cap=cap, sensor=sensor)
                return False
            machine.sensor_case[key] = sensor
        elif machine.sensors[sensor] != stype:
            # A DAQ flapping between two types must not write a line a frame.
            self.peerlog.warn(machine.name, "type changed " + sensor,
                              "{machine}/{sensor}: type changed from {old} to {new}",
                              machine=machine.name, sensor=sensor, old=machine.sensors[sensor], new=stype)
        machine.sensors[sensor] = stype
        mode, named = self.config.stat_mode(stype)
        if not named and stype not in self._stype_warned and len(self._stype_warned) < 1024:
            self._stype_warned.add(stype)
            self.log.warn("sensor type {stype!r} (first seen on {machine}/{sensor}) is not in STAT: "
                          "using STAT.DEFAULT ({mode})",
                          stype=stype, machine=machine.name, sensor=sensor, mode=mode)
        return True

    @staticmethod
    def _first_warning(machine, sensor):
        """A dropped sensor is logged when first dropped, not in every frame."""
        if sensor in machine.warned_sensors or len(machine.warned_sensors) >= 256:
            return False
        machine.warned_sensors.add(sensor)
        return True

    def fault(self, machine, score, threshold, t=None):
        """One FaultDetect; score and threshold are floats already."""
        now = self.clock.seconds()
        if t is None:
            t = now
        machine.frames += 1
        machine.faults += 1
        machine.last_frame = now
        machine.last_fault = (score, threshold, t)
        if self.faults is not None:
            self.faults.fault(machine.name, score, threshold, t)
        for live in self.live:
            live.anomaly(machine.name, score, threshold, t)
        if score > threshold and self.notifier is not None:
            self.notifier.fault(machine.name, score, threshold, t)

    def second(self, machine, sensor, stype, t, sums):
        """Reduced values from ``stats/`` (one second of one sensor)."""
        for live in self.live:
            live.second(machine, sensor, stype, t, sums)
        if self.alarms is not None:
            self.alarms.second(machine, sensor, stype, t, sums)

    # -- backpressure ------------------------------------------------------
    def storage_congested(self, congested):
        if congested == self._congested:
            return
        self._congested = congested
        self.log.warn("storage {state}: DAQ reading {action}",
                      state="is falling behind" if congested else "caught up",
                      action="paused" if congested else "resumed")
        for conn in self.connections():
            conn.storage_congested(congested)
