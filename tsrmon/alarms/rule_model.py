"""What an alarm rule is: its kinds, metrics and limits, the :class:`Rule`
object (matching machines and sensors, the condition with hysteresis, the
fields of its message) and how a message and a per-minute feature metric
are read.  Parsing ``ALARM.RULES`` into rules is ``rule_parsing.py``.
"""

import fnmatch
import math
import re
import string

METRICS = ("mean", "mean_abs", "rms", "min", "max", "std", "range")
# Issue 17, per second from the moment sums (over the window like the others).
MOMENT_METRICS = ("peak", "crest", "kurtosis", "skewness")
# Issue 17, per minute from the spectra room's features (sensors >= 1 kHz):
# velocity_rms (mm/s, 10-1000 Hz), band:<name> (SENSORS bands), order:<n>
# (n × running speed), and bearing tones bpfo|bpfi|bsf|ftf[:<harmonic>]
# (also written bearing:bpfo[:h]).
FEATURE_METRICS = ("velocity_rms",)
BEARING_DEFECTS = ("bpfo", "bpfi", "bsf", "ftf")
_FEATURE_RE = re.compile(r"^(?:band:(?P<band>[^\s:]{1,64})|order:(?P<order>[1-9][0-9]?)"
                         r"|(?:bearing:)?(?P<defect>bpfo|bpfi|bsf|ftf)(?::(?P<harmonic>[1-9]))?)$")
SEVERITIES = ("info", "warning", "critical")
MIN_WINDOW = 1
MAX_WINDOW = 3600
MAX_DURATION = 86400

# Kinds of rule; ``threshold`` rules come from the configuration, the others
# are the built-ins.
THRESHOLD = "threshold"
DAQ_SILENT = "daq-silent"
FLATLINE = "sensor-flatline"
RATE_DROP = "daq-rate-drop"
BUILTIN_KINDS = (DAQ_SILENT, FLATLINE, RATE_DROP)


class Rule:
    """One alarm rule, immutable after parsing.

    ``scope`` is ``"sensor"`` (one state per machine and sensor) or
    ``"machine"`` (one state per machine: silence and frame rate).
    ``definition`` is a tuple of everything that defines the rule, used to
    tell an unchanged rule on SIGHUP.
    """

    __slots__ = ("name", "kind", "scope", "machines", "sensors", "types", "metric", "window",
                 "condition", "level", "clear", "for_s", "clear_for", "severity", "message",
                 "notify", "extra", "definition", "_machine_re", "_sensor_re", "_type_re")

    def __init__(self, name, kind, machines=("*",), sensors=("*",), types=("*",), metric=None,
                 window=None, condition=None, level=None, clear=None, for_s=0.0, clear_for=0.0,
                 severity="warning", message="", notify=True, extra=None):
        self.name = name
        self.kind = kind
        self.scope = "machine" if kind in (DAQ_SILENT, RATE_DROP) else "sensor"
        self.machines = tuple(machines)
        self.sensors = tuple(sensors)
        self.types = tuple(types)
        self.metric = metric
        self.window = window
        self.condition = condition
        self.level = level
        self.clear = clear
        self.for_s = float(for_s)
        self.clear_for = float(clear_for)
        self.severity = severity
        self.message = message
        self.notify = notify
        self.extra = dict(extra or {})
        self.definition = (name, kind, self.machines, self.sensors, self.types, metric, window,
                           condition, level, clear, self.for_s, self.clear_for, severity,
                           message, notify, tuple(sorted(self.extra.items())))
        self._machine_re = _globs_re(self.machines)
        self._sensor_re = _globs_re(self.sensors)
        self._type_re = _globs_re(self.types)

    def __eq__(self, other):
        return isinstance(other, Rule) and self.definition == other.definition

    def __hash__(self):
        return hash(self.definition)

    def __repr__(self):
        return f"Rule({self.name!r}, {self.kind})"

    def matches_machine(self, machine):
        return self._machine_re.match(machine) is not None

    def matches_sensor(self, sensor, stype=None):
        if self._sensor_re.match(sensor) is None:
            return False
        return stype is None or self._type_re.match(stype) is not None

    # -- the condition --------------------------------------------------------
    def trips(self, value):
        """True when ``value`` meets the alarm condition."""
        if self.condition == "above":
            return value > self.level
        if self.condition == "below":
            return value < self.level
        return value <= self.level  # "within": flat-line, range at most the tolerance

    def clears(self, value):
        """True when ``value`` is past the clear level (hysteresis)."""
        if self.condition == "above":
            return value < self.clear
        if self.condition == "below":
            return value > self.clear
        return value > self.clear

    @property
    def op(self):
        return {"above": ">", "below": "<"}.get(self.condition, "<=")

    def fields(self, machine, sensor, stype, value, level=None, clear=None, **more):
        """The fields a message template sees."""
        fields = {
            "machine": machine, "sensor": sensor or "", "stype": stype or "", "rule": self.name,
            "metric": self.metric or "", "value": value,
            "level": self.level if level is None else level,
            "clear": self.clear if clear is None else clear,
            "severity": self.severity, "window": self.window or 0,
            "window_text": duration_text(self.window or 0), "op": self.op,
            "condition": self.condition or "", "duration": self.for_s,
            "link": "", "usual": 0.0, "at": 0.0,
        }
        fields.update(more)
        return fields


def render(template, fields):
    """``template`` formatted with ``fields``; unknown fields stay as written."""
    return string.Formatter().vformat(template, (), _SafeFields(fields))


class _SafeFields(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def duration_text(seconds):
    seconds = float(seconds)
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _globs_re(patterns):
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def is_feature_metric(metric):
    """True for the per-minute spectra metrics (velocity_rms, band:, order:, tones)."""
    return metric in FEATURE_METRICS or (isinstance(metric, str) and
                                         _FEATURE_RE.match(metric) is not None)


def feature_value(metric, feats):
    """The value of a feature metric in one minute's features (None if absent)."""
    if metric == "velocity_rms":
        v = feats.get("velocity_rms")
        return v if isinstance(v, (int, float)) else None
    m = _FEATURE_RE.match(metric)
    if m is None:
        return None
    try:
        if m.group("band"):
            v = feats["bands"][m.group("band")]
        elif m.group("order"):
            v = feats["orders"][m.group("order")][1]
        else:
            h = int(m.group("harmonic") or 1)
            v = next(a for hh, _f, a in feats["bearing"][m.group("defect")] if hh == h)
    except (KeyError, IndexError, TypeError, StopIteration):
        return None
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None
