"""Raw CSV in several worker processes, fed through shared memory (tsrmon.rawlog.arena).

Real worker processes and real files in ``tmp_path``; the daemon's clock is a
Clock, the reactor is real (it spawns the workers and reads their answers).
"""

import gzip
import os
import signal

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.logger import Logger

from tests.rawlog.test_rawcsv import Harness, rows
from tsrmon.config import ConfigError, build_config
from tsrmon.rawlog import arena
from tsrmon.rawlog.arena import Ring
from tsrmon.rawlog.service import RawCSVService

pytestmark = pytest.mark.timeout(60)
needs_shared_memory = pytest.mark.skipif(not arena.supported(), reason="os.memfd_create is Linux only")


# -- the ring ------------------------------------------------------------------

def test_ring_takes_the_lowest_free_span():
    ring = Ring(1024)
    a = ring.take(300)  # rounded up to cache lines: 320
    b = ring.take(300)
    c = ring.take(300)
    assert (a[0], b[0], c[0]) == (0, 320, 640)
    assert ring.take(300) is None  # 64 bytes left at the end
    ring.give_back(b)  # a hole in the middle
    assert ring.take(400) is None
    d = ring.take(200)
    assert d == [320, 576]  # the hole, not the end
    ring.give_back(a)
    e = ring.take(320)
    assert e[0] == 0  # the lowest offset is used again first: few pages touched
    for span in (c, d, e):
        ring.give_back(span)
    assert ring.in_use == 0
    assert ring.take(1024)[0] == 0
    assert ring.take(1) is None


def test_ring_refuses_what_can_never_fit():
    ring = Ring(1024)
    assert ring.take(1025) is None
    assert ring.in_use == 0


# -- several workers -----------------------------------------------------------

def process_harness(tmp_path, workers=2, **data):
    from twisted.internet import reactor

    h = Harness(tmp_path, **data)
    h.svc = RawCSVService(h.config, h.clock, reactor, worker="process", workers=workers)
    h.svc.log = Logger(observer=h.events.append)
    return h


def values(rng, n):
    return np.round(rng.normal(0, 0.3, n), 6)


@needs_shared_memory
@pytest_twisted.inlineCallbacks
def test_sensors_are_shared_out_and_every_row_is_written_in_order(tmp_path):
    h = process_harness(tmp_path)
    h.svc.startService()
    rng = np.random.default_rng(7)
    sensors = ["s1", "s2", "s3", "s4"]
    sent = {s: [] for s in sensors}
    t = h.clock.seconds()
    for k in range(3):  # three flushes, each with every sensor
        for i in range(20):
            for s in sensors:
                v = values(rng, 250)
                sent[s].extend(v.tolist())
                h.svc.write("M", s, v, t + k + i / 20)
        yield h.svc.flush()
    owners = h.svc.owners.owner
    assert sorted(owners.values()) == [0, 0, 1, 1]  # two sensors each
    pids = [w.pid for w in h.svc._workers]
    assert None not in pids and len(set(pids)) == 2 and os.getpid() not in pids
    assert [w.shared_batches for w in h.svc._workers] == [3, 3]
    assert [w.piped_batches for w in h.svc._workers] == [0, 0]
    assert h.svc.counters()["files_open"] == 4
    assert h.svc.counters()["flushes"] == 3
    yield h.svc.stopService()
    assert not any(w.running for w in h.svc._workers)
    assert h.svc.counters()["files_open"] == 0
    for s in sensors:
        got = [float(v) for _, v in rows(h.file("M", f"20261126_{s}.csv"))]
        assert got == sent[s]
    assert h.svc.counters()["rows_written"] == 4 * 3 * 20 * 250


@needs_shared_memory
@pytest_twisted.inlineCallbacks
def test_a_batch_larger_than_the_shared_memory_goes_through_the_pipe(tmp_path):
    h = process_harness(tmp_path, workers=1)
    worker = h.svc._workers[0]
    worker.arena_bytes = 64 * 1024  # 8,192 float64 values
    h.svc.startService()
    t = h.clock.seconds()
    small = np.arange(100, dtype=np.float64)
    big = np.arange(20_000, dtype=np.float64) / 8
    h.svc.write("M", "s", small, t)
    yield h.svc.flush()
    h.svc.write("M", "s", big, t + 1)
    yield h.svc.flush()
    h.svc.write("M", "s", small + 0.5, t + 2)
    yield h.svc.flush()
    assert (worker.shared_batches, worker.piped_batches) == (2, 1)
    yield h.svc.stopService()
    got = [float(v) for _, v in rows(h.file("M", "20261126_s.csv"))]
    assert got == small.tolist() + big.tolist() + (small + 0.5).tolist()


@needs_shared_memory
@pytest_twisted.inlineCallbacks
def test_two_flushes_in_flight_use_separate_shared_space(tmp_path):
    # The second flush is packed while the first one is still being written:
    # it must not land on the first one's columns.
    h = process_harness(tmp_path, workers=1)
    h.svc.startService()
    t = h.clock.seconds()
    first = np.full(50_000, 1.25)
    second = np.full(50_000, -2.5)
    h.svc.write("M", "s", first, t)
    d1 = h.svc.flush()
    h.svc.write("M", "s", second, t + 1)
    d2 = h.svc.flush()
    yield defer.gatherResults([d1, d2])
    assert h.svc._workers[0].arena.ring.in_use == 0  # both given back
    yield h.svc.stopService()
    got = [v for _, v in rows(h.file("M", "20261126_s.csv"))]
    assert got == [b"1.25"] * 50_000 + [b"-2.5"] * 50_000


@needs_shared_memory
@pytest_twisted.inlineCallbacks
def test_one_dead_worker_costs_only_its_own_sensors_rows(tmp_path):
    h = process_harness(tmp_path)
    h.svc.startService()
    t = h.clock.seconds()
    h.svc.write("M", "a", [1.0], t)
    h.svc.write("M", "b", [1.0], t)
    yield h.svc.flush()
    w_b = h.svc._workers[h.svc.owners.owner["M", "b"]]
    original = w_b._write
    pid = w_b.pid

    def die_then_write(generation, data):
        os.kill(pid, signal.SIGKILL)
        original(generation, data)

    w_b._write = die_then_write
    h.svc.write("M", "a", [2.0], t + 1)
    h.svc.write("M", "b", [2.0, 3.0], t + 1)
    yield h.svc.flush()
    w_b._write = original
    c = h.svc.counters()
    assert c["dropped_write_error"] == 2  # b's rows of that flush, not a's
    h.svc.write("M", "a", [4.0], t + 2)
    h.svc.write("M", "b", [4.0], t + 2)
    yield h.svc.flush()  # b's worker starts again
    assert w_b.starts == 2 and not h.svc.counters()["failing"]
    yield h.svc.stopService()
    assert [v for _, v in rows(h.file("M", "20261126_a.csv"))] == [b"1.0", b"2.0", b"4.0"]
    assert [v for _, v in rows(h.file("M", "20261126_b.csv"))] == [b"1.0", b"4.0"]


@needs_shared_memory
@pytest_twisted.inlineCallbacks
def test_gzip_of_an_open_file_is_done_by_the_worker_that_holds_it(tmp_path):
    h = process_harness(tmp_path, GZIP_AFTER_DAYS=1)
    h.svc.startService()
    t = h.clock.seconds()
    day = 86400
    h.svc.write("M", "a", [1.0], t)
    h.svc.write("M", "b", [5.0], t - 3 * day)  # late rows: b's file of three days ago is open
    yield h.svc.flush()
    old = h.root / "M" / "20261123_b.csv"
    owner = h.svc.owners.owner["M", "b"]
    assert owner == 1 and h.svc.owners.of_path(str(old)) == 1
    yield h.svc.maintain()
    assert h.svc.counters()["gzipped_files"] == 1
    h.svc.write("M", "b", [6.0], t - 3 * day)  # later still: a new file, not the gzipped handle
    yield h.svc.stopService()
    with gzip.open(str(old) + ".gz") as f:
        assert rows(f.read()) == [(b"10:00:00", b"5.0")]
    assert old.read_bytes() == b"10:00:00,6.0\r\n"  # continues the gzipped day: no second header
    assert not any("deleted while open" in m for m in h.messages())


@pytest_twisted.inlineCallbacks
def test_thread_writer_ignores_the_worker_count(tmp_path):
    h = Harness(tmp_path, WORKERS=4)
    h.svc.startService()
    h.svc.write("M", "a", [1.0], h.clock.seconds())
    h.svc.write("M", "b", [2.0], h.clock.seconds())
    yield h.svc.flush()
    assert h.svc._workers is None and set(h.svc.owners.owner.values()) == {0}
    yield h.svc.stopService()
    assert rows(h.file("M", "20261126_b.csv")) == [(b"10:00:00", b"2.0")]


@pytest.mark.parametrize("bad, message", [(0, "must be at least 1, got 0"), (17, "must be at most 16, got 17"),
                                          ("two", "expected an integer")])
def test_workers_must_be_a_small_positive_integer(bad, message):
    with pytest.raises(ConfigError) as info:
        build_config({"DATA": {"WORKERS": bad}})
    assert "DATA.WORKERS" in str(info.value) and message in str(info.value)
