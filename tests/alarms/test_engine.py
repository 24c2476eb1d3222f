import math
import random

import pytest

from tsrmon.alarms.engine import (ACTIVE, CLEAR, INACTIVE, PENDING, RAISE, Tracker, WindowSums,
                                  advance)
from tsrmon.stats.sums import PartialSums

METRICS = ("mean", "mean_abs", "rms", "min", "max", "std", "range")


def expected(seconds, t, window, step=1):
    """Brute force: merge the seconds whose bucket reaches into (t - window, t]."""
    first = t - window + 1
    merged = PartialSums()
    for st, sums in reversed(seconds):
        if st <= first - step:
            break
        bucket = st - st % step
        if bucket + step > first and st <= t:
            merged.merge(sums)
    return merged


def metric_of(sums, metric):
    if metric == "range":
        return sums.maximum - sums.minimum
    if metric == "min":
        return sums.minimum
    if metric == "max":
        return sums.maximum
    return getattr(sums, metric)


@pytest.mark.parametrize("window", [1, 7, 60, 900])
def test_window_matches_a_merge_of_its_seconds(window):
    rng = random.Random(window)
    w = WindowSums(window)
    seen = []
    t = 1_000_000
    for _ in range(1500 if window < 100 else 700):  # ~1400 s: more than a window
        t += rng.choice((1, 1, 1, 2, 5))  # gaps: seconds without data
        sums = PartialSums.of([rng.gauss(3, 2) for _ in range(rng.randint(1, 20))])
        w.add(t, sums)
        seen.append((t, sums))
        want = expected(seen, t, window, w.step)
        assert w.count == want.count
        for metric in METRICS:
            # std subtracts two near-equal numbers: rounding of the running
            # totals shows as ~1e-7 where the exact figure is 0.
            tol = 1e-6 if metric == "std" else 1e-9
            assert w.value(metric) == pytest.approx(metric_of(want, metric), rel=1e-9, abs=tol)


def test_window_coverage_reset_and_empty():
    w = WindowSums(10)
    assert w.value("mean") is None and not w.covered
    for t in range(100, 109):
        w.add(t, PartialSums.of([1.0, 3.0]))
    assert not w.covered
    w.add(109, PartialSums.of([2.0]))
    assert w.covered and w.value("range") == 2.0
    w.add(50, PartialSums.of([7.0]))  # clock stepped back: start again
    assert not w.covered and w.value("mean") == 7.0
    w.add(51, PartialSums())  # an empty second changes nothing
    assert w.count == 1


def test_long_windows_keep_a_bounded_number_of_buckets():
    w = WindowSums(3600)
    for t in range(0, 7200):
        w.add(t, PartialSums.of([float(t % 7)]))
    assert len(w.buckets) <= 361
    assert w.step == 10
    assert math.isclose(w.value("mean"), sum(float(t % 7) for t in range(3600, 7200)) / 3600, rel_tol=1e-12)


def test_state_machine_duration_and_hysteresis():
    tr = Tracker("r", "m", "s")
    # pending needs the condition for 3 s without a break
    assert advance(tr, 0, True, False, 3, 2) is None and tr.state == PENDING
    assert advance(tr, 1, False, False, 3, 2) is None and tr.state == INACTIVE
    assert [advance(tr, t, True, False, 3, 2) for t in range(2, 6)] == [None, None, None, RAISE]
    assert tr.state == ACTIVE
    # re-entering the condition while active raises nothing again
    assert advance(tr, 6, True, False, 3, 2) is None
    # the hysteresis band (neither tripped nor cleared) keeps it active and resets the clear timer
    assert advance(tr, 7, False, True, 3, 2) is None
    assert advance(tr, 8, False, False, 3, 2) is None
    assert advance(tr, 9, False, True, 3, 2) is None
    assert advance(tr, 10, False, True, 3, 2) is None
    assert advance(tr, 11, False, True, 3, 2) is CLEAR
    assert tr.state == INACTIVE


def test_zero_durations_raise_and_clear_at_once():
    tr = Tracker("r", "m", "")
    assert advance(tr, 0, True, False, 0, 0) is RAISE
    assert advance(tr, 1, False, True, 0, 0) is CLEAR
