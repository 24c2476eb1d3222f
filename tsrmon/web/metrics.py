"""``/metrics``: Prometheus text exposition through prometheus_client.

Nothing here is global: each :class:`RestMetrics` owns a private
``CollectorRegistry`` with one custom collector that asks the rooms for
their counters at scrape time, plus the REST request histogram.

Each room hands a flat (or nested, joined with ``_``) dict of numbers; key
``k`` of room ``r`` becomes ``tsrmon_<r>_<k>``, typed by :func:`metric_kind`:

* a dict ``{"buckets": [(le, cumulative count), ...], "sum", "count"}`` is a
  **histogram** (e.g. ``tsrmon_reactor_lag_seconds``);
* a **gauge** (a value that goes up and down) when the value is a bool,
  ``<room>_<key>`` is in :data:`GAUGES`, or the key follows the gauge naming convention:
  it ends in ``_now``, ``_open``, ``_active``, ``_pending``, ``_enabled``,
  ``_timestamp_seconds`` or ``_recent_seconds``, or starts with ``last_``,
  ``alarms_active`` or ``free_``;
* anything else is a **counter** (events counted since start), exposed with
  the ``_total`` suffix: ``tsrmon_ingest_frames_total``.  New keys (another
  room's refusal reasons, say) are counters unless they follow the gauge
  convention, so a room adding a level rather than a count names it so or
  adds it to :data:`GAUGES`.

Every family carries HELP text: the room's words from :data:`HELP` when it
has some, else ``<room>: <key>`` with its kind.
"""

import math
import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
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


# "<room>_<key>" of room keys that are levels, not counts (see the module
# docstring for the naming convention that covers keys not listed here).
GAUGES = frozenset({
    "ingest_open_connections", "ingest_buffered_bytes",
    "store_databases", "store_queued_rows", "store_congested", "store_broken_databases",
    "store_failing_databases", "store_spool_rows",
    "raw_enabled", "raw_paused", "raw_failing", "raw_files_open", "raw_buffered_frames",
    "raw_buffered_samples",  # a level, not a count
    "raw_files_degraded",
    "stats_pending_keys",
    "live_sessions", "live_clients_polling", "live_clients_websocket", "live_namespaces",
    "live_namespace_clients", "live_subscriptions", "live_cached_updates",
    "notify_in_flight", "notify_held", "notify_sent_last_hour", "notify_webhooks",
    "alarms_alarms_unacknowledged", "alarms_alarm_rules",
})
_GAUGE_SUFFIXES = ("_now", "_open", "_active", "_pending", "_enabled", "_timestamp_seconds",
                   "_recent_seconds")
_GAUGE_PREFIXES = ("last_", "alarms_active", "free_")

# HELP text of well-known keys ("room_key"); the rest get a generic one.
HELP = {
    "ingest_frames": "DAQ frames decoded",
    "ingest_bytes": "Bytes read from DAQ connections",
    "ingest_connections": "DAQ connections accepted",
    "ingest_refused_connections": "DAQ connections refused (allow-list, caps)",
    "ingest_refused_names": "DAQ name frames refused (name, token, DAQ.MACHINES)",
    "ingest_refused_frames": "DAQ frames refused",
    "ingest_open_connections": "DAQ connections open now",
    "store_rows_written": "Aggregate rows written to SQLite",
    "store_queued_rows": "Rows waiting to be written to SQLite",
    "raw_rows_written": "Raw CSV rows written",
    "stats_samples": "Samples reduced into statistics",
    "stats_late_samples": "Samples stamped by the DAQ (late data) merged into statistics",
    "live_sessions": "Live (Engine.IO) sessions open now",
    "live_events_emitted": "Socket.IO events sent to live clients",
    "notify_faults": "Faults over threshold handed to the notifier",
    "clock_jumps": "Wall-clock steps detected and absorbed",
    "reactor_lag_seconds": "How late reactor timers fire (seconds past their due time)",
    "reactor_lag_max_recent_seconds": "Largest reactor timer lateness of the last minute",
    "reactor_cpu_lag_seconds": "The reactor thread's own CPU share of each timer's lateness (seconds)",
    "reactor_cpu_lag_max_recent_seconds": "Largest CPU share of reactor timer lateness of the last minute",
    "live_tick_seconds": "Live tick, start to every client's bytes in the kernel (seconds)",
    "live_tick_cpu_seconds": "The reactor thread's CPU time in each live tick (seconds)",
}


def metric_kind(room, key, value):
    """``"histogram"``, ``"gauge"`` or ``"counter"`` for a room's key and value."""
    if isinstance(value, dict):
        return "histogram"
    if isinstance(value, bool) or f"{room}_{key}" in GAUGES:
        return "gauge"
    if key.endswith(_GAUGE_SUFFIXES) or key.startswith(_GAUGE_PREFIXES):
        return "gauge"
    return "counter"


def _is_histogram(value):
    return (isinstance(value, dict) and isinstance(value.get("buckets"), (list, tuple))
            and "sum" in value and "count" in value)


def metric_name(*parts):
    return _BAD.sub("_", "_".join(p for p in parts if p)).strip("_").lower()


def _flatten(values, prefix=""):
    """{"a": 1, "b": {"c": 2}} → [("a", 1), ("b_c", 2)] (histogram dicts stay whole)."""
    out = []
    for key, value in values.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, dict) and not _is_histogram(value):
            out.extend(_flatten(value, name))
        else:
            out.append((name, value))
    return out


class _RoomCollector:
    """Asks every room for its flat counters at scrape time."""

    log = Logger()

    def __init__(self, hub, counters):
        self.hub = hub
        self.counters = {} if counters is None else counters

    def describe(self):
        return []  # values are dynamic; skip the registration-time collect

    def collect(self):
        for room, read in sorted(self.counters.items()):
            try:
                values = read() or {}
            except Exception:
                self.log.failure("reading the {room} counters for /metrics", room=room)
                continue
            seen = set()
            for key, value in sorted(_flatten(values), key=lambda kv: kv[0]):
                key = metric_name(key)
                fam = _family(room, key, value)
                if fam is not None and fam.name not in seen:
                    seen.add(fam.name)
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


def _family(room, key, value):
    """One metric family of a room's value, or None for what is not a number."""
    kind = metric_kind(room, key, value)
    name = metric_name("tsrmon", room, key)
    doc = HELP.get(metric_name(room, key))
    if kind == "histogram":
        if not _is_histogram(value):
            return None
        try:
            buckets = [(_le(le), float(n)) for le, n in value["buckets"]]
            total = float(value["sum"])
        except (TypeError, ValueError):
            return None
        if not buckets or buckets[-1][0] != "+Inf":
            buckets.append(("+Inf", float(value["count"])))
        fam = HistogramMetricFamily(name, doc or f"{room}: {key} (histogram)")
        fam.add_metric([], buckets, total)
        return fam
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if kind == "gauge":
        fam = GaugeMetricFamily(name, doc or f"{room}: {key} (current value)")
    else:
        if name.endswith("_total"):
            name = name[:-len("_total")]
        fam = CounterMetricFamily(name, doc or f"{room}: {key} (count since start)")
    fam.add_metric([], float(value))
    return fam


def _le(bound):
    bound = float(bound)
    return "+Inf" if math.isinf(bound) else repr(bound)


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
