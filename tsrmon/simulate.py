"""Simulated DAQ PCs: ``tsrmon simulate`` and the daemon's ``--demo`` feed.

Each simulated machine opens one TCP connection (reconnecting with backoff),
sends the ``name`` handshake, then one DataUpdate per 1/rate seconds holding
``chunk`` samples per sensor, and a FaultDetect every ``fault_every``
seconds (every ``over_every``-th one over threshold).  Signals: vibration is
a few shaft harmonics plus noise with occasional decaying bursts; temperature
drifts slowly around 40 degC.

Full-rate vibration (issue 17): ``--full-rate HZ`` makes every vibration
sensor send ``HZ / --rate`` samples per frame of a machine signal from
``tsrmon.analytics.signals`` (1× running speed and noise, plus the faults of
``--fault``: unbalance 1×, misalignment 2×/3×, an outer-race defect striking
at BPFO, inner race, impulses), so spectra, velocity RMS, orders and bearing
tones have something to show.  The JSON encoding adds the per-sensor
``rate``, ``unit`` and ``rpm`` fields.  The ``--demo`` daemon runs one such
machine (``DEMO_FULL_RATE``) beside the deployed-looking ones; its metadata
comes from ``DEMO_SENSORS`` (the pickle encoding carries none).

The DAQ link carries no acknowledgements, so all a simulator can know is
whether it connected and whether the server closed the connection (which is
how the daemon refuses a machine name or a token); a refused frame shows only
in the daemon's log and its ``refused_frames`` counters.
"""

import argparse
import math
import signal
import sys

import numpy as np
from twisted.application import service
from twisted.internet import defer, protocol, task
from twisted.logger import Logger

from tsrmon.analytics import signals as _signals
from tsrmon.client import encode_json, encode_pickle

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


class FaultModel:
    """A full-rate vibration signal (g) with faults: the sum of
    :class:`tsrmon.analytics.signals.FaultSignal` s of each kind (the first
    carries the healthy 1× and the noise), the 1× slowly breathing over ten
    minutes so velocity RMS moves across the ISO zones' chart."""

    # Fault levels (g): unbalance puts velocity RMS near the ISO 10816-3
    # B/C boundary of a medium machine; an outer-race defect rings a 2 kHz
    # resonance at BPFO.
    LEVELS = {"unbalance": 0.06, "misalignment": 0.03, "outer_race": 0.4, "inner_race": 0.4,
              "impulses": 0.5, "healthy": 0.0}

    def __init__(self, rate, rpm=1480.0, faults=("unbalance",), seed=0):
        self.rate = float(rate)
        self.rpm = float(rpm)
        kinds = list(faults) or ["healthy"]
        self.parts = []
        for i, kind in enumerate(kinds):
            first = i == 0
            self.parts.append(_signals.FaultSignal(
                rate, kind, rpm=rpm, level=self.LEVELS[kind], base=0.02 if first else 0.0,
                sigma=0.01 if first else 0.0, resonance=2000.0, rep_rate=50.0, seed=seed + i))
        self.n = 0

    def read(self, n):
        x = np.zeros(n)
        t = self.n / self.rate
        breathe = 1.0 + 0.25 * math.sin(2 * math.pi * t / 600.0)
        for part in self.parts:
            chunk = part.read(n)
            x += chunk * breathe if part.kind == "unbalance" else chunk
        self.n += n
        return x


class SignalModel:
    """Sample generator for one machine."""

    def __init__(self, sensors, rate, chunk, seed, full_rate=None, rpm=1480.0, faults=(),
                 meta_fields=False):
        self.rng = np.random.default_rng(seed)
        self.sensors = sensors  # [(name, type)]
        self.rate = rate
        self.chunk = chunk
        self.fs = rate * chunk  # samples per second per sensor
        self.shaft = 20.0 + 10.0 * self.rng.random()  # Hz
        self.n = 0
        self.burst = 0.0
        # Issue 17: vibration sensors at full rate (samples/s), each its own signal.
        self.full_rate = full_rate
        self.rpm = rpm
        self.meta_fields = meta_fields  # JSON: per-sensor rate/unit/rpm
        self.full = {}
        if full_rate:
            self.full_chunk = max(int(round(full_rate / rate)), 1)
            for i, (name, stype) in enumerate(sensors):
                if stype != "TEMP":
                    self.full[name] = FaultModel(full_rate, rpm, faults, seed=seed * 100 + i)

    def frame(self):
        """``{sensor: {"type": ..., "data": [...]}}`` for the next chunk."""
        rng = self.rng
        t = (self.n + np.arange(self.chunk)) / self.fs
        self.n += self.chunk
        if self.burst < 0.05 and rng.random() < 0.02:
            self.burst = 1.5 + rng.random()
        envelope = self.burst * np.exp(-np.arange(self.chunk) / max(self.chunk / 3.0, 1.0))
        self.burst *= math.exp(-1.0 / max(self.rate, 1e-3))
        out = {}
        for i, (name, stype) in enumerate(self.sensors):
            model = self.full.get(name)
            if model is not None:
                entry = {"type": stype, "data": model.read(self.full_chunk).tolist()}
                if self.meta_fields:
                    entry.update(rate=float(self.full_rate), unit="g", rpm=float(self.rpm))
                out[name] = entry
                continue
            if stype == "TEMP":
                base = 40.0 + 1.5 * math.sin(2 * math.pi * t[0] / 600.0 + i)
                values = base + rng.normal(0.0, 0.1, self.chunk)
            else:
                w = 2 * math.pi * self.shaft * t
                values = (0.3 * np.sin(w + i) + 0.15 * np.sin(2 * w + 0.5 * i) + 0.08 * np.sin(3 * w)
                          + rng.normal(0.0, 0.05, self.chunk)
                          + envelope * rng.normal(0.0, 1.0, self.chunk))
            out[name] = {"type": stype, "data": values.tolist()}
        return out


class SimulatedDAQ(protocol.Protocol):
    log = Logger()

    def __init__(self, factory):
        self.factory = factory
        self.loops = []

    def connectionMade(self):
        f = self.factory
        f.resetDelay()
        f.connections += 1
        self.write("name", f.machine)
        frames = task.LoopingCall(self.send_data)
        frames.clock = f.reactor
        frames.start(1.0 / f.rate, now=False).addErrback(self._loop_failed)
        self.loops.append(frames)
        if f.fault_every:
            faults = task.LoopingCall(self.send_fault)
            faults.clock = f.reactor
            faults.start(f.fault_every, now=False).addErrback(self._loop_failed)
            self.loops.append(faults)

    def _loop_failed(self, failure):
        self.log.failure("simulated DAQ {machine}", failure, machine=self.factory.machine)

    def write(self, event, data):
        f = self.factory
        if f.json:
            self.transport.write(encode_json(event, data, token=f.token if event == "name" else None))
        else:
            self.transport.write(encode_pickle(event, data))
        f.frames_sent += 1

    def send_data(self):
        self.write("DataUpdate", self.factory.model.frame())

    def send_fault(self):
        f = self.factory
        f.faults_sent += 1
        threshold = 5
        if f.over_every and f.faults_sent % f.over_every == 0:
            score = threshold + 1 + int(f.model.rng.integers(0, 5))
        else:
            score = int(f.model.rng.integers(0, threshold))
        self.write("FaultDetect", {"score": score, "threshold": threshold})

    def connectionLost(self, reason):
        for loop in self.loops:
            if loop.running:
                loop.stop()
        self.loops = []
        f = self.factory
        f.connected = False
        if not f.stopping:
            # We did not close it: the server did (a refused name or token,
            # a refused handshake, a restart) or the network failed.
            f.closed_by_server += 1
            f.last_problem = "the server closed the connection"


class SimulatedDAQFactory(protocol.ReconnectingClientFactory):
    maxDelay = 10
    initialDelay = 0.5
    noisy = False

    def __init__(self, reactor, machine, sensors, rate, chunk, use_json, fault_every, over_every,
                 seed, token=None, full_rate=None, rpm=1480.0, faults=()):
        self.reactor = reactor
        self.clock = reactor
        self.machine = machine
        self.rate = rate
        self.json = use_json
        self.token = token
        self.fault_every = fault_every
        self.over_every = over_every
        self.model = SignalModel(sensors, rate, chunk, seed, full_rate=full_rate, rpm=rpm,
                                 faults=faults, meta_fields=use_json)
        self.frames_sent = 0
        self.faults_sent = 0
        self.connections = 0
        self.connected = False
        self.failed_attempts = 0  # connection attempts that never connected
        self.closed_by_server = 0  # connections that ended without our asking
        self.last_problem = None
        self.stopping = False
        self.protocol_instance = None

    def buildProtocol(self, addr):
        self.protocol_instance = SimulatedDAQ(self)
        self.connected = True
        return self.protocol_instance

    def clientConnectionFailed(self, connector, reason):
        self.failed_attempts += 1
        self.last_problem = f"could not connect: {reason.getErrorMessage()}"
        super().clientConnectionFailed(connector, reason)

    @property
    def reconnects(self):
        """Connections after the first one."""
        return max(self.connections - 1, 0)

    def trouble(self):
        """Why this machine did not stream cleanly, or None."""
        if self.connections == 0:
            return self.last_problem or "never connected"
        if self.closed_by_server:
            n = self.closed_by_server
            return (f"the server closed the connection {n} time{'s' if n != 1 else ''} "
                    f"(a refused machine name or token? see the daemon's log)")
        return None


def sensors_for(machine_index, count):
    """``count`` sensors: VIB ones, and a TEMP one when there are several."""
    names = []
    for j in range(count):
        if count > 1 and j == count - 1:
            names.append((f"m{machine_index}_temp", "TEMP"))
        else:
            names.append((f"m{machine_index}_vib{j + 1}", "VIB"))
    return names


class SimulatorService(service.Service):
    """Simulated DAQs connecting to ``address_getter()`` once it returns (host, port)."""

    log = Logger()

    def __init__(self, reactor, address_getter, machines, rate=1.0, chunk=30, use_json=False,
                 fault_every=10.0, over_every=5, seed=0, over_machines=None, token=None,
                 full_rate=None):
        self.reactor = reactor
        # Issue 17: {machine: {"rate": samples/s, "rpm", "faults": (...)}} of the
        # machines whose vibration sensors send full-rate signals.
        self.full_rate = full_rate or {}
        self.token = token
        self.address_getter = address_getter
        self.machines = machines  # {name: [(sensor, type)]}
        self.rate = rate
        self.chunk = chunk
        self.use_json = use_json
        self.fault_every = fault_every
        self.over_every = over_every
        self.seed = seed
        self.over_machines = over_machines  # machines whose faults may go over threshold (None: all)
        self.factories = []
        self.connectors = []
        self._poll = None

    def startService(self):
        super().startService()
        self._try_connect()

    def _try_connect(self):
        self._poll = None
        address = self.address_getter()
        if address is None:
            self._poll = self.reactor.callLater(0.1, self._try_connect)
            return
        host, port = address
        for i, (machine, sensors) in enumerate(self.machines.items()):
            over = self.over_every if self.over_machines is None or machine in self.over_machines else 0
            full = self.full_rate.get(machine) or {}
            factory = SimulatedDAQFactory(self.reactor, machine, sensors, self.rate, self.chunk,
                                          self.use_json, self.fault_every, over, self.seed + i,
                                          token=self.token, full_rate=full.get("rate"),
                                          rpm=full.get("rpm", 1480.0),
                                          faults=full.get("faults", ()))
            self.factories.append(factory)
            self.connectors.append(self.reactor.connectTCP(host, port, factory))
        self.log.info("simulating {n} DAQs against {host}:{port}", n=len(self.machines), host=host, port=port)

    def stopService(self):
        super().stopService()
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        for factory in self.factories:
            factory.stopping = True
            factory.stopTrying()
        for connector in self.connectors:
            connector.disconnect()
        return defer.succeed(None)

    def frames_sent(self):
        return sum(f.frames_sent for f in self.factories)

    def progress_line(self, elapsed):
        """One line: frames sent, connection state and reconnects per machine."""
        parts = []
        for f in self.factories:
            state = "connected" if f.connected else ("retrying" if f.failed_attempts or f.connections else "connecting")
            parts.append(f"{f.machine} {f.frames_sent} frames, {state}, {f.reconnects} reconnects"
                         + (f", {f.failed_attempts} failed attempts" if f.failed_attempts else ""))
        if not parts:
            parts.append("waiting for the server address")
        return f"[{elapsed:.1f} s] sent {self.frames_sent()} frames: " + "; ".join(parts)

    def troubles(self):
        """``[(machine, reason)]`` of machines that could not stream cleanly."""
        return [(f.machine, f.trouble()) for f in self.factories if f.trouble() is not None]


def history_day(sensors, minute_starts, rng, per_minute):
    """One chunk of ``per_minute`` samples per sensor for each minute start:
    ``{sensor: array (len(minute_starts), per_minute)}``.  Vibration follows a day shift
    (louder 06:00–22:00 local-ish, by UTC hour + 9) with noise and a few
    bursts; temperature a daily wave around 40 degC."""
    hours = ((np.asarray(minute_starts) / 3600.0) + 9.0) % 24.0  # the demo's machines are in Korea
    n = len(minute_starts)
    shift = 0.6 + 0.4 * (np.clip(np.sin(np.pi * (hours - 5.0) / 17.0), 0.0, None))
    out = {}
    for i, (name, stype) in enumerate(sensors):
        if stype == "TEMP":
            base = 40.0 + 3.0 * np.sin(2 * np.pi * (hours - 9.0) / 24.0) + 0.3 * i
            out[name] = base[:, None] + rng.normal(0.0, 0.2, (n, per_minute))
        else:
            amp = (0.35 + 0.05 * i) * shift * (1.0 + 0.1 * rng.standard_normal(n))
            bursts = rng.random(n) < 0.003
            amp = np.where(bursts, amp * (3.0 + rng.random(n)), amp)
            phase = rng.uniform(0, 2 * np.pi, (n, per_minute))
            out[name] = amp[:, None] * np.sin(phase) + rng.normal(0.0, 0.03, (n, per_minute))
    return out


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


HELP = """Simulated DAQ PCs streaming to a running tsrmon.

Progress (frames sent, connection state and reconnects per machine) goes to
stderr every --progress seconds; a summary goes to stdout at the end (after
--duration, or on Ctrl-C).

The DAQ link carries no acknowledgements: "sent" counts frames written to
the socket, not frames the server accepted.  A refused frame shows only in
the daemon's log (and its refused_frames counters); a refused machine name or
token shows here as the server closing the connection.

Exit status: 0 when every machine connected and kept its connection, 1 when a
machine could not connect or the server closed a connection, 2 on bad
arguments."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tsrmon simulate", description=HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:8082", help="HOST:PORT of the DAQ port")
    parser.add_argument("--machines", type=int, default=1)
    parser.add_argument("--sensors", type=int, default=2, help="sensors per machine")
    parser.add_argument("--rate", type=float, default=1.0, help="DataUpdates per second per machine")
    parser.add_argument("--chunk", type=int, default=30, help="samples per sensor per DataUpdate")
    parser.add_argument("--json", action="store_true", help="use the JSON lines encoding")
    parser.add_argument("--token", default=None,
                        help="DAQ.TOKENS token sent in the name frame (implies --json)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--fault-every", type=float, default=10.0, help="seconds between FaultDetects (0: none)")
    parser.add_argument("--prefix", default="SimMachine", help="machine name prefix")
    parser.add_argument("--full-rate", type=float, default=None, metavar="HZ",
                        help="vibration sensors send full-rate signals of HZ samples/s "
                             "(HZ / --rate samples per frame; e.g. 25600 or 8192)")
    parser.add_argument("--fault", action="append", choices=_signals.KINDS, default=None,
                        help="fault in the full-rate signal (repeatable; default unbalance)")
    parser.add_argument("--rpm", type=float, default=1480.0, help="running speed of the full-rate signal")
    parser.add_argument("--progress", type=float, default=5.0,
                        help="seconds between progress lines on stderr (0: none)")
    args = parser.parse_args(argv)
    host, sep, port = args.server.rpartition(":")
    if not sep or not port.isdigit():
        parser.error("--server must be HOST:PORT")
    args.host = host.strip("[]") or "127.0.0.1"
    args.port = int(port)
    for name in ("machines", "sensors", "chunk"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.rate <= 0:
        parser.error("--rate must be positive")
    if args.full_rate is not None and args.full_rate <= 0:
        parser.error("--full-rate must be positive")
    if args.rpm <= 0:
        parser.error("--rpm must be positive")
    if args.fault and args.full_rate is None:
        parser.error("--fault needs --full-rate")
    if args.progress < 0:
        parser.error("--progress must not be negative")
    if args.token is not None:
        args.json = True  # only the JSON name frame carries a token
    return args


def simulator_from_args(reactor, args):
    machines = {f"{args.prefix}{i + 1}": sensors_for(i + 1, args.sensors) for i in range(args.machines)}
    full = None
    if getattr(args, "full_rate", None):
        spec = {"rate": args.full_rate, "rpm": args.rpm, "faults": tuple(args.fault or ("unbalance",))}
        full = {m: spec for m in machines}
    return SimulatorService(reactor, lambda: (args.host, args.port), machines, rate=args.rate,
                            chunk=args.chunk, use_json=args.json, fault_every=args.fault_every,
                            token=getattr(args, "token", None), full_rate=full)


@defer.inlineCallbacks
def run(reactor, args, stop=None, out=None):
    """Run until ``args.duration``, or until ``stop`` (a Deferred) fires, or
    forever; returns the service.  Progress lines go to ``out``."""
    sim = simulator_from_args(reactor, args)
    started = reactor.seconds()
    progress = None
    if out is not None and getattr(args, "progress", 0):
        def report():
            out.write(sim.progress_line(reactor.seconds() - started) + "\n")
            out.flush()
        progress = task.LoopingCall(report)
        progress.clock = reactor
        progress.start(args.progress, now=False)
    sim.startService()
    waits = [stop if stop is not None else defer.Deferred()]
    if args.duration is not None:
        waits.append(task.deferLater(reactor, args.duration, lambda: None))
    yield defer.DeferredList(waits, fireOnOneCallback=True, consumeErrors=True)
    for d in waits:
        if not d.called:
            d.cancel()
    if progress is not None and progress.running:
        progress.stop()
    yield sim.stopService()
    return sim


def summary(sim, args):
    """(exit status, lines for stdout)."""
    lines = [f"sent {sim.frames_sent()} frames from {args.machines} machines "
             f"(written to the socket; the link has no acknowledgements)"]
    for f in sim.factories:
        lines.append(f"  {f.machine}: {f.frames_sent} frames, {f.connections} connections, "
                     f"{f.reconnects} reconnects")
    troubles = sim.troubles()
    if len(sim.factories) < args.machines:
        troubles.append(("*", f"never got to connect to {args.host}:{args.port}"))
    for machine, why in troubles:
        lines.append(f"tsrmon simulate: {machine}: {why}")
    return (1 if troubles else 0), lines


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def _run(reactor):
        interrupted = defer.Deferred()

        def on_signal(*_):
            reactor.callFromThread(lambda: interrupted.called or interrupted.callback(None))

        # Ctrl-C / SIGTERM end the run with the summary and its exit status.
        reactor.callWhenRunning(signal.signal, signal.SIGINT, on_signal)
        reactor.callWhenRunning(signal.signal, signal.SIGTERM, on_signal)
        d = run(reactor, args, stop=interrupted, out=sys.stderr)

        def report(sim):
            status, lines = summary(sim, args)
            for line in lines:
                print(line, file=sys.stdout if not line.startswith("tsrmon simulate:") else sys.stderr)
            sys.stdout.flush()
            if status:
                raise SystemExit(status)
        return d.addCallback(report)

    task.react(_run)


if __name__ == "__main__":
    main()
