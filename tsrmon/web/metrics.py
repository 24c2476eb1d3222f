"""``/metrics``: Prometheus text exposition through prometheus_client.

Nothing here is global: each :class:`RestMetrics` owns a private
``CollectorRegistry`` with one custom collector that asks the rooms for
their counters at scrape time, plus the REST request histogram.
"""

import math
import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, UnknownMetricFamily
from twisted.logger import Logger

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

_BAD = re.compile(r"[^a-zA-Z0-9_]")

# Hub ``Machine.status()`` keys exported as per-machine counters.
MACHINE_COUNTERS = (
    ("frames", "Frames received (DataUpdate and FaultDetect)"),
    ("samples", "Samples accepted"),
    ("faults", "FaultDetect frames"),
    ("bytes", "Bytes received"),
    ("refused_frames", "Frames refused (undecodable, hostile or malformed)"),
    ("dropped_nonfinite", "NaN/inf samples dropped"),
    ("dropped_sensors", "Sensors dropped by DAQ.MAX_SENSORS"),
    ("dropped_bytes", "Bytes dropped by backpressure"),
    ("paused_seconds", "Seconds reading was paused for backpressure"),
    ("connects", "DAQ connections accepted"),
    ("takeovers", "Reconnects that replaced a live connection"),
)


def metric_name(*parts):
    return _BAD.sub("_", "_".join(p for p in parts if p)).strip("_").lower()


def _flatten(values, prefix=""):
    """{"a": 1, "b": {"c": 2}} → [("a", 1), ("b_c", 2)]."""
    out = []
    for key, value in values.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.extend(_flatten(value, name))
        else:
            out.append((name, value))
    return out


class _RoomCollector:
    """Asks every room for its flat counters at scrape time."""

    log = Logger()

    def __init__(self, hub, counters):
        self.hub = hub
        self.counters = counters or {}

    def describe(self):
        return []  # values are dynamic; skip the registration-time collect

    def collect(self):
        for room, read in sorted(self.counters.items()):
            try:
                values = read() or {}
            except Exception:
                self.log.failure("reading the {room} counters for /metrics", room=room)
                continue
            for key, value in sorted(_flatten(values)):
                if isinstance(value, bool):
                    value = float(value)
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    continue
                fam = UnknownMetricFamily(metric_name("tsrmon", room, key),
                                          f"{room} counter {key}")
                fam.add_metric([], float(value))
                yield fam
        machines = sorted(self.hub.machines.values(), key=lambda m: m.name) if self.hub else []
        statuses = [m.status() for m in machines]
        for key, doc in MACHINE_COUNTERS:
            fam = CounterMetricFamily(f"tsrmon_machine_{key}", doc, labels=["machine"])
            for st in statuses:
                v = st.get(key)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    fam.add_metric([st["machine"]], float(v))
            yield fam
        up = GaugeMetricFamily("tsrmon_machine_connected", "1 while the machine's DAQ is connected",
                               labels=["machine"])
        last = GaugeMetricFamily("tsrmon_machine_last_frame_timestamp_seconds",
                                 "Time of the last frame (epoch seconds)", labels=["machine"])
        sensors = GaugeMetricFamily("tsrmon_machine_sensors", "Sensors seen", labels=["machine"])
        for st in statuses:
            up.add_metric([st["machine"]], 1.0 if st.get("connected") else 0.0)
            if isinstance(st.get("last_frame"), (int, float)):
                last.add_metric([st["machine"]], float(st["last_frame"]))
            sensors.add_metric([st["machine"]], float(len(st.get("sensors") or ())))
        yield up
        yield last
        yield sensors


class RestMetrics:
    def __init__(self, hub, counters):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_RoomCollector(hub, counters))
        self.requests = Counter("tsrmon_http_requests", "HTTP requests answered",
                                ["route", "code"], registry=self.registry)
        self.latency = Histogram("tsrmon_http_request_seconds", "HTTP response time", ["route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                 registry=self.registry)

    def observe(self, route, code, seconds):
        self.requests.labels(route, str(code)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self):
        return generate_latest(self.registry)
