"""Simulated DAQ PCs: ``tsrmon simulate`` and the daemon's ``--demo`` feed.

Each simulated machine opens one TCP connection (reconnecting with backoff),
sends the ``name`` handshake, then one DataUpdate per 1/rate seconds holding
``chunk`` samples per sensor, and a FaultDetect every ``fault_every``
seconds (every ``over_every``-th one over threshold).  Signals: vibration is
a few shaft harmonics plus noise with occasional decaying bursts; temperature
drifts slowly around 40 degC.
"""

import argparse
import math
import sys

import numpy as np
from twisted.application import service
from twisted.internet import defer, protocol, task
from twisted.logger import Logger

from tsrmon.client import encode_json, encode_pickle

DEMO_MACHINES = {
    "ShotBlast": ["shot_blast_vib1", "shot_blast_vib2"],
    "AROPump": ["aro_vib1", "aro_vib2"],
    "VacuumPump1": ["pump1_vib", "pump1_temp"],
}


class SignalModel:
    """Sample generator for one machine."""

    def __init__(self, sensors, rate, chunk, seed):
        self.rng = np.random.default_rng(seed)
        self.sensors = sensors  # [(name, type)]
        self.rate = rate
        self.chunk = chunk
        self.fs = rate * chunk  # samples per second per sensor
        self.shaft = 20.0 + 10.0 * self.rng.random()  # Hz
        self.n = 0
        self.burst = 0.0

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


class SimulatedDAQFactory(protocol.ReconnectingClientFactory):
    maxDelay = 10
    initialDelay = 0.5
    noisy = False

    def __init__(self, reactor, machine, sensors, rate, chunk, use_json, fault_every, over_every,
                 seed, token=None):
        self.reactor = reactor
        self.clock = reactor
        self.machine = machine
        self.rate = rate
        self.json = use_json
        self.token = token
        self.fault_every = fault_every
        self.over_every = over_every
        self.model = SignalModel(sensors, rate, chunk, seed)
        self.frames_sent = 0
        self.faults_sent = 0
        self.connections = 0
        self.protocol_instance = None

    def buildProtocol(self, addr):
        self.protocol_instance = SimulatedDAQ(self)
        return self.protocol_instance


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
                 fault_every=10.0, over_every=5, seed=0, over_machines=None):
        self.reactor = reactor
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
            factory = SimulatedDAQFactory(self.reactor, machine, sensors, self.rate, self.chunk,
                                          self.use_json, self.fault_every, over, self.seed + i)
            self.factories.append(factory)
            self.connectors.append(self.reactor.connectTCP(host, port, factory))
        self.log.info("simulating {n} DAQs against {host}:{port}", n=len(self.machines), host=host, port=port)

    def stopService(self):
        super().stopService()
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        for factory in self.factories:
            factory.stopTrying()
        for connector in self.connectors:
            connector.disconnect()
        return defer.succeed(None)

    def frames_sent(self):
        return sum(f.frames_sent for f in self.factories)


class DemoService(SimulatorService):
    """The daemon's ``--demo``: a few deployed-looking machines, in-process,
    over real TCP to the daemon's own DAQ port.  Every machine sends a
    FaultDetect every ``fault_every`` seconds; every second one of the first
    machine (ShotBlast) is over threshold, so one anomaly (and one push)
    shows up about every 30 s."""

    def __init__(self, config, reactor, address_getter, fault_every=15.0, rate=1.0, chunk=30):
        machines = {name: [(s, "TEMP" if s.endswith("temp") else "VIB") for s in sensors]
                    for name, sensors in DEMO_MACHINES.items()}
        super().__init__(reactor, address_getter, machines, rate=rate, chunk=chunk, use_json=False,
                         fault_every=fault_every, over_every=2, over_machines={"ShotBlast"})
        self.config = config


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tsrmon simulate", description="Simulated DAQ PCs.")
    parser.add_argument("--server", default="127.0.0.1:8082", help="HOST:PORT of the DAQ port")
    parser.add_argument("--machines", type=int, default=1)
    parser.add_argument("--sensors", type=int, default=2, help="sensors per machine")
    parser.add_argument("--rate", type=float, default=1.0, help="DataUpdates per second per machine")
    parser.add_argument("--chunk", type=int, default=30, help="samples per sensor per DataUpdate")
    parser.add_argument("--json", action="store_true", help="use the JSON lines encoding")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--fault-every", type=float, default=10.0, help="seconds between FaultDetects (0: none)")
    parser.add_argument("--prefix", default="SimMachine", help="machine name prefix")
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
    return args


def simulator_from_args(reactor, args):
    machines = {f"{args.prefix}{i + 1}": sensors_for(i + 1, args.sensors) for i in range(args.machines)}
    return SimulatorService(reactor, lambda: (args.host, args.port), machines, rate=args.rate,
                            chunk=args.chunk, use_json=args.json, fault_every=args.fault_every)


@defer.inlineCallbacks
def run(reactor, args):
    """Run until ``args.duration`` (or forever); returns the service."""
    sim = simulator_from_args(reactor, args)
    sim.startService()
    if args.duration is not None:
        yield task.deferLater(reactor, args.duration, lambda: None)
    else:
        yield defer.Deferred()  # until interrupted
    yield sim.stopService()
    return sim


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def _run(reactor):
        d = run(reactor, args)

        def report(sim):
            print(f"sent {sim.frames_sent()} frames from {args.machines} machines")
        return d.addCallback(report)

    task.react(_run)


if __name__ == "__main__":
    main()
