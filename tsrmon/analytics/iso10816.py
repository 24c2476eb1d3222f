"""ISO 10816-3 evaluation zones for broad-band velocity RMS (mm/s).

ISO 10816-3 (machines above 15 kW, 120–15,000 r/min, measured on bearing
housings; carried into ISO 20816-3) judges the RMS of vibration velocity
over 10–1,000 Hz (2–1,000 Hz for machines below 600 r/min):

=========  ==========  =====  =====  =====
group      foundation  A/B    B/C    C/D
=========  ==========  =====  =====  =====
1 (large)  rigid       2.3    4.5    7.1
1 (large)  flexible    3.5    7.1    11.0
2 (medium) rigid       1.4    2.8    4.5
2 (medium) flexible    2.3    4.5    7.1
=========  ==========  =====  =====  =====

Group 1: 300 kW–50 MW, electrical machines with shaft height ≥ 315 mm.
Group 2: 15–300 kW, electrical machines with shaft height 160–315 mm.
Zone A: newly commissioned; B: unrestricted long-term operation;
C: unsatisfactory for long-term continuous operation; D: severe enough to
cause damage.  A value on a boundary belongs to the higher zone.
"""

from tsrmon.analytics import meta as _meta

BOUNDARIES = {
    (1, "rigid"): (2.3, 4.5, 7.1),
    (1, "flexible"): (3.5, 7.1, 11.0),
    (2, "rigid"): (1.4, 2.8, 4.5),
    (2, "flexible"): (2.3, 4.5, 7.1),
}

ZONES = ("A", "B", "C", "D")

MEANING = {
    "A": "newly commissioned machines",
    "B": "unrestricted long-term operation",
    "C": "unsatisfactory for long-term continuous operation",
    "D": "vibration severe enough to cause damage",
}

F_HI = 1000.0
LINE_FACTOR = 2.56          # lines end at rate / 2.56


def band_for_rpm(rpm=None):
    """The ISO frequency band: (2, 1000) Hz below 600 r/min, else (10, 1000)."""
    if rpm is not None and rpm < 600:
        return (2.0, F_HI)
    return (10.0, F_HI)


def boundaries(group=2, foundation="rigid"):
    try:
        return BOUNDARIES[(group, foundation)]
    except KeyError:
        raise ValueError("ISO 10816-3: group is 1 or 2 and foundation rigid or flexible, "
                         "got %r, %r" % (group, foundation)) from None


def zone(velocity_rms, group=2, foundation="rigid"):
    """Zone letter of a velocity RMS in mm/s."""
    if velocity_rms is None or velocity_rms < 0:
        raise ValueError("zone: velocity RMS must be >= 0 mm/s, got %r" % (velocity_rms,))
    for letter, edge in zip(ZONES, boundaries(group, foundation)):
        if velocity_rms < edge:
            return letter
    return "D"


def velocity_refusal(rate, unit, f_hi=F_HI):
    """None when a sensor with this ``rate`` (samples/s) and ``unit`` can give
    the true ISO velocity RMS; otherwise the reason, in words."""
    if unit is None:
        return "unit unknown: set the sensor's unit (g, m/s², mm/s …) in SENSORS"
    try:
        q = _meta.quantity(unit)
    except ValueError as e:
        return str(e)
    if q not in ("acceleration", "velocity"):
        return "unit %s is a %s: velocity RMS needs an acceleration or velocity sensor" % (
            _meta.normalise_unit(unit), q)
    if rate is None:
        return "sample rate unknown: set SENSORS rate (or send rate in JSON)"
    need = LINE_FACTOR * f_hi
    if rate < need:
        why = ("%g samples/s reaches %g Hz at most; velocity RMS over 10–%g Hz needs "
               "≥ %g samples/s" % (rate, rate / LINE_FACTOR, f_hi, need))
        if rate <= _meta.LEGACY_POINTS:
            why += (" (the legacy feed resamples each second to 30 points, which keeps "
                    "only 0–15 Hz)")
        return why
    return None


class Judgement:
    """Outcome of :func:`judge`: ``zone`` (A–D) or None with ``reason``."""

    __slots__ = ("zone", "velocity_rms", "boundaries", "reason", "meaning")

    def __init__(self, zone=None, velocity_rms=None, boundaries=None, reason=None):
        self.zone = zone
        self.velocity_rms = velocity_rms
        self.boundaries = boundaries
        self.reason = reason
        self.meaning = MEANING.get(zone)

    @property
    def judged(self):
        return self.zone is not None

    def as_dict(self):
        return {"zone": self.zone, "velocity_rms": self.velocity_rms,
                "boundaries": list(self.boundaries) if self.boundaries else None,
                "meaning": self.meaning, "reason": self.reason}

    def __repr__(self):
        return "Judgement(%r)" % (self.as_dict(),)


def judge(velocity_rms, rate, unit, group=2, foundation="rigid"):
    """Judge a velocity RMS (mm/s) measured by a sensor with ``rate`` and
    ``unit``: the zone, or a refusal that says why (never a guess from data
    that cannot hold the ISO band)."""
    edges = boundaries(group, foundation)
    why = velocity_refusal(rate, unit)
    if why is not None:
        return Judgement(boundaries=edges, reason=why)
    if velocity_rms is None:
        return Judgement(boundaries=edges, reason="no velocity RMS for this period")
    return Judgement(zone(velocity_rms, group, foundation), velocity_rms, edges)


def judge_sensor(sensor_meta, velocity_rms):
    """:func:`judge` with group/foundation from the sensor's metadata
    (defaults: group 2, rigid — the stricter medium-machine table)."""
    return judge(velocity_rms, sensor_meta.rate, sensor_meta.unit,
                 sensor_meta.group or 2, sensor_meta.foundation or "rigid")
