"""The hub's data path: every consequence of a DAQ frame.

``ingest/`` calls :meth:`MachineHub.claim` when a handshake arrives,
:meth:`MachineHub.data` / :meth:`MachineHub.fault` for each decoded frame and
:meth:`MachineHub.release` when the connection ends.  The hub is the only
place that fans a frame out to the other rooms (statistics, raw log, fault
store, live layer, notifier, spectra), so a reader finds here everything a
frame causes.  It is built last, with every room it feeds (``sinks.py``
says what each does; a room not given, None, is not fed); the machines
themselves live in the :class:`~tsrmon.hub.registry.MachineRegistry` it is
given, which the rooms that need machines got before it was built.
"""

from twisted.application import service
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.hub.registry import LastFault, Machine, MachineRegistry, Refused
from tsrmon.peerlog import peer_text
from tsrmon.rooms import IReconfigurable

__all__ = ["Machine", "MachineHub", "Refused"]


@implementer(IReconfigurable)
class MachineHub(service.Service):
    """The one-way fan-out of the machines' data."""

    log = Logger()
    name = "hub"

    def __init__(self, config, clock, *, registry=None, stats=None, raw=None, faults=None, live=None,
                 notifier=None, spectra=None, catalog=None, lease=None):
        self.clock = clock
        # Issue 16: the cluster's machine leases (tsrmon/cluster/room.py LeaseGate), or None.
        self.lease = lease
        # Without a registry (tests, tools) the hub keeps its own.
        self.registry = MachineRegistry(config, clock) if registry is None else registry
        # The rooms fed (see sinks.py for what each does); None is not fed.
        self.stats = stats
        self.raw = raw
        self.faults = faults
        self.live = live  # a LiveSink: the daemon's LiveBus
        self.notifier = notifier
        self.spectra = spectra  # issue 17: spectra room (tsrmon/spectra/)
        self.catalog = catalog  # the sensor catalog (tsrmon/spectra/catalog.py): JSON frames' own metadata
        self._reported = {}  # (machine, sensor) -> the metadata last handed to the catalog

    # -- the registry's face (ingest, tools and the demo talk to the hub) ---
    @property
    def machines(self):
        return self.registry.machines

    @property
    def counters(self):
        return self.registry.counters

    @property
    def peerlog(self):
        return self.registry.peerlog

    def reconfigure(self, config):
        """Take new allow-lists and caps (SIGHUP)."""
        self.registry.reconfigure(config)

    def remember(self, names):
        self.registry.remember(names)

    def remember_sensors(self, machine_name, sensors):
        self.registry.remember_sensors(machine_name, sensors)

    def known(self, name):
        return self.registry.known(name)

    def get(self, name):
        return self.registry.get(name)

    def connections(self):
        return self.registry.connections()

    def storage_congested(self, congested):
        self.registry.storage_congested(congested)

    # -- connections -----------------------------------------------------
    def claim(self, name, connection):
        """Bind ``connection`` to machine ``name`` (see
        :meth:`MachineRegistry.claim`; raises :class:`Refused`)."""
        machine = self.registry.claim(name, connection)
        if self.live is not None:
            self.live.machine_status(machine)
        if self.lease is not None:
            self.lease.claimed(machine, connection)  # closes it when another node keeps the machine
        return machine

    def release(self, machine, connection):
        """``connection`` ended; the machine goes offline unless it was taken over."""
        if self.registry.release(machine, connection) and self.live is not None:
            self.live.machine_status(machine)
        if self.lease is not None:
            self.lease.released(machine, connection)

    # -- data ------------------------------------------------------------
    def data(self, machine, sensors, t=None, late=False, meta=None, raw_csv=True, frames=1):
        """One DataUpdate: ``sensors`` is a sequence of
        :class:`~tsrmon.hub.records.SensorSamples` (or plain
        ``(name, type, finite values)`` tuples).

        Names were checked by ingest.  ``t`` is the frame's own time for late
        samples (``late=True``); otherwise now.  ``meta``: the DAQ's own
        sensor metadata (JSON ``rate``/``unit``/``rpm``) by sensor name.
        ``raw_csv=False``: samples that are not raw data (the demo's
        backfilled history) skip the raw CSV log.  ``frames`` > 1: a run of
        frames of one shape that arrived together, each sensor's samples
        of all of them in one array (statistics, raw CSV and the spectra
        room take it whole).
        """
        now = self.clock.seconds()
        if t is None:
            t = now
        machine.frames += frames
        machine.last_frame = now
        known = machine.sensors
        stats = self.stats
        add = None if stats is None else stats.add_late if late else stats.add
        write = None if self.raw is None or not raw_csv else self.raw.write
        spectra = self.spectra
        name = machine.name
        samples = 0
        for sensor, stype, values in sensors:
            if known.get(sensor) != stype:
                if not self.registry.admit_sensor(machine, sensor, stype):
                    continue
            if meta is not None and sensor in meta:
                self._report_meta(machine, sensor, stype, meta[sensor])
            n = len(values)  # a list, or a numpy array for long chunks
            if n == 0:
                continue
            samples += n
            if add is not None:
                add(name, sensor, stype, values, t)
            if write is not None:
                write(name, sensor, values, t)
            if spectra is not None:
                if frames == 1:
                    spectra.data(name, sensor, stype, values, t, late)
                else:
                    spectra.data(name, sensor, stype, values, t, late, frames)
        machine.samples += samples

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
            self.registry.counters["refused_sensor_meta"] += 1
            self.peerlog.warn(machine.name, "sensor meta " + sensor,
                              "{machine}/{sensor}: sensor metadata refused ({why}); samples kept",
                              machine=machine.name, sensor=peer_text(sensor), why=peer_text(str(e), 200))
            return
        if len(self._reported) < 65536:
            self._reported[key] = reported

    def fault(self, machine, score, threshold, t=None):
        """One FaultDetect; score and threshold are floats already."""
        now = self.clock.seconds()
        if t is None:
            t = now
        machine.frames += 1
        machine.faults += 1
        machine.last_frame = now
        machine.last_fault = LastFault(score, threshold, t)
        if self.faults is not None:
            self.faults.fault(machine.name, score, threshold, t)
        if self.live is not None:
            self.live.anomaly(machine.name, score, threshold, t)
        if score > threshold and self.notifier is not None:
            self.notifier.fault(machine.name, score, threshold, t)
