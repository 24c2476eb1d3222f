"""Shared pieces of the ingest tests: a real MachineHub with recording rooms,
a listener on 127.0.0.1 port 0, and blocking senders run in a thread."""

import pickle
import socket
import time

import numpy as np

from twisted.internet import defer, reactor, task, threads

from tsrmon.cluster.proxy import TrustedProxies
from tsrmon.config import build_config
from tsrmon.hub.machines import MachineHub
from tsrmon.ingest.listener import DAQListenerService


class Recorder:
    """Every room at once: records what the hub hands it."""

    def __init__(self):
        self.added = []  # (machine, sensor, stype, values, t, late): runs of frames come whole
        self.chunks = []  # the same, one entry per frame and sensor (the spectra side)
        self.raw = []
        self.faults = []
        self.anomalies = []
        self.notified = []
        self.status = []

    # StatsSink
    def add(self, machine, sensor, stype, values, t):
        self.added.append((machine, sensor, stype, list(values), t, False))

    def add_late(self, machine, sensor, stype, values, t):
        self.added.append((machine, sensor, stype, list(values), t, True))

    # the spectra room's side: one chunk per frame and sensor
    def data(self, machine, sensor, stype, values, t, late=False, frames=1):
        # A run of frames comes whole; recorded frame by frame.
        for chunk in (np.reshape(values, (frames, -1)) if frames > 1 else (values,)):
            self.chunks.append((machine, sensor, stype, list(chunk), t, late))

    def per_sensor(self, entries):
        """``{sensor: every sample}`` of ``added`` or ``chunks``, in order."""
        out = {}
        for e in entries:
            out.setdefault(e[1], []).extend(e[3])
        return out

    # RawSink
    def write(self, machine, sensor, values, t):
        self.raw.append((machine, sensor, len(values), t))

    # FaultSink / NotifySink
    def fault(self, machine, score, threshold, t):
        self.faults.append((machine, score, threshold, t))

    # LiveSink
    def machine_status(self, machine):
        self.status.append((machine.name, machine.connected))

    def anomaly(self, machine, score, threshold, t):
        self.anomalies.append((machine, score, threshold, t))

    def second(self, machine, sensor, stype, t, sums):
        pass


class Notifier:
    def __init__(self):
        self.faults = []

    def fault(self, machine, score, threshold, t):
        self.faults.append((machine, score, threshold, t))


def make_config(tmp_path, daq=None, server=None):
    raw = {"SERVER": {"TCP_ENDPOINT": "tcp:0:interface=127.0.0.1", **(server or {})},
           "DAQ": daq or {}}
    return build_config(raw, None, str(tmp_path))


def make_hub(config, catalog=None):
    rec = Recorder()
    hub = MachineHub(config, reactor, stats=rec, raw=rec, faults=rec, live=rec, notifier=Notifier(), spectra=rec,
                     catalog=catalog)
    return hub, rec


def start_listener(tmp_path, daq=None, server=None, catalog=None):
    config = make_config(tmp_path, daq, server)
    hub, rec = make_hub(config, catalog)
    # As the daemon builds it: every connection through the PROXY wrapper.
    svc = DAQListenerService(config, hub, reactor, proxies=TrustedProxies.from_config(config))
    svc.startService()
    return svc, hub, rec


def port_of(svc):
    return svc.port.getHost().port


def send_blocking(port, pieces, host="127.0.0.1", bind=None, linger=0.0):
    """Connect, send every piece with its own send(), close; errors from a
    server that closed first are expected and ignored."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if bind:
            sock.bind((bind, 0))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((host, port))
        for piece in pieces:
            sock.sendall(piece)
        if linger:
            time.sleep(linger)
    except OSError:
        pass
    finally:
        sock.close()


def send(port, pieces, **kw):
    return threads.deferToThread(send_blocking, port, list(pieces), **kw)


@defer.inlineCallbacks
def wait_until(condition, timeout=10.0, interval=0.01):
    """Poll ``condition`` on the reactor; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        yield task.deferLater(reactor, interval, lambda: None)


@defer.inlineCallbacks
def settle(svc, accepted):
    """Wait until ``accepted`` connections were seen and all are closed."""
    counters = svc.factory.counters
    yield wait_until(lambda: counters["connections"] + counters["refused_connections"] >= accepted
                     and not svc.factory.connections)


def frame(event, data, protocol=4, terminator=b"\x5c\x6f"):
    return pickle.dumps((event, data), protocol=protocol) + terminator


def pieces_of(data, mode, rng=None):
    if mode == "whole":
        return [data]
    if mode == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    out = []
    i = 0
    while i < len(data):
        k = rng.randint(1, 4096)
        out.append(data[i:i + k])
        i += k
    return out


def per_frame(event):
    """A decoded event as frames: a run of frames of one shape (``frames`` >
    1, arrays holding every frame's samples in turn) split back into one
    DataFrame per frame, with float lists; anything else as it is."""
    import numpy as np

    from tsrmon.hub.records import DataFrame, SensorSamples
    if type(event) is not DataFrame or event.frames == 1:
        return [event]
    k = event.frames
    return [event._replace(frames=1, sensors=[
        SensorSamples(n, t, [float(x) for x in np.asarray(v).reshape(k, -1)[i]]) for n, t, v in event.sensors])
        for i in range(k)]

