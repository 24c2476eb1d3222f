"""Upsert throughput of the SQLite store, and the statistics hot path.

    .venv/bin/python bench/store_write.py [--rows N] [--quick]

Prints (never asserts):
  * rows/s of additive upserts through SQLiteStore (adbapi writer thread, WAL,
    one transaction per flush), fresh rows and rows that add to existing ones;
  * StatsService.add calls/s (the per-frame cost) and the per-second numpy
    reduction of 2 sensors x 30 floats.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from tsrmon.config import build_config  # noqa: E402
from tsrmon.stats.memory import MemoryStore  # noqa: E402
from tsrmon.stats.service import StatsService  # noqa: E402
from tsrmon.store.sqlite import SQLiteStore  # noqa: E402


def rows_for(n, sensors=4):
    levels = ("minute", "hour", "day", "month", "year")
    out = []
    for i in range(n):
        sensor = f"s{i % sensors}"
        level = levels[(i // sensors) % 5]
        t0 = 60 * (i // (sensors * 5))
        out.append((sensor, level, t0, 3600, f"t{t0}", 30, 1.5, 2.5, -1.0, 1.0, 9.0))
    return out


@defer.inlineCallbacks
def bench_store(reactor, folder, n, batches):
    cfg = build_config({"TIME": {"ZONE": "Europe/Berlin"}, "DATABASE": {"PATH": "db"},
                        "DATA": {"PATH": "data"}, "LOGGER": {"PATH": "log"}}, None, folder)
    store = SQLiteStore(cfg, reactor, max_queue_rows=10 * n)
    store.startService()
    for s in range(4):
        store.ensure_sensor("Bench", f"s{s}", "VIB", "ABS")
    yield store.flush()
    rows = rows_for(n)
    for label in ("insert", "update"):
        t = time.perf_counter()
        for _ in range(batches):
            store.upsert_sums("Bench", rows[: n // batches])
            yield store.flush()
        dt = time.perf_counter() - t
        print(f"store {label}: {n} rows in {batches} transactions: {n / dt:,.0f} rows/s "
              f"({dt / batches * 1000:.1f} ms per transaction of {n // batches})")
        rows = rows[n // batches:] + rows[: n // batches] if label == "insert" else rows
    yield store.stopService()


def bench_stats(seconds=1.0):
    cfg = build_config({"TIME": {"ZONE": "Europe/Berlin"}}, None, tempfile.gettempdir())
    clock = task.Clock()
    clock.advance(1_780_000_000)
    stats = StatsService(cfg, clock, None, MemoryStore())
    values = [0.1 * i for i in range(30)]
    add = stats.add
    now = clock.seconds()
    n = 0
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        for _ in range(1000):
            add("M", "vib1", "VIB", values, now)
            add("M", "vib2", "VIB", values, now)
        n += 1000
    dt = time.perf_counter() - t
    print(f"stats add: {2 * n / dt:,.0f} calls/s ({n / dt:,.0f} frames/s of 2 sensors, "
          f"append only)")
    t = time.perf_counter()
    stats._reduce_pending(second_done=True)
    dt = time.perf_counter() - t
    print(f"stats reduce: {2 * n * 30 / dt:,.0f} samples/s ({n} frames in {dt * 1000:.0f} ms)")


def main(reactor, args):
    bench_stats(0.3 if args.quick else 1.0)
    folder = tempfile.mkdtemp(prefix="tsrmon-bench-")
    return bench_store(reactor, folder, args.rows // (10 if args.quick else 1), 20)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    task.react(main, [a])
