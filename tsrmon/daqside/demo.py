"""The daemon's ``--demo`` feed: deployed-looking machines streaming in-process
over real TCP to the daemon's own DAQ port, after a backfill of history.

The demo runs one full-rate machine (``DEMO_FULL_RATE``, issue 17) beside
the deployed-looking ones; its metadata comes from ``DEMO_SENSORS`` (the
pickle encoding carries none), which the ``--demo`` daemon merges into
SENSORS (``tsrmon.service.demo_config``).
"""

import math

import numpy as np
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from tsrmon.daqside.simulator import SimulatorService
from tsrmon.daqside.waveforms import history_day

DEMO_MACHINES = {
    "ShotBlast": ["shot_blast_vib1", "shot_blast_vib2"],
    "AROPump": ["aro_vib1", "aro_vib2"],
    "VacuumPump1": ["pump1_vib", "pump1_temp"],
    "CoolingFan": ["fan_vib"],
}

# Issue 17: the demo machine that streams full-rate vibration (8,192 samples/s:
# lines to 3.2 kHz, enough for velocity RMS over 10–1,000 Hz and an envelope
# around a 2 kHz resonance, and light on the demo's CPU).
DEMO_FULL_RATE = {"CoolingFan": {"rate": 8192, "rpm": 1480.0,
                                 "faults": ("unbalance", "misalignment", "outer_race")}}
# Its metadata, merged into SENSORS by the --demo daemon (tsrmon.service.demo_config):
# an SKF 6205 bearing (BPFO 3.585 × running speed), ISO group 2 on a rigid foundation.
DEMO_SENSORS = [{
    "match": "CoolingFan/fan_vib", "rate": 8192, "unit": "g", "rpm": 1480.0,
    "bearing": {"n_balls": 9, "ball_diameter": 7.94, "pitch_diameter": 39.04, "contact_angle": 0},
    "bands": {"1x": [20, 30], "high": [1000, 3000]},
    "envelope_band": [1500, 2800], "group": 2, "foundation": "rigid",
}]


class DemoService(SimulatorService):
    """The daemon's ``--demo``: a few deployed-looking machines, in-process,
    over real TCP to the daemon's own DAQ port.  Every machine sends a
    FaultDetect every ``fault_every`` seconds; every second one of the first
    machine (ShotBlast) is over threshold, so one anomaly (and one push)
    shows up about every 30 s.

    With ``hub`` it first backfills ``history_days`` of statistics for each
    demo machine that storage does not know yet (a demo restarted on its own
    folders is not backfilled twice): one chunk of ``per_chunk`` samples per
    sensor every ``every`` seconds (5 minutes: 4,032 chunks per sensor for 14
    days, so the first flush writes ~25,000 rows rather than ~120,000 and
    start-up stays within a few seconds), handed to ``hub.data(..., late=True)``, the entry the
    DAQ listener calls for JSON frames that carry their own ``time``, so the
    samples reach every level through the statistics' late-data path.  Raw CSV
    is off for the backfill (its samples are not raw data).  It runs in slices
    of one machine-day, so the reactor keeps serving meanwhile; then the
    statistics are flushed at once (History shows them without waiting for
    DATABASE.FLUSH) and the live DAQs connect.  ``backfilled`` fires then
    (with the seconds it took).
    """

    log = Logger()

    def __init__(self, config, reactor, address_getter, fault_every=15.0, rate=1.0, chunk=30,
                 hub=None, history_days=14, every=300.0, per_chunk=6, seed=0):
        machines = {name: [(s, "TEMP" if s.endswith("temp") else "VIB") for s in sensors]
                    for name, sensors in DEMO_MACHINES.items()}
        super().__init__(reactor, address_getter, machines, rate=rate, chunk=chunk, use_json=False,
                         fault_every=fault_every, over_every=2, over_machines={"ShotBlast"},
                         full_rate=DEMO_FULL_RATE)
        self.config = config
        self.hub = hub
        self.history_days = history_days
        self.every = every
        self.per_chunk = per_chunk
        self.history_seed = seed
        self.backfilled = defer.Deferred()
        self.backfill_seconds = None
        self._backfill = None

    def startService(self):
        service.Service.startService(self)
        fresh = [name for name in self.machines if self.hub is not None and not self.hub.known(name)]
        if not fresh or self.history_days <= 0:
            self.backfilled.callback(0.0)
            self._try_connect()
            return
        started = self.reactor.seconds()
        cooperator = task.Cooperator(scheduler=lambda step: self.reactor.callLater(0.0, step))
        self._backfill = cooperator.cooperate(self._backfill_slices(fresh, started))
        d = self._backfill.whenDone()

        def done(_):
            self._backfill = None
            self.backfill_seconds = self.reactor.seconds() - started
            self.log.info("demo: backfilled {days} days of statistics for {machines} in {s:.1f} s",
                          days=self.history_days, machines=", ".join(fresh), s=self.backfill_seconds)
            flush = getattr(self.hub.stats, "flush", None)
            if flush is not None:
                flush()
            self.backfilled.callback(self.backfill_seconds)
            if self.running:
                self._try_connect()

        def failed(failure):
            self._backfill = None
            if not failure.check(task.TaskStopped):
                self.log.failure("demo: backfill failed", failure)
            if not self.backfilled.called:
                self.backfilled.callback(None)
            if self.running:
                self._try_connect()

        d.addCallbacks(done, failed)

    def _backfill_slices(self, machines, now):
        """One generator step per machine-day (a few tens of milliseconds)."""
        hub = self.hub
        end = math.floor(now / 60.0) * 60.0  # up to the current minute, where live data goes on
        start = end - self.history_days * 86400.0
        step = self.every
        for i, name in enumerate(machines):
            hub.remember([name])
            machine = hub.get(name)
            sensors = self.machines[name]
            rng = np.random.default_rng(self.history_seed + 1000 + i)
            # Ascending chunk times, the newest one step before `end`; one
            # generator step per day of them.
            times = np.arange(end - step, start - 1e-6, -step)[::-1]
            per_day = max(int(86400.0 // step), 1)
            for first in range(0, len(times), per_day):
                minutes = times[first:first + per_day]
                chunks = history_day(sensors, minutes, rng, self.per_chunk)
                for k, m0 in enumerate(minutes):
                    hub.data(machine, [(s, stype, chunks[s][k]) for s, stype in sensors],
                             t=float(m0) + 30.0, late=True, raw_csv=False)
                yield None

    def stopService(self):
        if self._backfill is not None:
            self._backfill.stop()
        return super().stopService()
