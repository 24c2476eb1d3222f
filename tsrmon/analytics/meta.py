"""Sensor metadata: sample rate, unit, running speed, bearing, bands.

Three sources, highest first (each field separately):

1. the ``SENSORS`` config section — a list of entries matched by a
   ``machine/sensor`` glob; every matching entry applies in list order, a
   later one overriding the fields it sets (put general patterns first);
2. the JSON encoding's per-sensor fields ``rate``, ``unit``, ``rpm``;
3. for the legacy feed, the rate inferred from samples per 1-s frame.

The operator's config wins so that a benchmark sending faster than real
time, or a DAQ that reports a wrong rate, can be corrected without touching
the DAQ.  Pure functions over plain dicts: the SENSORS section
(``tsrmon/spectra/settings.py``) validates with :func:`validate_entries` at
load and the hub calls :func:`resolve`.
"""

import fnmatch
import math
import numbers

from tsrmon.analytics.envelope import bearing_from_config

G = 9.80665                 # m/s² per g (standard gravity)

# canonical unit -> (quantity, factor to the quantity's base unit)
#   acceleration base: g;  velocity base: mm/s;  displacement base: µm;
#   temperature: °C (offsets are not factors: see temperature_to_c)
_UNITS = {
    "g": ("acceleration", 1.0),
    "m/s²": ("acceleration", 1.0 / G),
    "mm/s²": ("acceleration", 1.0 / (G * 1000.0)),
    "mm/s": ("velocity", 1.0),
    "m/s": ("velocity", 1000.0),
    "in/s": ("velocity", 25.4),
    "µm": ("displacement", 1.0),
    "mm": ("displacement", 1000.0),
    "mil": ("displacement", 25.4),
    "°C": ("temperature", 1.0),
    "°F": ("temperature", 1.0),
    "K": ("temperature", 1.0),
    "V": ("voltage", 1.0),
    "mV": ("voltage", 0.001),
}

_ALIASES = {
    "g": "g", "gn": "g", "g0": "g",
    "m/s2": "m/s²", "m/s^2": "m/s²", "m s-2": "m/s²", "ms-2": "m/s²", "m/s/s": "m/s²",
    "mm/s2": "mm/s²", "mm/s^2": "mm/s²",
    "mm/s": "mm/s", "m/s": "m/s", "in/s": "in/s", "ips": "in/s",
    "um": "µm", "µm": "µm", "μm": "µm", "micron": "µm", "mm": "mm", "mil": "mil", "mils": "mil",
    "c": "°C", "°c": "°C", "degc": "°C", "deg c": "°C", "celsius": "°C", "℃": "°C",
    "f": "°F", "°f": "°F", "degf": "°F", "fahrenheit": "°F",
    "k": "K", "kelvin": "K",
    "v": "V", "mv": "mV",
}

# What the legacy types mean when nothing else says (docs/legacy.md: NI accel
# channels give g, RTD channels °C).
TYPE_UNITS = {"VIB": "g", "TEMP": "°C"}


def normalise_unit(text):
    """Canonical spelling of a unit (``"m/s^2"`` → ``"m/s²"``); ValueError
    naming the known ones when it is not known.  Aliases are matched
    case-insensitively (``"G"`` is g, ``"IPS"`` in/s, ``"degC"`` °C)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("unit must be a non-empty string, got %r" % (text,))
    t = text.strip()
    if t in _UNITS:
        return t
    got = _ALIASES.get(t.lower())
    if got is None:
        raise ValueError("unit %r unknown (known: %s)" % (text, ", ".join(_UNITS)))
    return got


def quantity(unit):
    """``acceleration`` / ``velocity`` / ``displacement`` / ``temperature`` / ``voltage``."""
    return _UNITS[normalise_unit(unit)][0]


def to_g(unit):
    """Factor from an acceleration unit to g (ValueError for other quantities)."""
    u = normalise_unit(unit)
    q, f = _UNITS[u]
    if q != "acceleration":
        raise ValueError("unit %s is a %s, not an acceleration" % (u, q))
    return f


def to_mm_s2(unit):
    """Factor from an acceleration unit to mm/s² (g → 9806.65)."""
    return to_g(unit) * G * 1000.0


def to_mm_s(unit):
    """Factor from a velocity unit to mm/s (ValueError for other quantities)."""
    u = normalise_unit(unit)
    q, f = _UNITS[u]
    if q != "velocity":
        raise ValueError("unit %s is a %s, not a velocity" % (u, q))
    return f


def temperature_to_c(value, unit):
    """A temperature in °C (temperatures convert with an offset, not a factor)."""
    u = normalise_unit(unit)
    if u == "°C":
        return value
    if u == "°F":
        return (value - 32.0) * 5.0 / 9.0
    if u == "K":
        return value - 273.15
    raise ValueError("unit %s is not a temperature" % u)


# -- sample rate -----------------------------------------------------------------

LEGACY_POINTS = 30          # the deployed DAQ resamples every 1-s chunk to 30 points


def infer_rate(samples_per_frame, frame_seconds=1.0):
    """Samples per second of a feed that sends one frame per ``frame_seconds``
    (the legacy DAQ: one DataUpdate per second per device, so 30 samples →
    30 Hz).  None for an empty frame."""
    if (not isinstance(samples_per_frame, numbers.Integral) or isinstance(samples_per_frame, bool)
            or samples_per_frame < 0):
        raise ValueError("samples_per_frame must be an int >= 0, got %r" % (samples_per_frame,))
    if frame_seconds <= 0:
        raise ValueError("frame_seconds must be > 0, got %r" % (frame_seconds,))
    if samples_per_frame == 0:
        return None
    return int(samples_per_frame) / frame_seconds


class RateEstimator:
    """Rate of a legacy feed from its frames: the most frequent frame length
    among the last ``window`` frames (a frame cut short by a reconnect does not
    move it), divided by the frame period.  ``add(n)`` per frame."""

    def __init__(self, frame_seconds=1.0, window=16):
        self.frame_seconds = frame_seconds
        self.window = window
        self._recent = []

    def add(self, samples_per_frame):
        if samples_per_frame > 0:
            self._recent.append(int(samples_per_frame))
            if len(self._recent) > self.window:
                del self._recent[0]

    @property
    def rate(self):
        if not self._recent:
            return None
        counts = {}
        for n in self._recent:
            counts[n] = counts.get(n, 0) + 1
        # Most frequent; ties go to the larger frame (a short frame is the anomaly).
        n = max(counts, key=lambda v: (counts[v], v))
        return infer_rate(n, self.frame_seconds)


# -- SENSORS config ----------------------------------------------------------------

FIELDS = ("rate", "unit", "rpm", "bearing", "bands", "envelope_band", "group", "foundation")


def _positive(name, v, where):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError("%s: %s must be a number > 0, got %r" % (where, name, v))
    return float(v)


def _band(v, where, name):
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in v)
            or not 0 <= v[0] < v[1]):
        raise ValueError("%s: %s must be [low, high] Hz with 0 <= low < high, got %r"
                         % (where, name, v))
    return (float(v[0]), float(v[1]))


def validate_entry(entry, where="SENSORS[?]"):
    """A checked, normalised copy of one entry; ValueError naming the field."""
    if not isinstance(entry, dict):
        raise ValueError("%s: an entry is a mapping, got %r" % (where, type(entry).__name__))
    match = entry.get("match")
    if not isinstance(match, str) or "/" not in match:
        raise ValueError("%s: match must be a 'machine/sensor' glob, got %r" % (where, match))
    unknown = sorted(set(entry) - set(FIELDS) - {"match"})
    if unknown:
        raise ValueError("%s: unknown field(s) %s (known: match, %s)"
                         % (where, ", ".join(unknown), ", ".join(FIELDS)))
    out = {"match": match}
    if "rate" in entry:
        out["rate"] = _positive("rate", entry["rate"], where)
    if "rpm" in entry:
        out["rpm"] = _positive("rpm", entry["rpm"], where)
    if "unit" in entry:
        try:
            out["unit"] = normalise_unit(entry["unit"])
        except ValueError as e:
            raise ValueError("%s: %s" % (where, e)) from None
    if "bearing" in entry:
        if not isinstance(entry["bearing"], dict):
            raise ValueError("%s: bearing must be a mapping" % where)
        try:
            out["bearing"] = bearing_from_config(entry["bearing"])
        except (ValueError, TypeError) as e:
            raise ValueError("%s: %s" % (where, e)) from None
    if "bands" in entry:
        bands = entry["bands"]
        if not isinstance(bands, dict):
            raise ValueError("%s: bands must map names to [low, high] Hz" % where)
        out["bands"] = {str(k): _band(v, where, "bands.%s" % k) for k, v in bands.items()}
    if "envelope_band" in entry:
        out["envelope_band"] = _band(entry["envelope_band"], where, "envelope_band")
    if "group" in entry:
        if entry["group"] not in (1, 2):
            raise ValueError("%s: group must be 1 or 2 (ISO 10816-3), got %r" % (where, entry["group"]))
        out["group"] = entry["group"]
    if "foundation" in entry:
        if entry["foundation"] not in ("rigid", "flexible"):
            raise ValueError("%s: foundation must be rigid or flexible, got %r"
                             % (where, entry["foundation"]))
        out["foundation"] = entry["foundation"]
    return out


def validate_entries(entries, section="SENSORS"):
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError("%s must be a list of entries" % section)
    return [validate_entry(e, "%s[%d]" % (section, i)) for i, e in enumerate(entries)]


def match_entries(entries, machine, sensor):
    """Merged fields of every entry whose ``match`` glob matches
    ``machine/sensor`` (case-sensitive fnmatch; ``*`` also crosses ``/``),
    later entries overriding earlier ones; ``{}`` when none matches."""
    key = "%s/%s" % (machine, sensor)
    out = {}
    for e in entries:
        if fnmatch.fnmatchcase(key, e["match"]):
            out.update({k: v for k, v in e.items() if k != "match"})
    return out


class SensorMeta:
    """Resolved metadata of one sensor, with where each field came from."""

    __slots__ = ("rate", "unit", "rpm", "bearing", "bands", "envelope_band",
                 "group", "foundation", "sources")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))
        if self.sources is None:
            self.sources = {}

    def as_dict(self):
        """For ``/machines``: the fields that are known, and their sources."""
        out = {k: getattr(self, k) for k in self.__slots__
               if k != "sources" and getattr(self, k) is not None}
        if "envelope_band" in out:
            out["envelope_band"] = list(out["envelope_band"])
        if "bands" in out:
            out["bands"] = {k: list(v) for k, v in out["bands"].items()}
        out["sources"] = dict(self.sources)
        return out


def resolve(machine, sensor, stype=None, entries=(), reported=None, inferred_rate=None):
    """The :class:`SensorMeta` of a sensor.

    ``entries``: validated SENSORS entries; ``reported``: the JSON fields the
    DAQ sent (``rate``, ``unit``, ``rpm``; unchecked peer input — bad values
    raise ValueError for the caller to refuse the frame); ``inferred_rate``:
    from :class:`RateEstimator`; ``stype``: VIB/TEMP gives a default unit.
    """
    cfg = match_entries(entries, machine, sensor)
    rep = {}
    where = "sensor %s" % sensor
    for k, v in (reported or {}).items():
        if k in ("rate", "rpm"):
            rep[k] = _positive(k, v, where)
        elif k == "unit":
            rep[k] = normalise_unit(v)
    meta = SensorMeta()
    for k in FIELDS:
        if k in cfg:
            setattr(meta, k, cfg[k])
            meta.sources[k] = "config"
        elif k in rep:
            setattr(meta, k, rep[k])
            meta.sources[k] = "daq"
    if meta.rate is None and inferred_rate:
        meta.rate = float(inferred_rate)
        meta.sources["rate"] = "inferred"
    if meta.unit is None and stype in TYPE_UNITS:
        meta.unit = TYPE_UNITS[stype]
        meta.sources["unit"] = "type"
    return meta


SPECTRA_MIN_RATE = 1000.0


def spectra_possible(meta):
    """None when spectra can be computed for this sensor, else why not."""
    if meta.rate is None:
        return "sample rate unknown (set SENSORS rate or send rate in JSON)"
    if meta.rate < SPECTRA_MIN_RATE:
        return ("%g samples/s is below the %g needed for spectra (the legacy feed "
                "resamples every second to 30 points)" % (meta.rate, SPECTRA_MIN_RATE))
    return None
