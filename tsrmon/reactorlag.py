"""How late the reactor runs its timers: a histogram for ``/metrics``.

Every ``interval`` seconds a timer is scheduled; when it fires, its lateness
(the time past the moment it was due, on a monotonic clock so wall-clock
steps do not count) is recorded into fixed buckets.  A reactor blocked by a
long computation, a slow disk write on its thread or a swapped-out process
shows up here before anything else does.  Exported as the histogram
``tsrmon_reactor_lag_seconds``; the largest lateness of the last ``window``
seconds is in ``/healthz`` (``checks.reactor.lag_max_recent_seconds``).
"""

import bisect
import time
from collections import deque

from twisted.application import service
from zope.interface import implementer

from tsrmon.rooms import ICounters, IHealth

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@implementer(IHealth, ICounters)
class ReactorLagService(service.Service):
    """``clock`` schedules the timer (the reactor, or a ``task.Clock`` in
    tests); ``now`` measures it (``time.monotonic`` by default)."""

    name = "reactorlag"
    health_key = "reactor"  # IHealth: its /healthz check
    counters_key = "reactor"  # ICounters: its /metrics prefix

    def __init__(self, clock, interval=0.25, window=60.0, now=None, buckets=BUCKETS):
        self.clock = clock
        self.interval = interval
        self.window = window
        self.now = now or time.monotonic
        self.buckets = tuple(buckets)
        self.bucket_counts = [0] * len(self.buckets)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0
        self.max = 0.0
        self.recent = deque()  # (when, lag) of the last `window` seconds, lag-decreasing
        self._due = None
        self._call = None

    def startService(self):
        super().startService()
        self._schedule()

    def stopService(self):
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self):
        self._due = self.now() + self.interval
        self._call = self.clock.callLater(self.interval, self._fired)

    def _fired(self):
        self._call = None
        now = self.now()
        self.record(max(0.0, now - self._due), now)
        if self.running:
            self._schedule()

    def record(self, lag, now):
        self.count += 1
        self.sum += lag
        self.max = max(self.max, lag)
        i = bisect.bisect_left(self.buckets, lag)
        if i < len(self.buckets):
            self.bucket_counts[i] += 1
        # A monotonic deque: the front is the largest lag still in the window.
        recent = self.recent
        while recent and recent[-1][1] <= lag:
            recent.pop()
        recent.append((now, lag))
        while recent and recent[0][0] < now - self.window:
            recent.popleft()

    def recent_max(self):
        now = self.now()
        while self.recent and self.recent[0][0] < now - self.window:
            self.recent.popleft()
        return self.recent[0][1] if self.recent else 0.0

    def histogram(self):
        """``{"buckets": [(le, cumulative count), ..., (inf, count)], "sum", "count"}``."""
        out, total = [], 0
        for le, n in zip(self.buckets, self.bucket_counts):
            total += n
            out.append((le, total))
        out.append((float("inf"), self.count))
        return {"buckets": out, "sum": self.sum, "count": self.count}

    def counters(self):
        """For /metrics: the histogram and the recent maximum (a gauge)."""
        return {"lag_seconds": self.histogram(), "lag_max_recent_seconds": self.recent_max()}

    def healthy(self):
        # Informative only: a slow moment must not make the daemon "unhealthy".
        return {"ok": True, "lag_max_recent_seconds": round(self.recent_max(), 6),
                "lag_max_seconds": round(self.max, 6), "interval": self.interval}

    health = healthy  # IHealth
