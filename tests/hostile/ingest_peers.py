"""Threads that play a well-behaved DAQ and a /healthz prober beside an attack."""

import glob
import os
import re
import socket
import threading
import time

from tests.ingest.helpers import frame


class LegitDaq(threading.Thread):
    """Names itself, then sends a DataUpdate of ``samples`` floats every
    ``period`` seconds until :meth:`stop`; reconnects if it is closed."""

    def __init__(self, port, machine, period=0.1, samples=100, sensor="vib", bind=None):
        super().__init__(daemon=True)
        self.port, self.machine, self.period, self.samples = port, machine, period, samples
        self.sensor, self.bind = sensor, bind
        self.sent = 0
        self.connects = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                with socket.socket() as s:
                    if self.bind:
                        s.bind((self.bind, 0))
                    s.settimeout(5)
                    s.connect(("127.0.0.1", self.port))
                    self.connects += 1
                    s.sendall(frame("name", self.machine))
                    while not self._halt.is_set():
                        s.sendall(frame("DataUpdate", {self.sensor: {"type": "VIB",
                                                                     "data": [0.5] * self.samples}}))
                        self.sent += 1
                        self._halt.wait(self.period)
            except OSError:
                self._halt.wait(0.2)

    def stop(self):
        self._halt.set()
        if self.is_alive():
            self.join(10)


class HealthProbe(threading.Thread):
    """GET /healthz every ``period`` s; keeps (status, seconds) of each."""

    def __init__(self, daemon, period=0.05):
        super().__init__(daemon=True)
        self.d, self.period = daemon, period
        self.results = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                status, _, took = self.d.get("/healthz", timeout=60)
            except OSError as e:
                status, took = repr(e), 60.0
            self.results.append((status, took))
            self._halt.wait(self.period)

    def stop(self):
        self._halt.set()
        if self.is_alive():
            self.join(70)

    @property
    def worst(self):
        return max((t for _, t in self.results), default=0.0)

    @property
    def statuses(self):
        return {s for s, _ in self.results}


def reactor_lag(daemon, cpu=False):
    """The largest timer lateness of the last minute (``/healthz``), seconds;
    with ``cpu``, its CPU share (the reactor thread's own time, which other
    processes on a loaded machine do not inflate; tsrmon/reactorlag.py)."""
    import json
    _, body, _ = daemon.get("/healthz")
    key = "cpu_lag_max_recent_seconds" if cpu else "lag_max_recent_seconds"
    return json.loads(body)["checks"]["reactor"][key]


def lag_samples_over(daemon, seconds, cpu=False):
    """(samples of reactor lag above ``seconds``, all samples) so far, from
    the ``tsrmon_reactor_lag_seconds`` histogram (``seconds`` a bucket bound);
    with ``cpu``, from its CPU share ``tsrmon_reactor_cpu_lag_seconds``."""
    _, body, _ = daemon.get("/metrics")
    text = body.decode()
    name = "tsrmon_reactor_cpu_lag_seconds" if cpu else "tsrmon_reactor_lag_seconds"
    le = re.search(rf'^{name}_bucket{{le="{seconds}"}} (\S+)$', text, re.M)
    total = re.search(rf'^{name}_count (\S+)$', text, re.M)
    return float(total.group(1)) - float(le.group(1)), float(total.group(1))


def wait_for(condition, timeout, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s")


def machine_metric(daemon, key, machine):
    """``tsrmon_machine_<key>_total{machine="..."}`` from /metrics (0 if absent)."""
    _, body, _ = daemon.get("/metrics")
    m = re.search(rf'^tsrmon_machine_{key}(?:_total)?{{machine="{re.escape(machine)}"}} (\S+)$',
                  body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def csv_bytes(daemon, machine):
    """Bytes of raw CSV stored for ``machine`` so far."""
    root = os.path.join(daemon.workdir, daemon.config.get("DATA", {}).get("PATH", "data"), machine)
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(root, "*.csv*")))


def connect(port, bind=None, timeout=5):
    s = socket.socket()
    if bind:
        s.bind((bind, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


MiB = 1024 * 1024
