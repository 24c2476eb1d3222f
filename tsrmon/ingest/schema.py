"""The three DAQ events, checked: a decoded value in, a named event out
(``hub/records.py``; both encodings):

- :class:`NameFrame` ``(name, token)``;
- :class:`DataFrame` ``(sensors, bad, nonfinite, t, meta)`` where ``sensors``
  is a list of :class:`SensorSamples` ``(sensor, stype, finite values)``
  ready for ``MachineHub.data``, ``bad`` a list of ``(sensor, why)`` dropped
  from the frame and ``meta`` None or ``{sensor: {"rate"?, "unit"?, "rpm"?}}``,
  the sensor metadata a JSON frame may carry beside ``type`` and ``data``
  (checked by the sensor catalog; a bad value costs the metadata, never the
  samples);
- :class:`FaultFrame` ``(score, threshold, t)`` with float score and threshold.

``t`` is None (stamp on arrival) or the frame's own time in epoch seconds
(JSON ``"time"``).  Anything else raises :class:`FrameRefused`.
"""

import datetime
import math

import numpy as _np

from tsrmon.hub.records import DataFrame, FaultFrame, NameFrame, SensorSamples
from tsrmon.names import name_problem

NAME, DATA, FAULT = "name", "DataUpdate", "FaultDetect"
EVENTS = (NAME, DATA, FAULT)

_isfinite = math.isfinite
_MAX_KNOWN_NAMES = 4096


class FrameRefused(Exception):
    """A complete frame that does not match an event schema."""


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def sensor_problem(sensor, stype):
    """Why a sensor entry is dropped from its frame (None when its name and
    type are valid names); the same rule on the fast path and the slow one."""
    problem = name_problem(sensor)
    if problem is not None:
        return f"bad sensor name: {problem}"
    problem = name_problem(stype)
    if problem is not None:
        return f"bad sensor type {_short(stype)}: {problem}"
    return None


def from_pickle(value, trusted, known_names):
    """A decoded legacy frame ``(event, data)``."""
    if type(value) is not tuple and type(value) is not list or len(value) != 2:
        raise FrameRefused(f"expected an (event, data) pair, got {type(value).__name__}")
    event, data = value
    if event == DATA:
        return data_event(data, trusted, known_names, None)
    if event == NAME:
        return NameFrame(data, None)
    if event == FAULT:
        return fault_event(data, None)
    raise FrameRefused(f"unknown event {_short(event)}")


def from_json(value, known_names):
    """A decoded JSON line ``{"event": ..., "data": ..., "time"?, "token"?}``."""
    if type(value) is not dict:
        raise FrameRefused(f"expected a JSON object, got {type(value).__name__}")
    event = value.get("event")
    data = value.get("data")
    t = value.get("time")
    if t is not None:
        t = parse_time(t)
    if event == DATA:
        return data_event(data, False, known_names, t, arrays=True)
    if event == NAME:
        token = value.get("token")
        if token is not None and type(token) is not str:
            raise FrameRefused("token must be a string")
        return NameFrame(data, token)
    if event == FAULT:
        return fault_event(data, t)
    raise FrameRefused(f"unknown event {_short(event)}")


def parse_time(t):
    """ISO 8601 with an offset, or epoch seconds, to epoch seconds."""
    if type(t) in (int, float):
        if not _isfinite(t) or t < 0:
            raise FrameRefused(f"time {t!r} is not a valid epoch time")
        return float(t)
    if type(t) is str:
        try:
            dt = datetime.datetime.fromisoformat(t)
        except ValueError:
            raise FrameRefused(f"time {_short(t)} is not ISO 8601") from None
        if dt.tzinfo is None:
            raise FrameRefused(f"time {_short(t)} has no UTC offset")
        return dt.timestamp()
    raise FrameRefused(f"time must be ISO 8601 text or epoch seconds, got {type(t).__name__}")


def _number(v, what):
    if type(v) is float:
        if not _isfinite(v):
            raise FrameRefused(f"{what} is not finite")
        return v
    if type(v) is int:
        try:
            return float(v)
        except OverflowError:
            raise FrameRefused(f"{what} is out of range") from None
    raise FrameRefused(f"{what} must be a number, got {type(v).__name__}")


def fault_event(data, t):
    if type(data) is not dict:
        raise FrameRefused(f"FaultDetect data must be a dict, got {type(data).__name__}")
    return FaultFrame(_number(data.get("score"), "score"), _number(data.get("threshold"), "threshold"), t)


_FLOATS = {float}
_NUMBERS = {float, int}
_ARRAY_FROM = 256  # samples from which an unchecked chunk becomes a numpy array


def _long_chunk(values):
    """A float64 array of ``values`` if all are floats or ints that fit, else None."""
    if not set(map(type, values)) <= _NUMBERS:
        return None
    try:
        return _np.array(values, dtype=_np.float64)
    except (OverflowError, TypeError, ValueError):
        return None


def _checked_values(values, sensor):
    """Every element a number (ints become floats); the slow path.

    The types are collected in C first: a long chunk of floats (or floats
    and ints) costs no Python loop; the loop below only names the culprit."""
    kinds = set(map(type, values))
    if kinds <= _FLOATS:
        return values
    if kinds <= _NUMBERS:
        try:
            return list(map(float, values))
        except OverflowError:
            pass  # the loop below names the sample
    out = values
    for i, v in enumerate(values):
        tv = type(v)
        if tv is float:
            continue
        if tv is int:
            if out is values:
                out = list(values)
            try:
                out[i] = float(v)
            except OverflowError:
                raise FrameRefused(f"sensor {_short(sensor)}: sample {i} out of range") from None
            continue
        raise FrameRefused(f"sensor {_short(sensor)}: sample {i} is a {tv.__name__}, not a number")
    return out


META_FIELDS = ("rate", "unit", "rpm")
_MAX_UNIT_CHARS = 32


def _sensor_meta(entry):
    """The JSON sensor entry's ``rate``/``unit``/``rpm`` (None when it has
    none).  Only their JSON types are checked here; values that are not
    plausible are left for the catalog to refuse with its own reason."""
    if len(entry) == 2:  # {"type", "data"}: the common case
        return None
    out = {}
    for key in META_FIELDS:
        if key in entry:
            v = entry[key]
            if key == "unit":
                out[key] = v[:_MAX_UNIT_CHARS + 1] if type(v) is str else _short(v)
            else:
                out[key] = v if type(v) in (int, float) else _short(v)
    return out or None


def data_event(data, trusted, known_names, t, arrays=False):
    """``{sensor: {"type": str, "data": [number, ...]}}``.

    ``known_names`` is the connection's set of names already checked (a
    small cache: checking a name costs more than the rest of a sensor).
    ``arrays``: long unchecked chunks (JSON) become float64 arrays, as on
    the pickle fast path.
    """
    if type(data) is not dict:
        raise FrameRefused(f"DataUpdate data must be a dict, got {type(data).__name__}")
    sensors = []
    bad = []
    nonfinite = 0
    meta = None
    for sensor, entry in data.items():
        if type(entry) is not dict:
            raise FrameRefused(f"sensor {_short(sensor)}: expected {{'type': ..., 'data': [...]}}")
        stype = entry.get("type")
        values = entry.get("data")
        if type(values) is not list:
            raise FrameRefused(f"sensor {_short(sensor)}: 'data' must be a list")
        if sensor not in known_names or type(stype) is not str or stype not in known_names:
            problem = sensor_problem(sensor, stype)
            if problem is not None:
                bad.append((sensor, problem))
                continue
            if len(known_names) < _MAX_KNOWN_NAMES:
                known_names.add(sensor)
                known_names.add(stype)
        if arrays:  # JSON lines: per-sensor metadata beside type and data
            reported = _sensor_meta(entry)
            if reported is not None:
                if meta is None:
                    meta = {}
                meta[sensor] = reported
        if not trusted:
            if arrays and len(values) >= _ARRAY_FROM:
                arr = _long_chunk(values)
                if arr is not None:
                    # As the pickle fast path does: long chunks travel as
                    # float64 arrays, checked and filtered in C.
                    finite = _np.isfinite(arr)
                    if not finite.all():
                        arr = arr[finite]
                        nonfinite += len(values) - len(arr)
                    sensors.append(SensorSamples(sensor, stype, arr))
                    continue
            values = _checked_values(values, sensor)
        try:
            finite = _isfinite(sum(values))
        except (TypeError, OverflowError):
            finite = False
        if not finite:
            kept = [v for v in values if _isfinite(v)]
            nonfinite += len(values) - len(kept)
            values = kept
        sensors.append(SensorSamples(sensor, stype, values))
    return DataFrame(sensors, bad, nonfinite, t, meta)
