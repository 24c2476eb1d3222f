"""The CPU share of the reactor's lag (tsrmon/reactorlag.py): the hostile
tests bound a frame's cost by it, because on a shared machine a timer's
wall-clock lateness is mostly other processes holding the CPUs."""

import math

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock

from tsrmon.reactorlag import ReactorLagService
from tsrmon.web.metrics import RestMetrics


class ThreadClock:
    """A stand-in for ``time.thread_time`` the test moves by hand."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_cpu_share_is_the_reactor_threads_own_time_capped_at_the_lag():
    clock, cpu = Clock(), ThreadClock()
    lag = ReactorLagService(clock, interval=0.25, window=10.0, now=clock.seconds, cpu=cpu)
    lag.startService()
    try:
        # 0.75 s late, of which the reactor thread computed 0.05 s: the CPUs
        # were busy with other processes.
        cpu.t += 0.05
        clock.advance(1.0)
        # 0.5 s late and 0.6 s of reactor CPU since it was scheduled (some
        # before it was due): at most the lateness is the reactor's own.
        cpu.t += 0.6
        clock.advance(0.75)
        clock.advance(0.25)  # on time, a little work
        assert lag.count == 3 and math.isclose(lag.max, 0.75)
        h = lag.cpu_lag.histogram()
        assert h["count"] == 3 and math.isclose(h["sum"], 0.55)
        assert dict(h["buckets"])[0.05] == 2 and dict(h["buckets"])[0.5] == 3
        health = lag.healthy()
        assert math.isclose(health["lag_max_recent_seconds"], 0.75)
        assert math.isclose(health["cpu_lag_max_recent_seconds"], 0.5)
        fams = {f.name: f for f in text_string_to_metric_families(
            RestMetrics(None, {"reactor": lag.counters}).render().decode())}
        assert fams["tsrmon_reactor_cpu_lag_seconds"].type == "histogram"
        assert fams["tsrmon_reactor_cpu_lag_max_recent_seconds"].type == "gauge"
        count = [s.value for s in fams["tsrmon_reactor_cpu_lag_seconds"].samples
                 if s.name == "tsrmon_reactor_cpu_lag_seconds_count"]
        assert count == [3]
    finally:
        lag.stopService()
