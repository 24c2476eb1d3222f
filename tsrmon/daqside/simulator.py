"""Simulated DAQ PCs over real TCP (Twisted): ``tsrmon simulate`` and the demo.

Each simulated machine opens one TCP connection (reconnecting with backoff),
sends the ``name`` handshake, then one DataUpdate per 1/rate seconds holding
``chunk`` samples per sensor (from :mod:`tsrmon.daqside.waveforms`), and a
FaultDetect every ``fault_every`` seconds (every ``over_every``-th one over
threshold).  Frames are encoded by :mod:`tsrmon.daqside.wire`, as the real
client writes them; the JSON encoding adds the per-sensor ``rate``, ``unit``
and ``rpm`` fields of full-rate sensors.

The DAQ link carries no acknowledgements, so all a simulator can know is
whether it connected and whether the server closed the connection (which is
how the daemon refuses a machine name or a token); a refused frame shows only
in the daemon's log and its ``refused_frames`` counters.
"""

from twisted.application import service
from twisted.internet import defer, protocol, task
from twisted.logger import Logger

from tsrmon.daqside.waveforms import SignalModel
from tsrmon.daqside.wire import encode_json, encode_pickle


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
