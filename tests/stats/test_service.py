"""StatsService on a driven Clock with the in-memory store.

Every scenario is checked against an oracle that buckets each fed sample by
its own local wall time (tests/stats/helpers.py), plus the explicit facts of
the calendar edge it crosses.
"""

import math

import pytest
import pytest_twisted

from tests.stats.helpers import Rig, assert_matches_oracle, config, epoch
from tsrmon.stats.service import reduce_values
from tsrmon.stats.sums import PartialSums

BERLIN = "Europe/Berlin"
SEOUL = "Asia/Seoul"


def labels(store, sensor, level, machine="M"):
    return [(text, off) for _t0, off, text, _s in store.table(machine, sensor, level)]


# -- continuous data across each calendar edge --------------------------------

EDGES = [
    # (zone, local start, seconds, step)
    pytest.param(SEOUL, "2026-11-26 10:58:50", 150, 1, id="minute-and-hour-seoul"),
    pytest.param(SEOUL, "2026-11-26 23:59:30", 60, 1, id="local-midnight-seoul"),
    pytest.param(BERLIN, "2026-11-30 23:59:30", 60, 1, id="month-end-berlin"),
    pytest.param(BERLIN, "2026-12-31 23:59:00", 120, 1, id="year-end-berlin"),
    pytest.param(BERLIN, "2026-03-29 01:59:00", 120, 1, id="dst-spring-berlin"),
    pytest.param(BERLIN, "2026-10-25 02:59:00", 120, 1, id="dst-fall-first-berlin"),
    pytest.param(SEOUL, "2026-12-31 23:58:00", 240, 1, id="year-end-seoul"),
    # Frames faster than the 1 s tick, which is out of phase with the seconds.
    pytest.param(BERLIN, "2026-12-31 23:59:58.5", 4, 0.3, id="subsecond-year-end"),
]


@pytest.mark.parametrize("zone,start,seconds,step", EDGES)
def test_continuous_data_across_edges(tmp_path, zone, start, seconds, step):
    rig = Rig(config(tmp_path, zone), epoch(zone, start))
    rig.run(seconds, step)
    rig.stats.stopService()
    assert_matches_oracle(rig.store, zone, rig.fed)
    # Nothing pending, every sample counted exactly once at every level.
    fed_count = sum(len(v) for _t, s, _ty, v in rig.fed if s == "vib")
    for level in ("minute", "hour", "day", "month", "year"):
        assert sum(s.count for *_x, s in rig.store.table("M", "vib", level)) == fed_count


def test_spring_forward_day_has_23_hours(tmp_path):
    zone = BERLIN
    rig = Rig(config(tmp_path, zone), epoch(zone, "2026-03-29 00:00:00"))
    rig.run(24 * 3600 - 3600, step=300)  # the 29th lasts 23 h
    rig.idle(120)
    rig.stats.stopService()
    assert_matches_oracle(rig.store, zone, rig.fed)
    hours = labels(rig.store, "vib", "hour")
    assert len(hours) == 23
    assert not any(text.startswith("2026-03-29 02:") for text, _ in hours)
    assert ("2026-03-29 01:00:00", 3600) in hours and ("2026-03-29 03:00:00", 7200) in hours
    days = rig.store.table("M", "vib", "day")
    assert [d[2] for d in days] == ["2026-03-29 00:00:00"]
    assert days[0][3].count == len([f for f in rig.fed if f[1] == "vib"]) * 30


def test_fall_back_day_has_25_hours_and_two_2am_rows(tmp_path):
    zone = BERLIN
    rig = Rig(config(tmp_path, zone), epoch(zone, "2026-10-25 00:00:00"))
    rig.run(25 * 3600, step=300)
    rig.stats.stopService()
    assert_matches_oracle(rig.store, zone, rig.fed)
    hours = rig.store.table("M", "vib", "hour")
    assert len(hours) == 25
    twos = [(t0, off) for t0, off, text, _s in hours if text == "2026-10-25 02:00:00"]
    assert [off for _, off in twos] == [7200, 3600]
    assert twos[1][0] - twos[0][0] == 3600
    assert [d[2] for d in rig.store.table("M", "vib", "day")] == ["2026-10-25 00:00:00"]


@pytest.mark.parametrize("zone,start,outage", [
    pytest.param(BERLIN, "2026-03-29 01:58:00", 3 * 3600, id="outage-over-spring-forward"),
    pytest.param(BERLIN, "2026-10-25 01:58:00", 3 * 3600, id="outage-over-fall-back"),
    pytest.param(BERLIN, "2026-12-31 22:59:30", 2 * 3600, id="outage-over-year-end"),
    pytest.param(SEOUL, "2026-11-26 23:59:30", 3 * 3600, id="outage-over-midnight-seoul"),
])
def test_no_data_outage_closes_on_time_and_never_mislabels(tmp_path, zone, start, outage):
    cfg = config(tmp_path, zone, flush=10)
    rig = Rig(cfg, epoch(zone, start))
    rig.run(20)
    last_fed = rig.clock.seconds()
    # Silence: the clock alone reduces the last second and flushes it.
    rig.idle(outage, step=5)
    before = {lvl: labels(rig.store, "vib", lvl) for lvl in ("hour", "day")}
    assert before["hour"], "the bucket with data was not stored while no data came"
    stored = sum(s.count for *_x, s in rig.store.table("M", "vib", "hour"))
    assert stored == 20 * 30
    assert rig.live.seconds[-1][3] == math.floor(last_fed - 1)
    rig.run(20)
    rig.stats.stopService()
    expected = assert_matches_oracle(rig.store, zone, rig.fed)
    # Only buckets that had samples have rows: none for the silent hours.
    assert len(labels(rig.store, "vib", "hour")) == len(expected[("vib", "hour")])


def test_late_samples_merge_into_past_buckets(tmp_path):
    zone = BERLIN
    rig = Rig(config(tmp_path, zone), epoch(zone, "2027-01-01 00:30:00"))
    rig.run(10)
    late_t = epoch(zone, "2026-12-31 23:15:07")
    values = [1.0, -2.0, 3.0]
    rig.hub.data(rig.machine, [("vib", "VIB", values)], t=late_t, late=True)
    rig.fed.append((late_t, "vib", "VIB", values))
    rig.stats.stopService()
    assert_matches_oracle(rig.store, zone, rig.fed)
    years = labels(rig.store, "vib", "year")
    assert [y for y, _ in years] == ["2026-01-01 00:00:00", "2027-01-01 00:00:00"]
    assert rig.stats.counters()["late_samples"] == 3


def test_seconds_go_to_the_hub_for_the_live_layer(tmp_path):
    zone = SEOUL
    start = epoch(zone, "2026-11-26 10:00:00")
    rig = Rig(config(tmp_path, zone), start)
    rig.feed()
    rig.clock.advance(0.5)
    rig.feed()  # same second: reduced together
    rig.clock.advance(0.6)  # the tick reduces it without waiting for data
    got = {(s, t): sums for _m, s, _ty, t, sums in rig.live.seconds}
    vib = [v for t, s, _ty, v in rig.fed if s == "vib"]
    assert got[("vib", start)] == PartialSums.of(vib[0] + vib[1])
    assert set(got) == {("vib", start), ("temp", start)}


@pytest_twisted.inlineCallbacks
def test_stop_flushes_everything_pending(tmp_path):
    zone = BERLIN
    rig = Rig(config(tmp_path, zone, flush=3600), epoch(zone, "2026-06-01 12:00:00.250"))
    rig.run(5)
    rig.feed()  # still in the current, unreduced second
    assert rig.store.table("M", "vib", "hour") == []
    yield rig.stats.stopService()
    assert_matches_oracle(rig.store, zone, rig.fed)
    assert rig.store.sensors[("M", "vib")] == ("VIB", "ABS")
    assert rig.store.sensors[("M", "temp")] == ("TEMP", "REAL")


def test_reduce_values_ragged_and_arrays():
    import numpy as np
    chunks = [[1.0, -2.0], np.array([3.0]), [0.5, 0.25, -4.0]]
    flat = [1.0, -2.0, 3.0, 0.5, 0.25, -4.0]
    assert reduce_values(chunks) == PartialSums.of(flat)
    assert reduce_values([[1.0, 2.0], [3.0, 4.0]]) == PartialSums.of([1.0, 2.0, 3.0, 4.0])


def test_flush_mid_second_stores_everything_and_live_gets_one_second(tmp_path):
    zone = SEOUL
    start = epoch(zone, "2026-11-26 10:00:00")
    rig = Rig(config(tmp_path, zone, flush=3600), start)
    rig.feed()
    rig.clock.advance(0.3)
    rig.stats.flush()  # mid-second: the samples reach the store now
    assert sum(s.count for *_x, s in rig.store.table("M", "vib", "hour")) == 30
    assert rig.live.seconds == []
    rig.feed()
    rig.clock.advance(0.8)  # the tick ends the second
    vib = [v for t, s, _ty, v in rig.fed if s == "vib"]
    got = [(t, sums) for _m, s, _ty, t, sums in rig.live.seconds if s == "vib"]
    want = PartialSums.of(vib[0] + vib[1])
    assert [t for t, _ in got] == [start]
    sums = got[0][1]
    assert (sums.count, sums.minimum, sums.maximum) == (want.count, want.minimum, want.maximum)
    assert sums.total == pytest.approx(want.total, rel=1e-12, abs=1e-12)
    assert sums.total_sq == pytest.approx(want.total_sq, rel=1e-12)
    rig.stats.stopService()
    assert_matches_oracle(rig.store, zone, rig.fed)


def test_long_arrays_are_reduced_as_they_arrive_with_the_same_sums(tmp_path):
    """A full-rate chunk (an array of StatsService.REDUCE_AT samples or more)
    is folded at once: nothing is held for the tick, and the second's sums
    are those of every sample, short lists of the same second included."""
    import numpy as np
    from twisted.internet import task

    from tests.stats.helpers import LiveRecorder
    from tsrmon.stats.memory import MemoryStore
    from tsrmon.stats.service import StatsService
    clock = task.Clock()
    clock.advance(1_800_000_000.2)
    live = LiveRecorder()
    stats = StatsService(config(tmp_path, "UTC"), clock, [live], MemoryStore())
    rng = np.random.default_rng(7)
    big = [rng.normal(size=StatsService.REDUCE_AT + k) for k in (0, 5)]
    small = [0.5] * 30
    t = clock.seconds()
    stats.add("M", "vib", "VIB", big[0], t)
    assert stats._pending == {}  # folded, not held
    stats.add("M", "vib", "VIB", small, t)
    stats.add("M", "vib", "VIB", big[1], t)
    clock.advance(1)
    stats.add("M", "vib", "VIB", [1.0], clock.seconds())  # rolls the second
    (second,) = [s for s in live.seconds if s[1] == "vib"][:1]
    sums = second[-1]
    every = np.concatenate(big + [np.array(small)])
    assert sums.count == every.size
    assert sums.minimum == every.min() and sums.maximum == every.max()
    assert math.isclose(sums.total, every.sum(), rel_tol=1e-12, abs_tol=1e-9)
    assert math.isclose(sums.total_sq, float(every @ every), rel_tol=1e-12)
    assert sums.moments.count == every.size


def test_a_burst_of_small_frames_is_folded_in_bounded_pieces(tmp_path):
    """Frames far faster than real time (a DAQ catching up): a second never
    holds more than FOLD_AT samples of a sensor, and its sums are still those
    of every sample, in one ``second`` per second."""
    import numpy as np
    from twisted.internet import task

    from tests.stats.helpers import LiveRecorder
    from tsrmon.stats.memory import MemoryStore
    from tsrmon.stats.service import StatsService
    clock = task.Clock()
    clock.advance(1_800_000_000.2)
    live = LiveRecorder()
    stats = StatsService(config(tmp_path, "UTC"), clock, [live], MemoryStore())
    stats.FOLD_AT = 3000  # 100 frames of 30
    rng = np.random.default_rng(11)
    frames = [rng.normal(size=30).tolist() for _ in range(1000)]
    t = clock.seconds()
    most = 0
    for f in frames:
        stats.add("M", "vib", "VIB", f, t)
        pending = stats._pending.get(("M", "vib", "VIB"))
        most = max(most, pending.samples if pending is not None else 0)
    assert most < stats.FOLD_AT
    assert stats.samples == 30_000  # folded in ten pieces of 100 frames as they came
    clock.advance(1)
    stats.add("M", "vib", "VIB", [1.0], clock.seconds())  # rolls the second
    seconds = [s for s in live.seconds if s[1] == "vib"]
    assert len(seconds) == 1
    sums = seconds[0][-1]
    every = np.array(frames).ravel()
    assert sums.count == every.size == sums.moments.count
    assert sums.minimum == every.min() and sums.maximum == every.max()
    assert math.isclose(sums.total, every.sum(), rel_tol=1e-12, abs_tol=1e-9)
    assert math.isclose(sums.total_sq, float(every @ every), rel_tol=1e-12)


def test_pending_samples_are_flat_float64_columns_with_the_same_sums(tmp_path):
    """Issue 18: short chunks wait for the tick as one array('d') per key
    (no list per frame, no Python float per sample for the GC to walk), and
    the second's sums are those of every sample as given, lists, tuples and
    small or strided arrays alike."""
    import array
    import gc

    import numpy as np
    from twisted.internet import task
    from twisted.logger import Logger

    from tests.stats.helpers import LiveRecorder
    from tsrmon.stats.memory import MemoryStore
    from tsrmon.stats.service import PendingSamples, StatsService
    clock = task.Clock()
    clock.advance(1_800_000_000.2)
    live = LiveRecorder()
    stats = StatsService(config(tmp_path, "UTC"), clock, [live], MemoryStore())
    rng = np.random.default_rng(11)
    chunks = [rng.normal(size=30).tolist() for _ in range(50)]
    chunks += [tuple(rng.normal(size=3)), rng.normal(size=40), rng.normal(size=(4, 6)).T,
               rng.normal(size=90)[::3], [1, 2, True], rng.normal(size=PendingSamples.KEEP_AT),
               rng.normal(size=(10, 30)), [0.25] * 30]
    given = [list(c) if type(c) is list else c for c in chunks]
    t = clock.seconds()
    for chunk in chunks:
        stats.add("M", "vib", "VIB", chunk, t)
        if type(chunk) is list:
            chunk[0] = 99.0  # the caller may reuse its list: the column copied it
    (pending,) = stats._pending.values()
    # Flat float64 columns, plus the two runs of frames kept as the arrays they came as.
    assert [type(p) for p in pending.pieces] == [array.array, np.ndarray, array.array, np.ndarray,
                                                 array.array]
    for piece in pending.pieces:
        assert all(isinstance(r, type) for r in gc.get_referents(piece))
    assert {p.typecode for p in pending.pieces if type(p) is array.array} == {"d"}
    n = sum(np.size(c) for c in chunks)
    assert pending.array().size == n
    events = []
    stats.log = Logger(observer=events.append)
    stats.add("M", "vib", "VIB", [2.0, "not a number"], t)  # a bug upstream: dropped, logged
    stats.add("M", "vib", "VIB", ("x",), t)
    assert pending.array().size == n
    assert [e["log_format"] for e in events] == ["{key}: cannot reduce a value list of {n}"] * 2
    clock.advance(1)
    stats.add("M", "vib", "VIB", [1.0], clock.seconds())  # rolls the second
    (second,) = [s for s in live.seconds if s[1] == "vib"][:1]
    # Exactly the sums of the former per-frame lists (same samples, same order).
    assert second[-1] == reduce_values(given)
    assert second[-1].count == sum(np.size(c) for c in given) and second[-1].moments is not None
