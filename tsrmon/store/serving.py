"""Read helpers implementing the serving rules of ``docs/storage.md``.

Synchronous; ``conn`` is a ``sqlite3.Connection`` or anything with
``execute`` returning a cursor (an adbapi ``Transaction``).  Call them inside
``runInteraction``/``runWithConnection`` so the reactor never blocks.

Rules, in short: rows with NULL ``data`` are never served; all rows of one
``time`` text are served as one (counted rows merged by their sums, legacy
rows averaged, counted rows win over legacy ones); a day/month/year bucket
holding legacy rows of the level below is the plain mean of the served values
below it, as the deployed server computed it.
"""

import bisect
import datetime
import math

from tsrmon.names import quote_identifier
from tsrmon.store import schema

_BELOW = {"day": "hour", "month": "day", "year": "month"}


def _table_exists(conn, table):
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                        (table,)).fetchone() is not None


def sensors(conn):
    """``[{"name", "type", "mode", "ord"}]`` in first-seen order."""
    if not _table_exists(conn, schema.SENSORS_TABLE):
        return []
    return [{"name": n, "type": t, "mode": m, "ord": o} for n, t, m, o in conn.execute(
        f"SELECT name, type, mode, ord FROM {schema.SENSORS_TABLE} ORDER BY ord, name")]


def stat_tables(conn, level):
    """``<sensor>_<level>_avg`` table names, sqlite_master (creation) order."""
    suffix = schema.table_suffix(level)
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' ORDER BY rowid")
        if r[0].endswith(suffix) and len(r[0]) > len(suffix)]


def sensor_mode(conn, sensor, default="REAL"):
    if not _table_exists(conn, schema.SENSORS_TABLE):
        return default
    row = conn.execute(f"SELECT mode FROM {schema.SENSORS_TABLE} WHERE name=?", (sensor,)).fetchone()
    return (row[0] if row and row[0] else default)


def _has_counts(conn, table):
    return any(r[1] == "count" for r in conn.execute(f"PRAGMA table_info({quote_identifier(table)})"))


def _rows(conn, table, lo_text=None, hi_text=None):
    """(time, data, count, sum, sum_abs, min, max, sum_sq) with data not NULL,
    ``lo_text <= time < hi_text`` (text comparison, as deployed)."""
    q = quote_identifier(table)
    counted = _has_counts(conn, table)
    cols = ("time, data, count, sum, sum_abs, min, max, sum_sq" if counted
            else "time, data, NULL, NULL, NULL, NULL, NULL, NULL")
    where, args = ["data IS NOT NULL"], []
    if lo_text is not None:
        where.append("time >= ?")
        args.append(lo_text)
    if hi_text is not None:
        where.append("time < ?")
        args.append(hi_text)
    return conn.execute(f"SELECT {cols} FROM {q} WHERE {' AND '.join(where)} ORDER BY time, id",
                        args).fetchall()


def _group(rows, mode):
    """Rows of one ``time`` -> one served value dict (rule 2)."""
    counted = [r for r in rows if r[2] is not None and r[2] > 0]
    if counted:
        n = sum(r[2] for r in counted)
        s = sum(r[3] for r in counted)
        sa = sum(r[4] for r in counted)
        sq = sum(r[7] for r in counted)
        mean = s / n
        return {
            "data": (sa if mode == "ABS" else s) / n,
            "count": n,
            "min": min(r[5] for r in counted),
            "max": max(r[6] for r in counted),
            "rms": math.sqrt(sq / n),
            "std": math.sqrt(max(sq / n - mean * mean, 0.0)),
        }
    legacy = [r[1] for r in rows if r[2] is None]
    if not legacy:
        return None
    return {"data": sum(legacy) / len(legacy), "count": None, "min": None,
            "max": None, "rms": None, "std": None}


def _next_text(level, time_text):
    """The ``time`` text of the next bucket (text ranges for the level below)."""
    d = datetime.datetime.strptime(time_text[:10], "%Y-%m-%d")
    if level == "day":
        d += datetime.timedelta(days=1)
    elif level == "month":
        d = d.replace(year=d.year + 1, month=1) if d.month == 12 else d.replace(month=d.month + 1)
    elif level == "year":
        d = d.replace(year=d.year + 1)
    return d.strftime("%Y-%m-%d 00:00:00")


def _served(conn, sensor, level, mode, lo_text=None, hi_text=None):
    """``[(time, value dict)]`` of one sensor's level in a text range."""
    table = schema.stat_table(sensor, level)
    if not _table_exists(conn, table):
        return []
    grouped = {}
    for r in _rows(conn, table, lo_text, hi_text):
        grouped.setdefault(r[0], []).append(r)
    below = _BELOW.get(level)
    legacy_below = _legacy_times(conn, sensor, below, lo_text, hi_text) if below else []
    return serve_groups(grouped, level, mode, legacy_below,
                        lambda lo, hi: _served(conn, sensor, below, mode, lo, hi))


def serve_groups(grouped, level, mode, legacy_below, served_below):
    """``[(time, value dict)]`` of the rows of a level grouped by ``time``
    (both backends): a bucket holding legacy rows of the level below
    (``legacy_below``, their sorted ``time`` texts) is the mean of
    ``served_below(lo_text, hi_text)``, any other the ``_group`` of its rows."""
    out = []
    for time_text in sorted(grouped):
        value = None
        hi = None
        if legacy_below:
            try:
                hi = _next_text(level, time_text)
            except ValueError:  # a deployed row with odd time text: rule 2 only
                hi = None
        if hi is not None:
            i = bisect.bisect_left(legacy_below, time_text)
            if i < len(legacy_below) and legacy_below[i] < hi:
                # Rule 3: a switch-over bucket is the mean of the values below.
                values = [v["data"] for _, v in served_below(time_text, hi)]
                if values:
                    value = {"data": sum(values) / len(values), "count": None, "min": None,
                             "max": None, "rms": None, "std": None}
        if value is None:
            value = _group(grouped[time_text], mode)
        if value is not None:
            out.append((time_text, value))
    return out


def _legacy_times(conn, sensor, level, lo_text, hi_text):
    """Sorted ``time`` texts of the legacy (uncounted) rows with data."""
    table = schema.stat_table(sensor, level)
    if not _table_exists(conn, table):
        return []
    where = ["data IS NOT NULL"]
    if _has_counts(conn, table):
        where.append('"count" IS NULL')
    args = []
    if lo_text is not None:
        where.append("time >= ?")
        args.append(lo_text)
    try:
        # the last bucket of the range reaches past hi_text at the level below
        upper = None if hi_text is None else _next_text("year", hi_text)
    except ValueError:  # the year after 9998-12-31's bucket: no upper bound
        upper = None
    if upper is not None:
        where.append("time < ?")
        args.append(upper)
    return [r[0] for r in conn.execute(
        f"SELECT DISTINCT time FROM {quote_identifier(table)} WHERE {' AND '.join(where)} "
        f"ORDER BY time", args)]


def served_rows(conn, sensor, level, start=None, end=None, mode=None):
    """The served rows of one sensor's level, ascending ``time``.

    ``start``/``end``: ``"YYYY-MM-DD"`` (inclusive, on the date of ``time``)
    or None.  ``level``: minute, hour, day, month or year.
    """
    if level not in schema.LEVELS:
        raise ValueError(f"unknown level {level!r}")
    if mode is None:
        mode = sensor_mode(conn, sensor)
    lo = f"{start} 00:00:00" if start else None
    hi = None
    if end:
        hi = (datetime.date.fromisoformat(end) + datetime.timedelta(days=1)).isoformat() + " 00:00:00"
    name = schema.stat_table(sensor, level)
    return [dict({"name": name, "time": t}, **v) for t, v in _served(conn, sensor, level, mode, lo, hi)]


def minute_rows(conn, sensor, since_t, until_t=None):
    """Counted minute rows of a sensor with ``since_t <= t0 < until_t``."""
    table = schema.stat_table(sensor, "minute")
    if not _table_exists(conn, table):
        return []
    args = [since_t]
    where = "t0 >= ?"
    if until_t is not None:
        where += " AND t0 < ?"
        args.append(until_t)
    keys = ("t0", "utc_offset", "time", "data", "count", "sum", "sum_abs", "min", "max", "sum_sq")
    rows = conn.execute(
        f"SELECT t0, utc_offset, time, data, count, sum, sum_abs, min, max, sum_sq "
        f"FROM {quote_identifier(table)} WHERE {where} AND count > 0 ORDER BY t0", args)
    return [dict(zip(keys, r), sensor=sensor) for r in rows]
