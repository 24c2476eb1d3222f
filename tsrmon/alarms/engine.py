"""The alarm state machine, sliding windows of per-second sums, and alarms.

One :class:`Tracker` per (rule, machine, sensor) walks

    inactive ──condition true──▶ pending ──true for ``for``──▶ active
        ▲                          │ false                       │ past the clear level
        └──────────────────────────┘                             ▼ for ``clear_for``
        └────────────────────────────────────────────────── cleared (an event)

While active, nothing raises again: re-entering the condition only resets
the clear timer.  A value between the clear level and the level keeps an
active alarm active (hysteresis).

:class:`WindowSums` keeps the per-second :class:`PartialSums` of the last
``window`` seconds with running totals and monotonic min/max queues, so a
window of any length costs O(1) per second.  Windows longer than
``MAX_BUCKETS`` seconds keep buckets of ``ceil(window / MAX_BUCKETS)``
seconds (their edge moves in those steps).
"""

import collections
import datetime
import math

from tsrmon.analytics.moments import Moments

INACTIVE = "inactive"
PENDING = "pending"
ACTIVE = "active"

RAISE = "raised"
CLEAR = "cleared"

MAX_BUCKETS = 360


class Tracker:
    """The state of one (rule, machine, sensor); ``sensor`` is "" for machine rules."""

    __slots__ = ("rule", "machine", "sensor", "stype", "state", "since", "clear_since", "alarm",
                 "source", "note", "meta")

    def __init__(self, rule, machine, sensor, stype=None):
        self.rule = rule
        self.machine = machine
        self.sensor = sensor
        self.stype = stype
        self.state = INACTIVE
        self.since = None
        self.clear_since = None
        self.alarm = None
        # Issue 17, ISO preset: what the rule judges for this sensor
        # ("velocity_rms" from spectra, "samples" RMS, or None = not judged)
        # and why (``note``); ``meta`` the sensor metadata it was decided on.
        self.source = None
        self.note = None
        self.meta = False  # not decided yet (None is "no metadata")

    def __repr__(self):
        return f"Tracker({self.rule!r}, {self.machine!r}, {self.sensor!r}, {self.state})"


def advance(tracker, t, tripped, cleared, for_s, clear_for):
    """Move ``tracker`` on at time ``t``; returns RAISE, CLEAR or None.

    ``tripped``: the value meets the condition; ``cleared``: the value is
    past the clear level.  Both False is the hysteresis band.
    """
    state = tracker.state
    if state == ACTIVE:
        if cleared:
            if tracker.clear_since is None:
                tracker.clear_since = t
            if t - tracker.clear_since >= clear_for:
                tracker.state = INACTIVE
                tracker.since = tracker.clear_since = None
                return CLEAR
        else:
            tracker.clear_since = None
        return None
    if not tripped:
        if state == PENDING:
            tracker.state = INACTIVE
            tracker.since = None
        return None
    if state == INACTIVE:
        tracker.state = PENDING
        tracker.since = t
    if t - tracker.since >= for_s:
        tracker.state = ACTIVE
        tracker.clear_since = None
        return RAISE
    return None


class WindowSums:
    """Sums of the seconds ``(t - window, t]`` of one sensor (see module doc)."""

    __slots__ = ("window", "step", "buckets", "count", "total", "total_abs", "total_sq",
                 "_mins", "_maxs", "first_t", "last_t", "_evicted", "covered",
                 "ref", "mcount", "s1", "s2", "s3", "s4")

    def __init__(self, window):
        self.window = int(window)
        self.step = 1 if self.window <= MAX_BUCKETS else math.ceil(self.window / MAX_BUCKETS)
        self.reset()

    def reset(self):
        # [start, count, total, total_abs, total_sq, mcount, s1, s2, s3, s4]
        self.buckets = collections.deque()
        self.ref = None  # the moments' reference c (the first second's)
        self.mcount = 0
        self.s1 = self.s2 = self.s3 = self.s4 = 0.0
        self._mins = collections.deque()  # (bucket start, minimum), rising
        self._maxs = collections.deque()  # (bucket start, maximum), falling
        self.count = 0
        self.total = self.total_abs = self.total_sq = 0.0
        self.first_t = None
        self.last_t = None
        self._evicted = 0
        self.covered = False  # True once the sensor has been seen for a whole window

    def add(self, t, sums):
        """Add one second (``t`` = its start); ``sums`` is not modified."""
        if not sums.count:
            return
        if self.last_t is not None and t < self.last_t:
            self.reset()  # the clock went back: start again rather than mix
        if self.first_t is None:
            self.first_t = t
        self.last_t = t
        if not self.covered:
            self.covered = t - self.first_t + 1 >= self.window
        step = self.step
        start = t - (t % step) if step > 1 else t
        buckets = self.buckets
        m = getattr(sums, "moments", None)
        if m is not None and m.count:
            if self.ref is None:
                self.ref = m.ref
            elif m.ref != self.ref:
                m = m.shifted(self.ref)
            mc, m1, m2, m3, m4 = m.count, m.s1, m.s2, m.s3, m.s4
        else:
            mc, m1, m2, m3, m4 = 0, 0.0, 0.0, 0.0, 0.0
        if buckets and buckets[-1][0] == start:
            b = buckets[-1]
            b[1] += sums.count
            b[2] += sums.total
            b[3] += sums.total_abs
            b[4] += sums.total_sq
            b[5] += mc
            b[6] += m1
            b[7] += m2
            b[8] += m3
            b[9] += m4
        else:
            buckets.append([start, sums.count, sums.total, sums.total_abs, sums.total_sq,
                            mc, m1, m2, m3, m4])
        self.count += sums.count
        self.total += sums.total
        self.total_abs += sums.total_abs
        self.total_sq += sums.total_sq
        self.mcount += mc
        self.s1 += m1
        self.s2 += m2
        self.s3 += m3
        self.s4 += m4
        lo, hi = sums.minimum, sums.maximum
        mins, maxs = self._mins, self._maxs
        while mins and mins[-1][1] >= lo:
            mins.pop()
        mins.append((start, lo))
        while maxs and maxs[-1][1] <= hi:
            maxs.pop()
        maxs.append((start, hi))
        # Drop buckets that ended before the window's first second.
        horizon = t - self.window + 1 - step
        while buckets[0][0] <= horizon:
            b = buckets.popleft()
            self.count -= b[1]
            self.total -= b[2]
            self.total_abs -= b[3]
            self.total_sq -= b[4]
            self.mcount -= b[5]
            self.s1 -= b[6]
            self.s2 -= b[7]
            self.s3 -= b[8]
            self.s4 -= b[9]
            self._evicted += 1
        while mins[0][0] <= horizon:
            mins.popleft()
        while maxs[0][0] <= horizon:
            maxs.popleft()
        if self._evicted > len(buckets):
            self._resum()

    def _resum(self):
        # Subtracting evicted seconds lets rounding creep in; add up afresh
        # once per window length.
        self._evicted = 0
        self.total = math.fsum(b[2] for b in self.buckets)
        self.total_abs = math.fsum(b[3] for b in self.buckets)
        self.total_sq = math.fsum(b[4] for b in self.buckets)
        self.s1 = math.fsum(b[6] for b in self.buckets)
        self.s2 = math.fsum(b[7] for b in self.buckets)
        self.s3 = math.fsum(b[8] for b in self.buckets)
        self.s4 = math.fsum(b[9] for b in self.buckets)

    @property
    def minimum(self):
        return self._mins[0][1] if self._mins else None

    @property
    def maximum(self):
        return self._maxs[0][1] if self._maxs else None

    def value(self, metric):
        """The metric over the window, or None when it holds no samples."""
        n = self.count
        if n <= 0:
            return None
        if metric == "mean":
            return self.total / n
        if metric == "mean_abs":
            return self.total_abs / n
        if metric == "rms":
            return math.sqrt(max(self.total_sq, 0.0) / n)
        if metric == "max":
            return self._maxs[0][1]
        if metric == "min":
            return self._mins[0][1]
        if metric == "std":
            m = self.total / n
            return math.sqrt(max(self.total_sq / n - m * m, 0.0))
        if metric == "range":
            return self._maxs[0][1] - self._mins[0][1]
        if metric == "peak":
            return max(abs(self._maxs[0][1]), abs(self._mins[0][1]))
        if metric == "crest":
            rms = math.sqrt(max(self.total_sq, 0.0) / n)
            return max(abs(self._maxs[0][1]), abs(self._mins[0][1])) / rms if rms else None
        if metric in ("kurtosis", "skewness"):
            if self.mcount <= 0:
                return None
            m = Moments(self.mcount, self.ref, self.s1, self.s2, self.s3, self.s4)
            return m.kurtosis if metric == "kurtosis" else m.skewness
        raise ValueError(f"unknown metric {metric!r}")


class Alarm:
    """One alarm from its raise to its clear (a row of the history)."""

    __slots__ = ("id", "rule", "kind", "machine", "sensor", "stype", "metric", "severity",
                 "level", "clear_level", "message", "state", "raised_t", "value", "peak",
                 "cleared_t", "clear_reason", "acked_t", "acked_by")

    COLUMNS = __slots__

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))
        if self.state is None:
            self.state = "active"

    def row(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def note(self, value, above):
        """The latest value, and the worst one (highest for above rules)."""
        self.value = value
        peak = self.peak
        if peak is None or (value > peak if above else value < peak):
            self.peak = value

    def as_dict(self, zone):
        """JSON-ready; times as epoch floats (``*_t``) and ISO text in ``zone``."""
        return {
            "id": self.id,
            "rule": self.rule,
            "kind": self.kind,
            "machine": self.machine,
            "sensor": self.sensor or None,
            "type": self.stype,
            "metric": self.metric,
            "state": self.state,
            "severity": self.severity,
            "value": self.value,
            "peak": self.peak,
            "level": self.level,
            "clear_level": self.clear_level,
            "message": self.message,
            "raised_t": self.raised_t,
            "raised": iso_time(self.raised_t, zone),
            "cleared_t": self.cleared_t,
            "cleared": iso_time(self.cleared_t, zone),
            "clear_reason": self.clear_reason,
            "acknowledged": self.acked_t is not None,
            "acked_t": self.acked_t,
            "acked": iso_time(self.acked_t, zone),
            "acked_by": self.acked_by,
        }


def iso_time(t, zone):
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, zone).isoformat(timespec="milliseconds")
