"""PostgreSQL side of ``rebuild-stats``: what :class:`SQLiteRebuild` does for a
machine's file, done on the shared store while other nodes keep writing.

``store/tools.py`` (backend-neutral) reads every given node's raw CSV,
merges the sums and decides what to recompute; :class:`PgRebuild` replaces
one machine's rows and tells every node: each transaction ends with a
``pg_notify`` on the change feed's channel (``postgres/feed.py``), sent
only if it commits, saying the machine changed ``everything``, so every
running node's reader re-reads it.

Other nodes' daemons run meanwhile.  The days rebuilt are past ones (tools
refuses a day that is not over), so no node writes their minute, hour and
day rows; month and year rows are shared with today's writes, so
:meth:`recompute` locks the parent row *before* summing the rows below it,
in the order the nodes' upserts take them (sensor, then level): a node's
concurrent delta is then either seen by the sum or added on top of the
recomputed row after the commit, never lost.
"""

import datetime
import uuid

import psycopg

from tsrmon.store.contract import ToolError
from tsrmon.store.deltas import mean_column
from tsrmon.store.feed import Change
from tsrmon.store.postgres import schema, writes
from tsrmon.store.postgres.store import first_line, read_fed_days

_COLUMNS = ("machine", "sensor", "time", "data", "t0", "utc_offset", "count", "sum", "sum_abs",
            "min", "max", "sum_sq", "mcount", "s1", "s2", "s3", "s4")
# A local day's buckets start within a day of its UTC date either way: the
# t0 bounds (with a margin) let PostgreSQL prune minute and hour partitions.
_MARGIN = 2 * 86400
_RETRIES = 3


def _utc_day(text):
    d = datetime.date.fromisoformat(text[:10])
    return int(datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.timezone.utc).timestamp())


class PgRebuild:
    """One machine of the shared store opened for ``rebuild_stats``."""

    def __init__(self, config, machine, connect=None):
        self.machine = machine
        self.dsn = config.database.dsn
        # Not any node's feed id: every node's PgChangeFeed delivers these.
        self.node = f"rebuild-{uuid.uuid4().hex[:12]}"
        self.notified = 0
        self._partitions = set()
        try:
            self.conn = (connect or psycopg.connect)(self.dsn, autocommit=False, connect_timeout=10)
        except psycopg.Error as e:
            raise ToolError(f"cannot reach the PostgreSQL store: {first_line(e)}") from None
        try:
            schema.prepare(self.conn, config.time.zone, self.node)
            self.catalog = writes.Catalog()
            with self.conn.cursor() as cur:
                self.catalog.load(cur)
            self.conn.commit()
        except schema.SchemaError as e:
            self.conn.close()
            raise ToolError(str(e)) from None
        except psycopg.Error as e:
            self.conn.close()
            raise ToolError(f"cannot open the PostgreSQL store: {first_line(e)}") from None

    def fed_days(self):
        """``{day: [node]}``: which nodes fed this machine on which local day."""
        def read():
            with self.conn.cursor() as cur:
                out = read_fed_days(cur, self.machine)
            self.conn.commit()
            return out
        return self._guard(read)

    def reference(self, sensor):
        """The sensor's stored moment reference, or None."""
        return self.catalog.refs.get((self.machine, sensor))

    def replace_days(self, sensor, levels, lo_text, hi_text, rows, default_mode):
        """One transaction: this machine's and sensor's rows of ``levels``
        with ``lo_text <= time < hi_text`` (migrated legacy rows too) are
        replaced by the sum rows ``rows``."""
        t_lo, t_hi = _utc_day(lo_text) - _MARGIN, _utc_day(hi_text) + _MARGIN

        def write(cur):
            if (self.machine, sensor) not in self.catalog.modes:
                self.catalog.ensure(cur, self.machine, sensor, None, default_mode, None)
            for level in levels:
                cur.execute(f"DELETE FROM {schema.LEVEL_TABLES[level]} WHERE machine = %s AND sensor = %s "
                            f"AND t0 >= %s AND t0 < %s AND time >= %s AND time < %s",
                            (self.machine, sensor, t_lo, t_hi, lo_text, hi_text))
            cur.execute("DELETE FROM stat_legacy WHERE machine = %s AND sensor = %s AND level = ANY(%s) "
                        "AND time >= %s AND time < %s", (self.machine, sensor, list(levels), lo_text, hi_text))
            writes.apply_sum_rows(cur, self.catalog, self.machine, rows)

        # Partitions are made in a transaction of their own, before the rows'.
        self._guard(schema.ensure_for, self.conn, {(r[1], r[2]) for r in rows}, self._partitions)
        self._transaction(write)

    def recompute(self, jobs):
        """One transaction: each job ``(sensor, level, below, t_start, t_end,
        t0, utc_offset, time)`` replaces the ``level`` row at ``t0`` by the
        merge of the ``below`` rows in ``[t_start, t_end)``."""
        order = {level: i for i, level in enumerate(sorted(schema.LEVEL_TABLES))}
        jobs = sorted(jobs, key=lambda j: (j[0], order[j[1]], j[5]))

        def write(cur):
            for job in jobs:
                self._recompute_parent(cur, *job)

        self._transaction(write)

    def _recompute_parent(self, cur, sensor, level, below, t_start, t_end, t0, offset, text):
        dst, src = schema.LEVEL_TABLES[level], schema.LEVEL_TABLES[below]
        key = (self.machine, sensor, t0)
        # Lock the parent first: a node adding to it now waits for our commit
        # and then adds its delta on top; one that committed is in the sum.
        cur.execute(f"SELECT 1 FROM {dst} WHERE machine = %s AND sensor = %s AND t0 = %s FOR UPDATE", key)
        cur.execute('SELECT SUM("count")::bigint, SUM("sum"), SUM(sum_abs), MIN("min"), MAX("max"), SUM(sum_sq), '
                    f'SUM(mcount)::bigint, SUM(s1), SUM(s2), SUM(s3), SUM(s4) FROM {src} '
                    'WHERE machine = %s AND sensor = %s AND "count" > 0 AND t0 >= %s AND t0 < %s',
                    (self.machine, sensor, t_start, t_end))
        n, s, sa, lo, hi, sq, mc, s1, s2, s3, s4 = cur.fetchone()
        if not n:
            cur.execute(f"DELETE FROM {dst} WHERE machine = %s AND sensor = %s AND t0 = %s", key)
            return
        mode = self.catalog.mode(cur, self.machine, sensor)
        data = (sa if mean_column(mode) == "sum_abs" else s) / n
        values = (self.machine, sensor, text, data, t0, offset, n, s, sa, lo, hi, sq, mc or 0,
                  s1 or 0.0, s2 or 0.0, s3 or 0.0, s4 or 0.0)
        names = ", ".join(f'"{c}"' for c in _COLUMNS)
        sets = ", ".join(f'"{c}" = excluded."{c}"' for c in _COLUMNS[2:] if c != "t0")
        cur.execute(f"INSERT INTO {dst} ({names}) VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "
                    f"ON CONFLICT (machine, sensor, t0) DO UPDATE SET {sets}", values)

    def _transaction(self, write):
        """``write(cur)`` and the change notification, committed together;
        retried when PostgreSQL chose it as a deadlock's victim."""
        for attempt in range(_RETRIES):
            try:
                with self.conn.cursor() as cur:
                    write(cur)
                    cur.execute("SELECT pg_notify(%s, %s)", (schema.CHANNEL, writes.encode_change(
                        Change(self.machine, everything=True), self.node)))
                self.conn.commit()
                self.notified += 1
                return
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as e:
                self.conn.rollback()
                self.catalog.loaded = False
                self._guard(self._reload)
                if attempt == _RETRIES - 1:
                    raise ToolError(f"PostgreSQL store: {first_line(e)} ({_RETRIES} attempts)") from None
            except psycopg.Error as e:
                self._rollback()
                raise ToolError(f"PostgreSQL store: {first_line(e)}") from None
            except BaseException:
                self._rollback()
                raise

    def _reload(self):
        with self.conn.cursor() as cur:
            self.catalog.load(cur)
        self.conn.commit()

    def _rollback(self):
        try:
            self.conn.rollback()
        except psycopg.Error:
            pass

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except psycopg.Error as e:
            self._rollback()
            raise ToolError(f"PostgreSQL store: {first_line(e)}") from None

    def close(self):
        self.conn.close()
