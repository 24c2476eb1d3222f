"""An in-memory :class:`~tsrmon.stats.sinks.AggregateStore` (tests, dry runs).

It applies deltas exactly as the SQLite store does, so statistics tests can
check rows without a database.
"""

from twisted.internet import defer

from tsrmon.stats.sums import PartialSums, row_moments


class MemoryRow:
    __slots__ = ("t0", "utc_offset", "time", "sums")

    def __init__(self, t0, utc_offset, time):
        self.t0 = t0
        self.utc_offset = utc_offset
        self.time = time
        self.sums = PartialSums()


class MemoryStore:
    def __init__(self):
        self.sensors = {}   # (machine, sensor) -> (stype, mode)
        self.rows = {}      # (machine, sensor, level) -> {t0: MemoryRow}
        self.faults = []    # (machine, score, threshold, t)
        self.anomalies = []
        self.pending = []   # queued (machine, rows) not yet flushed
        self.flushes = 0
        self.refs = {}      # (machine, sensor) -> moment reference (first one wins)

    # -- AggregateStore ----------------------------------------------------
    def ensure_sensor(self, machine, sensor, stype, mode):
        self.sensors[(machine, sensor)] = (stype, mode)

    def upsert_sums(self, machine, rows):
        self.pending.append((machine, list(rows)))

    def reference(self, machine, sensor):
        return self.refs.get((machine, sensor))

    def record_fault(self, machine, score, threshold, t):
        self.faults.append((machine, score, threshold, t))
        if score > threshold:
            self.anomalies.append((machine, score, threshold, t))

    fault = record_fault  # the hub's FaultSink

    def flush(self):
        pending, self.pending = self.pending, []
        for machine, rows in pending:
            for r in rows:
                sensor, level, t0, off, text, n, s, sa, lo, hi, sq = r[:11]
                table = self.rows.setdefault((machine, sensor, level), {})
                row = table.get(t0)
                if row is None:
                    row = table[t0] = MemoryRow(t0, off, text)
                m = row_moments(r)
                if m is not None:
                    # Like the SQLite store: one reference per sensor, rows shifted to it.
                    ref = self.refs.setdefault((machine, sensor), m.ref)
                    m = m.shifted(ref)
                row.sums.merge(PartialSums(n, s, sa, lo, hi, sq, m))
        self.flushes += 1
        return defer.succeed(None)

    def healthy(self):
        return True

    def counters(self):
        return {"flushes": self.flushes, "queued_batches": len(self.pending)}

    # -- test helpers --------------------------------------------------------
    def table(self, machine, sensor, level):
        """Rows of one table, ascending t0: [(t0, utc_offset, time, PartialSums)]."""
        got = self.rows.get((machine, sensor, level), {})
        return [(r.t0, r.utc_offset, r.time, r.sums) for _, r in sorted(got.items())]
