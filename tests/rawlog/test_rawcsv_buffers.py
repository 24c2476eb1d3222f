"""Bounded memory of the raw CSV log (issue 18): flat float64 columns,
early flushes, backpressure while the writer is behind, a hard cap."""

import array
import gc

import numpy as np
import pytest_twisted
from twisted.internet import defer

from tests.rawlog.test_rawcsv import Harness, rows
from tsrmon.rawlog.buffers import FrameBuffer, columns_from_raw, raw_buffers
from tsrmon.rawlog.service import RawCSVService


def test_a_frame_buffer_holds_flat_untracked_columns_of_lists_and_arrays():
    buf = FrameBuffer()
    values = [0.5, -1.25]
    assert buf.add(10.0, values) == (2, 0)
    values[0] = 99.0  # the caller may reuse its list: the buffer copied it
    assert buf.add(10.5, np.array([3.0, 4.0, 5.0])) == (3, 0)
    assert buf.add(11.0, (6, 7.5)) == (2, 0)  # tuples and ints are numbers too
    assert buf.add(11.5, np.array([[8.0], [9.0]], dtype=np.float32)) == (2, 0)
    times, counts, data = buf.columns()
    assert times.tolist() == [10.0, 10.5, 11.0, 11.5]
    assert counts.tolist() == [2, 3, 2, 2]
    assert data.tolist() == [0.5, -1.25, 3.0, 4.0, 5.0, 6.0, 7.5, 8.0, 9.0]
    # Columns and segments, never a Python object per sample for the GC to walk.
    assert type(buf.times) is array.array and type(buf.counts) is array.array
    assert [type(seg) for seg in buf.segments] == [array.array, np.ndarray, array.array, np.ndarray]
    for seg in buf.segments:
        assert all(isinstance(r, type) for r in gc.get_referents(seg))


def test_a_float64_array_is_kept_as_it_is_and_other_arrays_are_converted():
    buf = FrameBuffer()
    kept = np.arange(4.0)
    buf.add(1.0, kept)
    assert buf.segments[-1] is kept  # the RawSink contract: not changed afterwards, so no copy
    buf.add(2.0, np.array(["1.5", "x"], dtype=object))  # not all numbers: the slow way
    buf.add(3.0, np.arange(2, dtype=np.int32))
    assert buf.columns()[2].tolist() == [0.0, 1.0, 2.0, 3.0, 1.5, 0.0, 1.0]
    assert buf.columns()[1].tolist() == [4, 1, 2] and buf.samples == 7


def started(tmp_path):
    h = Harness(tmp_path)
    h.svc.startService()
    return h


def test_values_that_are_not_numbers_are_dropped_at_the_door_and_counted(tmp_path):
    buf = FrameBuffer()
    assert buf.add(1.0, [1.0, "x", None, float("nan"), 2]) == (3, 2)
    assert buf.columns()[2][[0, 2]].tolist() == [1.0, 2.0]
    h = started(tmp_path)
    h.svc.write("M", "s", [1.5, "x"], h.clock.seconds())
    h.clock.advance(RawCSVService.FLUSH_INTERVAL)
    assert rows(h.file("M", "20261126_s.csv")) == [(b"10:00:00", b"1.5")]
    assert h.svc.counters()["dropped_bad_values"] == 1
    assert any("not numbers" in m for m in h.messages("warn"))
    h.svc.stopService()


def test_a_batch_crosses_the_pipe_as_raw_column_buffers():
    buf = FrameBuffer()
    buf.add(5.0, [1.0, 2.0])
    buf.add(6.0, np.arange(3.0))
    keys, buffers = raw_buffers({("M", "s"): buf})
    back = columns_from_raw(keys, [bytes(memoryview(b).cast("B")) for b in buffers])
    times, counts, data = back["M", "s"]
    assert times.tolist() == [5.0, 6.0] and counts.tolist() == [2, 3]
    assert data.tolist() == [1.0, 2.0, 0.0, 1.0, 2.0]


def test_a_large_buffer_is_flushed_before_the_timer(tmp_path):
    h = started(tmp_path)
    h.svc.FLUSH_AT_SAMPLES = 100
    t = h.clock.seconds()
    for i in range(9):
        h.svc.write("M", "s", np.full(10, float(i)), t)
    assert not (h.root / "M").exists()
    h.svc.write("M", "s", np.full(10, 9.0), t)  # 100 samples: flushed now, inline here
    assert len(rows(h.file("M", "20261126_s.csv"))) == 100
    assert h.svc.counters()["early_flushes"] == 1 and h.svc.counters()["buffered_samples"] == 0
    h.svc.stopService()


def test_backpressure_while_the_writer_is_behind_then_released(tmp_path):
    h = started(tmp_path)
    calls = []
    h.svc.backpressure = calls.append
    stuck = []

    def run_in_thread(fn, *args):
        d = defer.Deferred()
        stuck.append((d, fn, args))
        return d

    h.svc._run_in_thread = run_in_thread
    h.svc.FLUSH_AT_SAMPLES = 100
    h.svc.MAX_BUFFER_SAMPLES = 300
    h.svc.MAX_BACKLOG_SAMPLES = 10_000
    t = h.clock.seconds()
    for _ in range(10):
        h.svc.write("M", "s", np.ones(10), t)
    assert len(stuck) == 1  # the early flush hangs on a slow disk
    for _ in range(29):
        h.svc.write("M", "s", np.ones(10), t)
    assert calls == []  # 290 waiting: under the bound
    h.svc.write("M", "s", np.ones(10), t)
    assert calls == [True]  # 300 waiting behind a busy writer: DAQ reading pauses
    assert h.svc.counters()["congested"] and h.svc.counters()["dropped_backlog"] == 0
    d, fn, args = stuck.pop()
    d.callback(fn(*args))  # the disk answers; the 300 waiting go out at once
    assert len(stuck) == 1
    assert calls == [True, False]
    assert h.svc.counters()["backpressure_episodes"] == 1
    d, fn, args = stuck.pop()
    d.callback(fn(*args))
    assert len(rows(h.file("M", "20261126_s.csv"))) == 400
    h.svc._run_in_thread = lambda fn, *a: defer.maybeDeferred(fn, *a)
    h.svc.stopService()


def stuck_jobs(h):
    stuck = []

    def run_in_thread(fn, *args):
        d = defer.Deferred()
        stuck.append((d, fn, args))
        return d

    h.svc._run_in_thread = run_in_thread
    h.svc.FLUSH_AT_SAMPLES = 100
    h.svc.MAX_BUFFER_SAMPLES = 200
    h.svc.MAX_BACKLOG_SAMPLES = 500
    return stuck


def test_without_backpressure_a_burst_under_the_hard_cap_waits_and_is_written(tmp_path):
    """Nobody can hold the DAQs back: past MAX_BUFFER_SAMPLES the rows wait
    (up to the hard cap) rather than being dropped, so a burst of the largest
    legal frames is written whole and /healthz stays ok."""
    h = started(tmp_path)
    stuck = stuck_jobs(h)
    t = h.clock.seconds()
    for _ in range(49):
        h.svc.write("M", "s", np.ones(10), t)
    # 100 went to the stuck job; 390 wait behind it, past MAX_BUFFER_SAMPLES.
    c = h.svc.counters()
    assert c["dropped_backlog"] == 0 and c["buffered_samples"] == 390 and not c["congested"]
    assert h.svc.healthy()["state"] == "ok"
    h.clock.advance(RawCSVService.MAX_CONGESTED + RawCSVService.FLUSH_INTERVAL)
    assert h.svc.healthy()["state"] == "ok" and h.svc.counters()["dropped_backlog"] == 0
    d, fn, args = stuck.pop()
    d.callback(fn(*args))  # the first job is written; the 390 go out at once
    d, fn, args = stuck.pop()
    d.callback(fn(*args))
    assert h.svc.healthy()["state"] == "ok"
    assert len(rows(h.file("M", "20261126_s.csv"))) == 490


def test_the_hard_cap_holds_a_burst_of_the_largest_legal_frames(tmp_path):
    h = started(tmp_path)
    assert RawCSVService.BURST_FRAMES * h.config.daq.max_samples_per_frame == RawCSVService.MAX_BACKLOG_SAMPLES
    assert h.svc.MAX_BACKLOG_SAMPLES == RawCSVService.MAX_BACKLOG_SAMPLES
    h.svc.stopService()
    config = h.config.replace(daq={"max_samples_per_frame": 3_000_000})
    svc = RawCSVService(config, h.clock, None)
    assert svc.MAX_BACKLOG_SAMPLES == RawCSVService.BURST_FRAMES * 3_000_000
    config = h.config.replace(daq={"max_samples_per_frame": 1000})
    assert RawCSVService(config, h.clock, None).MAX_BACKLOG_SAMPLES == RawCSVService.MAX_BACKLOG_SAMPLES


def test_without_backpressure_rows_past_the_hard_cap_are_dropped_and_counted(tmp_path):
    h = started(tmp_path)
    stuck = stuck_jobs(h)
    t = h.clock.seconds()
    for _ in range(60):
        h.svc.write("M", "s", np.ones(10), t)
    # 100 went to the stuck job; the 500 behind it were dropped at the hard cap.
    c = h.svc.counters()
    assert c["dropped_backlog"] == 500 and c["buffered_samples"] == 0 and not c["congested"]
    assert h.svc.healthy()["state"] == "disk behind"
    for _ in range(20):  # the disk is known to be behind: dropped at MAX_BUFFER_SAMPLES now
        h.svc.write("M", "s", np.ones(10), t)
    assert h.svc.counters()["dropped_backlog"] == 700
    assert h.svc.healthy()["state"] == "disk behind"
    d, fn, args = stuck.pop()
    d.callback(fn(*args))
    assert h.svc.healthy()["ok"]
    assert len(rows(h.file("M", "20261126_s.csv"))) == 100


def test_a_stalled_disk_ends_backpressure_and_costs_only_raw_rows(tmp_path):
    h = started(tmp_path)
    calls = []
    h.svc.backpressure = calls.append
    stuck = stuck_jobs(h)
    t = h.clock.seconds()
    for _ in range(30):
        h.svc.write("M", "s", np.ones(10), t)
    assert calls == [True]
    h.clock.advance(RawCSVService.MAX_CONGESTED)  # still no answer from the disk
    assert calls == [True, False]
    assert h.svc.counters()["dropped_backlog"] == 200
    for _ in range(20):  # reading goes on; the raw log drops, without asking again
        h.svc.write("M", "s", np.ones(10), t)
    assert calls == [True, False] and h.svc.counters()["dropped_backlog"] == 400
    d, fn, args = stuck.pop()
    d.callback(fn(*args))
    assert h.svc.healthy()["ok"]


def test_the_hard_cap_holds_while_reading_is_paused(tmp_path):
    h = started(tmp_path)
    calls = []
    h.svc.backpressure = calls.append
    stuck = stuck_jobs(h)
    t = h.clock.seconds()
    for _ in range(60):  # a DAQ's last large read arrives after the pause
        h.svc.write("M", "s", np.ones(10), t)
    assert calls == [True]
    assert h.svc.counters()["dropped_backlog"] == 500
    d, fn, args = stuck.pop()
    d.callback(fn(*args))
    assert calls == [True, False]


@pytest_twisted.inlineCallbacks
def test_the_process_worker_writes_arrays_and_lists_alike(tmp_path):
    from twisted.internet import reactor

    h = Harness(tmp_path, reactor=None)
    config, clock = h.config, h.clock
    svc = RawCSVService(config, clock, reactor, worker="process")
    svc.startService()
    t = clock.seconds()
    svc.write("M", "s", [0.5, 0.25], t)
    svc.write("M", "s", np.array([1e-7, -0.0, 1.7976931348623157e308]), t + 0.5)
    svc.write("M", "s", np.array([float("nan")]), t + 1.0)
    yield svc.stopService()
    assert rows(h.file("M", "20261126_s.csv")) == [
        (b"10:00:00", b"0.5"), (b"10:00:00", b"0.25"), (b"10:00:00", b"1e-7"),
        (b"10:00:00", b"-0.0"), (b"10:00:00", b"1.7976931348623157e+308"), (b"10:00:01", b"nan")]


def test_a_large_batch_is_formatted_and_appended_in_pieces_in_order(tmp_path, monkeypatch):
    from tsrmon.rawlog import files

    monkeypatch.setattr(files, "PIECE_SAMPLES", 25)
    h = started(tmp_path)
    t = h.clock.seconds()
    for k in range(10):  # 10 frames of 10: pieces of 2 frames (20 samples)
        h.svc.write("M", "s", np.arange(10.0) + 10 * k, t + k)
    h.svc.write("M", "s", np.arange(100.0, 160.0), t + 10)  # a frame longer than a piece: a piece of its own
    h.svc.flush()
    values = [float(v) for _, v in rows(h.file("M", "20261126_s.csv"))]
    assert values == [float(v) for v in range(160)]
    assert h.svc.counters()["rows_written"] == 160
    h.svc.stopService()
