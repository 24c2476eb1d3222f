"""Backend-neutral logic of the store's writes: the queue and the deltas.

Calls on the reactor thread become *operations* (tuples) in a machine's
queue, committed together:

* ``("sensor", sensor, stype, mode, t)``: ``ensure_sensor``;
* ``("sums", [sum row, ...])``: deltas to add (``contract.IAggregateStore``);
* ``("fault", time_text, t, score, threshold)``;
* ``("spectrum", sensor, kind, t0, utc_offset, time, blocks, rate, f0, df, blob)``,
  ``("features", sensor, t0, utc_offset, time, blocks, velocity_rms, json)``;
* ``("prune", before_t0)``, ``("prune_spectra", minute_before, hour_before)``.

How a bucket merges a delta is :data:`MERGE` (every backend's upsert says
the same in its own SQL); :func:`sum_values` and :func:`moment_values` give
a row's column values in :data:`SUM_COLUMNS` (+ :data:`MOMENT_COLUMNS`)
order, with ``data`` computed and the moments shifted to the stored
reference.
"""

from tsrmon.stats.sums import merge_rows, row_moments

__all__ = ["MERGE", "SUM_COLUMNS", "MOMENT_COLUMNS", "compact_ops", "merge_rows", "moment_values",
           "op_rows", "sum_values"]

# The columns an upsert writes, in parameter order.
SUM_COLUMNS = ("time", "data", "t0", "utc_offset", "count", "sum", "sum_abs", "min", "max", "sum_sq")
MOMENT_COLUMNS = ("mcount", "s1", "s2", "s3", "s4")

# How an existing bucket takes a delta: "add" (NULL in an old row counts as
# 0 for the moment columns: "add0"), "min", "max"; ``data`` is then
# recomputed as (sum_abs or sum) / count in the sensor's mode.
MERGE = {
    "count": "add", "sum": "add", "sum_abs": "add", "sum_sq": "add",
    "min": "min", "max": "max",
    "mcount": "add0", "s1": "add0", "s2": "add0", "s3": "add0", "s4": "add0",
}


def mean_column(mode):
    """The sum whose mean is ``data``: ``sum_abs`` (ABS) or ``sum`` (REAL)."""
    return "sum_abs" if mode == "ABS" else "sum"


def sum_values(rows, mode):
    """Parameter tuples (:data:`SUM_COLUMNS` order) of sum rows
    ``(sensor, level, t0, off, time, n, s, sa, lo, hi, sq)``."""
    if mode == "ABS":
        return [(r[4], r[7] / r[5], r[2], r[3], r[5], r[6], r[7], r[8], r[9], r[10]) for r in rows]
    return [(r[4], r[6] / r[5], r[2], r[3], r[5], r[6], r[7], r[8], r[9], r[10]) for r in rows]


def moment_values(rows, mode, refs):
    """Parameter tuples (:data:`SUM_COLUMNS` + :data:`MOMENT_COLUMNS`) of sum
    rows with moments, each shifted to its sensor's stored reference ``refs``
    (a shift is exact algebra; it only happens when a process chose c before
    the stored one was known)."""
    out = []
    for r in rows:
        m = row_moments(r)
        ref = refs[r[0]]
        if m.ref != ref:
            m = m.shifted(ref)
        num = r[7] if mode == "ABS" else r[6]
        out.append((r[4], num / r[5], r[2], r[3], r[5], r[6], r[7], r[8], r[9], r[10],
                    m.count, m.s1, m.s2, m.s3, m.s4))
    return out


def compact_ops(ops):
    """The same effect as ``ops`` in fewer rows: sum rows merged per bucket.

    A failing database's queue is compacted before every retry, so it grows
    with the number of buckets touched, not with the number of flushes.
    Returns ``(ops, rows)``.  Sensor announcements come first (last one per
    sensor wins), then sums, faults and one prune (the latest).
    """
    sensors = {}
    sums = {}
    faults = []
    others = []   # spectra rows and their pruning, in order
    prune = None
    for op in ops:
        kind = op[0]
        if kind == "sensor":
            sensors.pop(op[1], None)
            sensors[op[1]] = op
        elif kind == "sums":
            for r in op[1]:
                key = (r[0], r[1], r[2])
                got = sums.get(key)
                sums[key] = r if got is None else merge_rows(got, r)
        elif kind == "fault":
            faults.append(op)
        elif kind == "prune":
            prune = op if prune is None or op[1] > prune[1] else prune
        else:
            others.append(op)
    out = list(sensors.values())
    if sums:
        out.append(("sums", list(sums.values())))
    out.extend(faults)
    out.extend(others)
    if prune is not None:
        out.append(prune)
    return out, len(sensors) + len(sums) + len(faults) + len(others) + (prune is not None)


def op_rows(op):
    return len(op[1]) if op[0] == "sums" else 1
