"""Each sensor's effective metadata: config > DAQ-sent > inferred > type.

One :class:`SensorCatalog` per daemon (reactor thread).  The hub's spectra
sink calls :meth:`SensorCatalog.observe` with every live frame's sample
count (the legacy feed's rate is inferred from samples per 1-s frame,
``analytics.meta.RateEstimator``), or :meth:`SensorCatalog.steady` once for
a run of frames of one length; the ingest decoder may later hand the
JSON per-sensor ``rate``/``unit``/``rpm`` to :meth:`SensorCatalog.report`
(peer input: a bad value raises ValueError for the caller to refuse the
frame).  ``/machines`` can show :meth:`SensorCatalog.as_dict` per machine.
A SIGHUP (:meth:`reconfigure`) re-resolves every sensor from the new
``SENSORS``.
"""

from tsrmon.analytics import meta as _meta

MAX_SENSORS = 100_000  # a bound on memory against a flood of names


class _Entry:
    __slots__ = ("stype", "estimator", "reported", "meta", "inferred", "last")

    def __init__(self, stype):
        self.stype = stype
        self.estimator = _meta.RateEstimator()
        self.reported = {}
        self.meta = None
        self.inferred = None
        self.last = None   # the previous frame's sample count


class SensorCatalog:
    def __init__(self, config):
        self.entries = config.sensors
        self._sensors = {}   # (machine, sensor) -> _Entry

    def reconfigure(self, config):
        self.entries = config.sensors
        for e in self._sensors.values():
            e.meta = None

    def _entry(self, machine, sensor, stype):
        k = (machine, sensor)
        e = self._sensors.get(k)
        if e is None:
            if len(self._sensors) >= MAX_SENSORS:
                self._sensors.clear()
            e = self._sensors[k] = _Entry(stype)
        elif stype is not None and e.stype != stype:
            e.stype = stype
            e.meta = None
        return e

    def steady(self, machine, sensor, stype, samples):
        """The sensor's metadata when a live frame of ``samples`` values would
        change nothing (a steady feed whose rate is already this frame
        length), else None.  Then any number of such frames leave it as it
        is: a run of frames can be taken with one look."""
        e = self._sensors.get((machine, sensor))
        if (e is not None and e.meta is not None and samples == e.last
                and e.stype == stype and e.inferred == samples):
            return e.meta
        return None

    def observe(self, machine, sensor, stype, samples):
        """A live frame of ``samples`` values arrived; the sensor's metadata."""
        # The hot path (every chunk of every sensor): a steady feed.
        meta = self.steady(machine, sensor, stype, samples)
        if meta is not None:
            return meta
        e = self._entry(machine, sensor, stype)
        e.last = samples
        e.estimator.add(samples)
        rate = e.estimator.rate
        if e.meta is None or rate != e.inferred:
            e.inferred = rate
            e.meta = _meta.resolve(machine, sensor, e.stype, self.entries, e.reported, rate)
        return e.meta

    def report(self, machine, sensor, stype, reported):
        """The DAQ's own ``rate``/``unit``/``rpm`` (JSON); ValueError when bad
        (nothing changes then)."""
        e = self._entry(machine, sensor, stype)
        reported = dict(reported or {})
        meta = _meta.resolve(machine, sensor, e.stype, self.entries, reported, e.inferred)
        e.reported = reported
        e.meta = meta
        return meta

    def meta(self, machine, sensor, stype=None):
        """The resolved metadata; for a sensor never seen, None, or with
        ``stype`` its metadata from config and type alone (late data)."""
        e = self._sensors.get((machine, sensor))
        if e is None:
            if stype is None:
                return None
            e = self._entry(machine, sensor, stype)
        if e.meta is None:
            e.meta = _meta.resolve(machine, sensor, e.stype, self.entries, e.reported, e.inferred)
        return e.meta

    def stype(self, machine, sensor):
        e = self._sensors.get((machine, sensor))
        return None if e is None else e.stype

    def as_dict(self, machine):
        """``{sensor: SensorMeta.as_dict()}`` of a machine (for ``/machines``)."""
        return {s: self.meta(m, s).as_dict() for (m, s) in list(self._sensors) if m == machine}
