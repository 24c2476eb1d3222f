"""How late the reactor runs its timers: a histogram for ``/metrics``.

Every ``interval`` seconds a timer is scheduled; when it fires, its lateness
(the time past the moment it was due, on a monotonic clock so wall-clock
steps do not count) is recorded into fixed buckets.  A reactor blocked by a
long computation, a slow disk write on its thread or a swapped-out process
shows up here before anything else does.  Exported as the histogram
``tsrmon_reactor_lag_seconds``; the largest lateness of the last ``window``
seconds is in ``/healthz`` (``checks.reactor.lag_max_recent_seconds``).

On a shared machine most of a timer's lateness can be other processes
holding the CPUs, not tsrmon.  So each lateness also has its CPU share:
the reactor thread's own CPU time since the timer was scheduled, capped at
the lateness (``min(lag, cpu)``: an upper bound of the lateness tsrmon's
own work on the reactor caused; time waiting for a CPU or for the GIL is
not in it).  Exported as ``tsrmon_reactor_cpu_lag_seconds`` (same buckets)
and ``checks.reactor.cpu_lag_max_recent_seconds``.  The 100 ms bound for a
frame within the caps (docs/security.md) is asserted on this share, which a
loaded CI machine does not inflate.
"""

import bisect
import time
from collections import deque

from twisted.application import service
from zope.interface import implementer

from tsrmon.rooms import ICounters, IHealth

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LagSeries:
    """Fixed-bucket histogram of lags, their maximum, and the largest of the
    last ``window`` seconds (a monotonic deque: its front is that maximum)."""

    def __init__(self, buckets, window):
        self.buckets = tuple(buckets)
        self.window = window
        self.bucket_counts = [0] * len(self.buckets)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0
        self.max = 0.0
        self.recent = deque()  # (when, lag), lag-decreasing

    def record(self, lag, now):
        self.count += 1
        self.sum += lag
        self.max = max(self.max, lag)
        i = bisect.bisect_left(self.buckets, lag)
        if i < len(self.buckets):
            self.bucket_counts[i] += 1
        recent = self.recent
        while recent and recent[-1][1] <= lag:
            recent.pop()
        recent.append((now, lag))
        self._expire(now)

    def _expire(self, now):
        while self.recent and self.recent[0][0] < now - self.window:
            self.recent.popleft()

    def recent_max(self, now):
        self._expire(now)
        return self.recent[0][1] if self.recent else 0.0

    def histogram(self):
        """``{"buckets": [(le, cumulative count), ..., (inf, count)], "sum", "count"}``."""
        out, total = [], 0
        for le, n in zip(self.buckets, self.bucket_counts):
            total += n
            out.append((le, total))
        out.append((float("inf"), self.count))
        return {"buckets": out, "sum": self.sum, "count": self.count}


@implementer(IHealth, ICounters)
class ReactorLagService(service.Service):
    """``clock`` schedules the timer (the reactor, or a ``task.Clock`` in
    tests); ``now`` measures it (``time.monotonic`` by default) and
    ``cpu`` the reactor thread's CPU time (``time.thread_time``: the timer
    runs on the reactor thread)."""

    name = "reactorlag"
    health_key = "reactor"  # IHealth: its /healthz check
    counters_key = "reactor"  # ICounters: its /metrics prefix

    def __init__(self, clock, interval=0.25, window=60.0, now=None, buckets=BUCKETS, cpu=None):
        self.clock = clock
        self.interval = interval
        self.now = now or time.monotonic
        self.cpu = cpu or time.thread_time
        self.lag = LagSeries(buckets, window)
        self.cpu_lag = LagSeries(buckets, window)
        self._due = None
        self._cpu_at = None
        self._call = None

    # The wall-clock series under its historical names.
    buckets = property(lambda self: self.lag.buckets)
    window = property(lambda self: self.lag.window)
    count = property(lambda self: self.lag.count)
    sum = property(lambda self: self.lag.sum)
    max = property(lambda self: self.lag.max)

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
        self._cpu_at = self.cpu()
        self._call = self.clock.callLater(self.interval, self._fired)

    def _fired(self):
        self._call = None
        now = self.now()
        lag = max(0.0, now - self._due)
        self.record(lag, now, cpu=max(0.0, self.cpu() - self._cpu_at))
        if self.running:
            self._schedule()

    def record(self, lag, now, cpu=None):
        """One timer ``lag`` seconds late; ``cpu``: the reactor thread's CPU
        seconds since it was scheduled (None: all of the lag counts)."""
        self.lag.record(lag, now)
        self.cpu_lag.record(lag if cpu is None else min(lag, cpu), now)

    def recent_max(self):
        return self.lag.recent_max(self.now())

    def histogram(self):
        return self.lag.histogram()

    def counters(self):
        """For /metrics: both histograms and their recent maxima (gauges)."""
        now = self.now()
        return {"lag_seconds": self.lag.histogram(), "lag_max_recent_seconds": self.lag.recent_max(now),
                "cpu_lag_seconds": self.cpu_lag.histogram(),
                "cpu_lag_max_recent_seconds": self.cpu_lag.recent_max(now)}

    def healthy(self):
        # Informative only: a slow moment must not make the daemon "unhealthy".
        now = self.now()
        return {"ok": True, "lag_max_recent_seconds": round(self.lag.recent_max(now), 6),
                "lag_max_seconds": round(self.lag.max, 6),
                "cpu_lag_max_recent_seconds": round(self.cpu_lag.recent_max(now), 6),
                "cpu_lag_max_seconds": round(self.cpu_lag.max, 6), "interval": self.interval}

    health = healthy  # IHealth
