"""The serving rules of ``docs/storage.md`` on the shared PostgreSQL tables
(``stat_<level>``, ``stat_legacy``): the same groups, legacy means and
switch-over buckets as ``store/serving.py`` on a SQLite file, giving the
same items (``reader/series.py``).  Synchronous, on a reader thread's cursor.
"""

import datetime

from tsrmon.reader.series import _item
from tsrmon.store import schema as sqlite_schema
from tsrmon.store.postgres.schema import LEVEL_TABLES
from tsrmon.store.serving import _BELOW, _next_text, serve_groups

_ROW = "time, data, count, sum, sum_abs, min, max, sum_sq"


def text_range(start, end):
    lo = f"{start} 00:00:00" if start else None
    hi = None
    if end:
        hi = (datetime.date.fromisoformat(end) + datetime.timedelta(days=1)).isoformat() + " 00:00:00"
    return lo, hi


def range_sql(lo, hi, args, column="time"):
    sql = ""
    if lo is not None:
        sql += f" AND {column} >= %s"
        args.append(lo)
    if hi is not None:
        sql += f" AND {column} < %s"
        args.append(hi)
    return sql


def served(cur, machine, sensor, level, mode, lo=None, hi=None):
    """``[(time, value dict)]`` of one sensor's level in a text range, by the
    serving rules: counted rows of one ``time`` merged by their sums,
    legacy (migrated deployed) rows averaged and losing to counted ones, a
    bucket holding legacy rows of the level below served as their mean."""
    args = [machine, sensor]
    sql = (f"SELECT {_ROW} FROM {LEVEL_TABLES[level]} WHERE machine = %s AND sensor = %s "
           f"AND data IS NOT NULL{range_sql(lo, hi, args)} ORDER BY time, t0")
    cur.execute(sql, args)
    grouped = {}
    for r in cur.fetchall():
        grouped.setdefault(r[0], []).append(r)
    args = [machine, sensor, level]
    cur.execute(f"SELECT time, data, NULL, NULL, NULL, NULL, NULL, NULL FROM stat_legacy "
                f"WHERE machine = %s AND sensor = %s AND level = %s AND data IS NOT NULL"
                f"{range_sql(lo, hi, args)} ORDER BY time, id", args)
    for r in cur.fetchall():
        grouped.setdefault(r[0], []).append(r)
    below = _BELOW.get(level)
    legacy_below = []
    if below:
        args = [machine, sensor, below]
        try:
            upper = None if hi is None else _next_text("year", hi)
        except ValueError:
            upper = None
        cur.execute(f"SELECT DISTINCT time FROM stat_legacy WHERE machine = %s AND sensor = %s "
                    f"AND level = %s AND data IS NOT NULL{range_sql(lo, upper, args)} ORDER BY time", args)
        legacy_below = sorted(r[0] for r in cur.fetchall())   # serve_groups bisects it
    return serve_groups(grouped, level, mode, legacy_below,
                        lambda lo_, hi_: served(cur, machine, sensor, below, mode, lo_, hi_))


def served_items(cur, machine, sensor, level, mode, start=None, end=None):
    lo, hi = text_range(start, end)
    name = sqlite_schema.stat_table(sensor, level)
    items = []
    for t, v in served(cur, machine, sensor, level, mode, lo, hi):
        it = _item(dict({"name": name, "time": t}, **v))
        if it is not None:
            items.append(it)
    return items
