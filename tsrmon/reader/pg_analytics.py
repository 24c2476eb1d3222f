"""Issue 17 reads on the PostgreSQL store: moments, spectra, features.

A mixin of :class:`~tsrmon.reader.pg_reader.PgReader`: the public methods
(arguments, checks, documentation) are :class:`~tsrmon.reader.analytics.
AnalyticsReads`'s; only the private halves read the shared tables
(``stat_<level>``, ``spectrum``, ``features``) instead of a machine file.
The figures come from the same backend-neutral code.
"""

from tsrmon.reader.analytics import AnalyticsReads, _moment_row
from tsrmon.reader.pg_serving import range_sql, text_range
from tsrmon.store.postgres.schema import LEVEL_TABLES
from tsrmon.store.spectra import feature_row

_SPECTRUM_KEYS = ("t0", "utc_offset", "time", "blocks", "rate", "f0", "df", "lines")


class PgAnalyticsReads(AnalyticsReads):

    def _moment_stats(self, machine, level, start, end, sensors):
        lo, hi = text_range(start, end)
        out = {}
        with self._cursor() as cur:
            cur.execute("SELECT name, ref FROM sensor WHERE machine = %s ORDER BY ord, first_seen, name",
                        (machine,))
            refs = dict(cur.fetchall())
            for sensor, ref in refs.items():
                if sensors is not None and sensor not in sensors:
                    continue
                args = [machine, sensor]
                cur.execute(f'SELECT time, t0, count, sum, min, max, sum_sq, mcount, s1, s2, s3, s4 '
                            f'FROM {LEVEL_TABLES[level]} WHERE machine = %s AND sensor = %s AND count > 0'
                            f'{range_sql(lo, hi, args)} ORDER BY time, t0', args)
                out[sensor] = [_moment_row(text, t0, n, total, mn_, mx, sq, ref, mc, s1, s2, s3, s4)
                               for text, t0, n, total, mn_, mx, sq, mc, s1, s2, s3, s4 in cur.fetchall()]
        return out

    def _spectrum_rows(self, machine, sensor, kind, start_t=None, end_t=None, limit=None, latest=False):
        args = [machine, sensor, kind]
        sql = ("SELECT t0, utc_offset, time, blocks, rate, f0, df, lines FROM spectrum "
               "WHERE machine = %s AND sensor = %s AND kind = %s") + _t0_range(start_t, end_t, args)
        sql += f" ORDER BY t0 {'DESC' if latest else 'ASC'}"
        if limit is not None:
            sql += " LIMIT %d" % int(limit)
        with self._cursor() as cur:
            cur.execute(sql, args)
            rows = [dict(zip(_SPECTRUM_KEYS, r)) for r in cur.fetchall()]
        for r in rows:
            r["lines"] = bytes(r["lines"])
        if latest:
            rows.reverse()
        return rows

    def _features_rows(self, machine, sensor, start_t, end_t):
        args = [machine, sensor]
        sql = ("SELECT t0, utc_offset, time, blocks, velocity_rms, json FROM features "
               "WHERE machine = %s AND sensor = %s") + _t0_range(start_t, end_t, args)
        with self._cursor() as cur:
            cur.execute(sql + " ORDER BY t0", args)
            raw = cur.fetchall()
        return [feature_row(*r) for r in raw]


def _t0_range(start_t, end_t, args):
    """`` AND t0 >= %s AND t0 < %s`` for the bounds given, appending them to ``args``."""
    sql = ""
    if start_t is not None:
        sql += " AND t0 >= %s"
        args.append(int(start_t))
    if end_t is not None:
        sql += " AND t0 < %s"
        args.append(int(end_t))
    return sql
