"""The machine registry: one :class:`Machine` per name, its sensors, its DAQ
connection (takeover on reconnect) and the storage backpressure flag.

Built before every room that needs to know the machines (the store for
backpressure, alarm rules, the live layer, REST), so none of them needs the
hub's data path (``hub/machines.py``), which is built last with all its sinks.
Frame and sample counts live here, once, on each :class:`Machine`: ingest
derives a connection's counts and the DAQ port's totals from them.
"""

from typing import NamedTuple

from twisted.logger import Logger

from tsrmon.names import case_key, name_problem
from tsrmon.peerlog import PeerLog, peer_text


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


class LastFault(NamedTuple):
    """A machine's last FaultDetect (``Machine.last_fault``)."""

    score: float
    threshold: float
    t: float


class Machine:
    """One machine: its sensors, its current DAQ connection and its counters
    (the one place frames and samples are counted)."""

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
        self.last_fault = None  # a LastFault
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
        # Issue 16: the node that feeds it now, when another node of the
        # cluster does (its machine rules are that node's business).
        self.fed_elsewhere = None

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


class MachineRegistry:
    """Machines by name, the name and sensor rules, connections and takeover."""

    log = Logger()

    def __init__(self, config, clock):
        self.config = config
        self.clock = clock
        self.machines = {}
        self._refusal_logged = {}  # (name, host) -> last log time
        self._stype_warned = set()
        self._congested = False
        self._congested_by = set()  # who is behind: "store", "raw_csv"
        self._case = {}  # case_key(machine) -> machine name
        # Connect, takeover and disconnect lines: a reconnect storm writes a
        # few lines a minute per machine and source, not one per reconnect.
        self.peerlog = PeerLog(self.log, clock, burst=5, global_burst=100)
        self.counters = dict.fromkeys(("refused_sensor_case", "refused_sensor_max",
                                       "refused_sensor_meta"), 0)

    def reconfigure(self, config):
        """Take new allow-lists and caps (SIGHUP, through the hub)."""
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

    def totals(self):
        """Frames, samples and drops of every machine together (the DAQ port's counters)."""
        frames = samples = dropped_bytes = dropped_nonfinite = 0
        for m in self.machines.values():
            frames += m.frames
            samples += m.samples
            dropped_bytes += m.dropped_bytes
            dropped_nonfinite += m.dropped_nonfinite
        return {"frames": frames, "samples": samples, "dropped_bytes": dropped_bytes,
                "dropped_nonfinite": dropped_nonfinite}

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
        daq = self.config.daq
        if daq.machines and name not in daq.machines:
            raise Refused(f"machine {name!r} is not in DAQ.MACHINES", kind="not_allowed")
        machine = self.machines.get(name)
        if machine is None:
            other = self._case.get(case_key(name))
            if other is not None:
                # One SQLite database/table set and, on a case-insensitive
                # file system, one file: refused, never merged.
                raise Refused(f"machine name {name!r} differs only in case from the known machine {other!r}",
                              kind="case")
            if len(self.machines) >= daq.max_machines:
                raise Refused(f"DAQ.MAX_MACHINES ({daq.max_machines}) reached; machine {name!r} refused",
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
        machine.fed_elsewhere = None
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
        return machine

    def release(self, machine, connection):
        """``connection`` ended: True when the machine went offline (False
        when it was taken over or never bound)."""
        if machine is None or machine.connection is not connection:
            return False
        machine.connection = None
        machine.disconnected_at = self.clock.seconds()
        self.peerlog.info(connection.peer_host, "disconnect " + machine.name, "{machine} disconnected",
                          machine=machine.name)
        return True

    def note_remote(self, name, node, connected):
        """Another node's ``status`` of ``name`` (issue 16): it feeds the
        machine now (``connected``), or no longer.  Only machines known here
        are noted; a local connection is this node's own business."""
        machine = self.machines.get(name)
        if machine is None or machine.connection is not None:
            return
        if connected:
            machine.fed_elsewhere = node
        elif machine.fed_elsewhere == node:
            machine.fed_elsewhere = None

    def connections(self):
        return [m.connection for m in self.machines.values() if m.connection is not None]

    # -- sensors ---------------------------------------------------------
    def admit_sensor(self, machine, sensor, stype):
        """A sensor new to ``machine`` (or of a new type): False when refused
        (its name differs only in case from a known one, or DAQ.MAX_SENSORS)."""
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
            cap = self.config.daq.max_sensors
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

    # -- backpressure ------------------------------------------------------
    def storage_congested(self, congested, source="store"):
        """``source`` (the store, the raw CSV log) fell behind (True) or
        caught up: every DAQ connection pauses while any source is behind
        and resumes once none is.  One flag per source, so one catching up
        does not resume reading while the other is still behind."""
        if congested:
            self._congested_by.add(source)
        else:
            self._congested_by.discard(source)
        congested = bool(self._congested_by)
        if congested == self._congested:
            return
        self._congested = congested
        # Raw CSV bursts make many short episodes (counted in /metrics): debug.
        emit = self.log.debug if source == "raw_csv" else self.log.warn
        emit("storage {state}: DAQ reading {action}",
             state="is falling behind" if congested else "caught up",
             action="paused" if congested else "resumed")
        for conn in self.connections():
            conn.storage_congested(congested)

    def raw_csv_congested(self, congested):
        """The raw CSV log's backpressure (``RawCSVService(backpressure=)``)."""
        self.storage_congested(congested, source="raw_csv")
