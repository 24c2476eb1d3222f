"""Parsing alarm rules: what ``ALARM.RULES`` may say, checked once at startup and on SIGHUP.

An entry of ``ALARM.RULES`` is one of three things (see ``docs/alarms.md``):

* a threshold rule: a metric of a sensor over a window, above or below a
  level, with a clear level (hysteresis) and durations;
* a preset (``preset: iso10816-3``): velocity RMS zone boundaries for a
  machine group and foundation, expanded into one threshold rule per zone;
* a built-in override (``builtin: daq-silent`` ...): changes the levels of a
  built-in rule or disables it (``enabled: false``).

Built-in rules are on by default; :func:`parse_rules` returns them with the
configured rules.  Every problem is a :class:`tsrmon.config.checks.ConfigError`
naming the entry (``ALARM.RULES[2] (pump-vibration)``) and what is wrong.
"""

import math
import re
import string

from tsrmon.alarms.rule_model import (BUILTIN_KINDS, DAQ_SILENT, FEATURE_METRICS, FLATLINE,
                                      MAX_DURATION, MAX_WINDOW, METRICS, MIN_WINDOW, MOMENT_METRICS,
                                      RATE_DROP, SEVERITIES, THRESHOLD, Rule, duration_text,
                                      is_feature_metric, render)
from tsrmon.config.checks import ConfigError
from tsrmon.names import name_problem

# ISO 10816-3 (ISO 20816-3 keeps the same figures): zone boundaries of
# broadband velocity RMS in mm/s, 10-1000 Hz, for machines above 15 kW.
# Group 1: large machines 300 kW-50 MW; group 2: medium machines 15-300 kW.
# (A/B, B/C, C/D): A new machine, B unrestricted long-term operation,
# C restricted operation, D damage may occur.
ISO_10816_3 = {
    (1, "rigid"): (2.3, 4.5, 7.1),
    (1, "flexible"): (3.5, 7.1, 11.0),
    (2, "rigid"): (1.4, 2.8, 4.5),
    (2, "flexible"): (2.3, 4.5, 7.1),
}
PRESETS = ("iso10816-3",)

_DURATION = re.compile(
    r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*"
    r"(ms|s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours)?\s*$")
_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0,
         "seconds": 1.0, "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0,
         "minutes": 60.0, "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0,
         "hours": 3600.0}

_COMMON_KEYS = {"name", "enabled", "machines", "severity", "message", "notify"}
_THRESHOLD_KEYS = _COMMON_KEYS | {"sensors", "types", "metric", "window", "above", "below",
                                  "clear", "for", "clear_for"}
_PRESET_KEYS = _COMMON_KEYS - {"severity"} | {"preset", "group", "foundation", "sensors",
                                              "types", "metric", "window", "for", "clear_for",
                                              "info", "warning", "critical", "clear_ratio"}
_BUILTIN_KEYS = {
    DAQ_SILENT: _COMMON_KEYS | {"builtin", "after"},
    FLATLINE: _COMMON_KEYS | {"builtin", "sensors", "types", "window", "tolerance"},
    RATE_DROP: _COMMON_KEYS | {"builtin", "below", "clear", "window", "for", "clear_for",
                               "learn", "warmup"},
}

# Built-in defaults (documented in docs/alarms.md).
BUILTIN_DEFAULTS = {
    DAQ_SILENT: {"after": 600.0, "severity": "warning",
                 "message": "{machine}: no data for {value:.0f} s (DAQ {link})"},
    FLATLINE: {"window": 600, "tolerance": 0.0, "severity": "warning",
               "message": "{machine} {sensor}: flat-lined at {at:g} for {window_text}"},
    RATE_DROP: {"below": 0.25, "clear": 0.5, "window": 60, "for": 120.0, "learn": 3600.0,
                "warmup": 600.0, "severity": "warning",
                "message": "{machine}: {value:.2f} frames/s, usually {usual:.2f} frames/s"},
}
THRESHOLD_MESSAGE = "{machine} {sensor}: {metric} over {window_text} {value:.3f} {op} {level:g}"

# Fields a message template may use, with sample values to check it.
_SAMPLE_FIELDS = {
    "machine": "m", "sensor": "s", "stype": "VIB", "rule": "r", "metric": "rms",
    "value": 1.0, "level": 1.0, "clear": 1.0, "severity": "warning", "window": 60,
    "window_text": "60 s", "op": ">", "condition": "above", "duration": 0.0,
    "link": "connected", "usual": 1.0, "at": 0.0,
}


class _Bad(Exception):
    """A problem in one entry; becomes a ConfigError naming it."""


def parse_rules(raw_list, source=None):
    """``ALARM.RULES`` → list of :class:`Rule` (built-ins included unless disabled).

    Raises :class:`tsrmon.config.checks.ConfigError` for the first bad entry.
    """
    if raw_list is None:
        raw_list = []
    if not isinstance(raw_list, list):
        raise ConfigError(source, "ALARM.RULES", f"expected a list of rules, got {type(raw_list).__name__}")
    rules = []
    builtin_given = {}
    names = {}
    for i, entry in enumerate(raw_list):
        label = _label(entry)
        key = f"ALARM.RULES[{i}] ({label})"
        try:
            if not isinstance(entry, dict):
                raise _Bad(f"expected a mapping, got {type(entry).__name__} {entry!r}")
            if "builtin" in entry:
                kind = entry["builtin"]
                if kind not in BUILTIN_KINDS:
                    raise _Bad(f"unknown builtin {kind!r} (known: {', '.join(BUILTIN_KINDS)})")
                if kind in builtin_given:
                    raise _Bad(f"builtin {kind!r} is configured twice (also ALARM.RULES[{builtin_given[kind]}])")
                builtin_given[kind] = i
                made = [_builtin(kind, entry)]
            elif "preset" in entry:
                made = _preset(entry)
            else:
                made = [_threshold(entry)]
            for rule in made:
                if rule.name in names:
                    raise _Bad(f"rule name {rule.name!r} is used twice (also ALARM.RULES[{names[rule.name]}])")
                names[rule.name] = i
        except _Bad as e:
            raise ConfigError(source, key, str(e)) from None
        rules.extend(r for r in made if r is not None and not _disabled(entry))
    for kind in BUILTIN_KINDS:
        if kind not in builtin_given:
            if kind in names:
                raise ConfigError(source, f"ALARM.RULES[{names[kind]}] ({kind})",
                                  f"{kind!r} is the name of a built-in rule (use 'builtin: {kind}' to change it)")
            rules.append(_builtin(kind, {"builtin": kind}))
    return rules


def _label(entry):
    if isinstance(entry, dict):
        for k in ("name", "builtin", "preset"):
            if isinstance(entry.get(k), str) and entry[k]:
                return entry[k][:80]
    return "unnamed"


def _disabled(entry):
    return isinstance(entry, dict) and entry.get("enabled", True) is False


def _check_keys(entry, allowed, what):
    unknown = sorted(str(k) for k in entry if k not in allowed)
    if unknown:
        raise _Bad(f"unknown key {unknown[0]!r} for {what} (known: {', '.join(sorted(allowed))})")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _Bad(f"enabled: expected true or false, got {enabled!r}")
    notify = entry.get("notify", True)
    if not isinstance(notify, bool):
        raise _Bad(f"notify: expected true or false, got {notify!r}")


def _rule_name(entry):
    name = entry.get("name")
    if name is None:
        raise _Bad("a rule needs a name")
    problem = name_problem(name)
    if problem is not None:
        raise _Bad(f"bad rule name {name!r}: {problem}")
    if name in BUILTIN_KINDS:
        raise _Bad(f"{name!r} is the name of a built-in rule (use 'builtin: {name}' to change it)")
    return name


def _globs(entry, key):
    value = entry.get(key, "*")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _Bad(f"{key}: expected a glob pattern or a non-empty list of them, got {value!r}")
    for pattern in value:
        problem = _glob_problem(pattern)
        if problem is not None:
            raise _Bad(f"{key}: bad glob {pattern!r}: {problem}")
    return tuple(value)


def _glob_problem(pattern):
    if not isinstance(pattern, str):
        return f"expected a string, got {type(pattern).__name__}"
    if not pattern:
        return "empty pattern"
    if len(pattern) > 256:
        return "longer than 256 characters"
    depth = 0
    for c in pattern:
        if c == "[":
            if depth:
                return "nested '['"
            depth = 1
        elif c == "]":
            depth = 0
        elif not (c.isalnum() or c in "_.-*?!"):
            return f"character {c!r} cannot occur in a name"
    if depth:
        return "'[' without a closing ']'"
    return None


def parse_duration(value, what, lo=0.0, hi=MAX_DURATION):
    """Seconds from a number or text such as ``30 s``, ``5 min``, ``1h``."""
    if isinstance(value, bool):
        raise _Bad(f"{what}: expected a duration such as 30 s, 5 min or 1 h, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.match(value):
        m = _DURATION.match(value)
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise _Bad(f"{what}: expected a duration such as 30 s, 5 min or 1 h, got {value!r}")
    if not math.isfinite(seconds) or not lo <= seconds <= hi:
        raise _Bad(f"{what}: {duration_text(seconds) if math.isfinite(seconds) else value} "
                   f"is outside {duration_text(lo)}-{duration_text(hi)}")
    return seconds


def _window(entry, default):
    seconds = parse_duration(entry.get("window", default), "window", MIN_WINDOW, MAX_WINDOW)
    if seconds != int(seconds):
        raise _Bad(f"window: must be whole seconds, got {seconds:g} s")
    return int(seconds)


def _number(entry, key, default=None):
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(f"{key}: expected a number, got {value!r}")
    return float(value)


def _severity(entry, default="warning"):
    severity = entry.get("severity", default)
    if severity not in SEVERITIES:
        raise _Bad(f"severity: must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    return severity


_ALL_METRICS = METRICS + MOMENT_METRICS + FEATURE_METRICS + (
    "band:<name>", "order:<n>", "bpfo|bpfi|bsf|ftf[:<harmonic>]")


def _metric(entry, default=None):
    metric = entry.get("metric", default)
    if metric is None:
        raise _Bad(f"a threshold rule needs a metric (one of {', '.join(_ALL_METRICS)})")
    if not isinstance(metric, str) or not (metric in METRICS or metric in MOMENT_METRICS
                                           or is_feature_metric(metric)):
        raise _Bad(f"unknown metric {metric!r} (one of {', '.join(_ALL_METRICS)})")
    return metric


def _message(entry, default):
    template = entry.get("message", default)
    if not isinstance(template, str) or not template:
        raise _Bad(f"message: expected a template text, got {template!r}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise _Bad(f"message: bad template {template!r}: {e}") from None
    for _literal, field, _spec, _conv in parsed:
        if field is None:
            continue
        base = re.split(r"[.\[]", field, maxsplit=1)[0]
        if base not in _SAMPLE_FIELDS:
            raise _Bad(f"message: unknown field {{{field}}} (known: {', '.join(_SAMPLE_FIELDS)})")
    try:
        render(template, _SAMPLE_FIELDS)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise _Bad(f"message: bad template {template!r}: {e}") from None
    return template


def _threshold(entry):
    _check_keys(entry, _THRESHOLD_KEYS, "a threshold rule")
    name = _rule_name(entry)
    machines = _globs(entry, "machines")
    sensors = _globs(entry, "sensors")
    types = _globs(entry, "types")
    metric = _metric(entry)
    window = _window(entry, 60)
    if ("above" in entry) == ("below" in entry):
        raise _Bad("give exactly one of 'above: <level>' or 'below: <level>'")
    condition = "above" if "above" in entry else "below"
    level = _number(entry, condition)
    clear = _number(entry, "clear", level)
    if condition == "above" and clear > level:
        raise _Bad(f"clear level {clear:g} must not be above the level {level:g} of an 'above' rule")
    if condition == "below" and clear < level:
        raise _Bad(f"clear level {clear:g} must not be below the level {level:g} of a 'below' rule")
    for_s = parse_duration(entry.get("for", 0), "for")
    clear_for = parse_duration(entry.get("clear_for", for_s), "clear_for")
    return Rule(name, THRESHOLD, machines, sensors, types, metric, window, condition, level, clear,
                for_s, clear_for, _severity(entry), _message(entry, THRESHOLD_MESSAGE),
                entry.get("notify", True))


def _preset(entry):
    _check_keys(entry, _PRESET_KEYS, "a preset")
    name = _rule_name(entry)
    preset = entry["preset"]
    if preset not in PRESETS:
        raise _Bad(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    group = entry.get("group")
    foundation = entry.get("foundation")
    if group not in (1, 2) or isinstance(group, bool):
        raise _Bad(f"group: must be 1 (300 kW-50 MW) or 2 (15-300 kW), got {group!r}")
    if foundation not in ("rigid", "flexible"):
        raise _Bad(f"foundation: must be rigid or flexible, got {foundation!r}")
    ab, bc, cd = ISO_10816_3[(group, foundation)]
    levels = [("zone-C", "warning", _number(entry, "warning", bc)),
              ("zone-D", "critical", _number(entry, "critical", cd))]
    if entry.get("info", False) is not False:
        info = ab if entry["info"] is True else _number(entry, "info")
        levels.insert(0, ("zone-B", "info", info))
    ordered = [lv for _z, _s, lv in levels]
    if ordered != sorted(ordered) or len(set(ordered)) != len(ordered):
        raise _Bad("zone levels must rise from info to warning to critical, got "
                   + ", ".join(f"{s} {lv:g}" for _z, s, lv in levels))
    ratio = _number(entry, "clear_ratio", 0.9)
    if not 0 < ratio <= 1:
        raise _Bad(f"clear_ratio: must be above 0 and at most 1, got {ratio:g}")
    machines = _globs(entry, "machines")
    sensors = _globs(entry, "sensors")
    types = _globs(entry, "types")
    metric = _metric(entry, "rms")
    window = _window(entry, 60)
    for_s = parse_duration(entry.get("for", 60), "for")
    clear_for = parse_duration(entry.get("clear_for", for_s), "clear_for")
    message = _message(entry, "{machine} {sensor}: velocity {metric} {value:.2f} mm/s > {level:g} "
                              "mm/s (ISO 10816-3 " + f"group {group} {foundation}, {{rule}})")
    notify = entry.get("notify", True)
    return [Rule(f"{name}.{zone}", THRESHOLD, machines, sensors, types, metric, window, "above",
                 level, level * ratio, for_s, clear_for, severity, message, notify,
                 {"preset": preset, "group": group, "foundation": foundation})
            for zone, severity, level in levels]


def _builtin(kind, entry):
    _check_keys(entry, _BUILTIN_KEYS[kind], f"builtin {kind}")
    if "name" in entry and entry["name"] != kind:
        raise _Bad(f"a builtin keeps its name ({kind!r})")
    d = BUILTIN_DEFAULTS[kind]
    machines = _globs(entry, "machines")
    severity = _severity(entry, d["severity"])
    message = _message(entry, d["message"])
    notify = entry.get("notify", True)
    if kind == DAQ_SILENT:
        after = parse_duration(entry.get("after", d["after"]), "after", 1.0)
        return Rule(kind, kind, machines, metric="silence", condition="above", level=after,
                    clear=after, severity=severity, message=message, notify=notify)
    if kind == FLATLINE:
        window = _window(entry, d["window"])
        tolerance = _number(entry, "tolerance", d["tolerance"])
        if tolerance < 0:
            raise _Bad(f"tolerance: must be at least 0, got {tolerance:g}")
        return Rule(kind, kind, machines, _globs(entry, "sensors"), _globs(entry, "types"),
                    "range", window, "within", tolerance, tolerance, severity=severity,
                    message=message, notify=notify)
    below = _number(entry, "below", d["below"])
    clear = _number(entry, "clear", max(d["clear"], below))
    if not 0 < below < 1:
        raise _Bad(f"below: a fraction of the usual frame rate above 0 and below 1, got {below:g}")
    if not below <= clear <= 1:
        raise _Bad(f"clear: a fraction between below ({below:g}) and 1, got {clear:g}")
    window = _window(entry, d["window"])
    for_s = parse_duration(entry.get("for", d["for"]), "for")
    clear_for = parse_duration(entry.get("clear_for", for_s), "clear_for")
    learn = parse_duration(entry.get("learn", d["learn"]), "learn", 1.0)
    warmup = parse_duration(entry.get("warmup", d["warmup"]), "warmup")
    return Rule(kind, kind, machines, metric="frame_rate", window=window, condition="below",
                level=below, clear=clear, for_s=for_s, clear_for=clear_for, severity=severity,
                message=message, notify=notify, extra={"learn": learn, "warmup": warmup})
