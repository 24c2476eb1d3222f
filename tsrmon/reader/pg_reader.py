"""The PostgreSQL reader: the reads of the REST API and the live layer on
the shared store (``contract.IStatsReader``, and ``IAnalyticsReader`` from
``reader/pg_analytics.py``), served exactly like
:class:`~tsrmon.reader.sqlite_reader.SQLiteReader`'s (same rules of
``docs/storage.md``, same items, chunks and series of ``reader/series.py``,
so the same JSON rows).

Reads run on a small thread pool of its own, each thread holding one
autocommit psycopg connection.  Served hour rows are cached per machine
and sensor, by month (``reader/hourcache.py``), and follow the change
feed: the store's ``PgChangeFeed`` hears every node's commits, so node B's
cache re-serves the days node A wrote.
"""

import math
import threading

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.names import is_valid_name
from tsrmon.reader import hourcache
from tsrmon.reader.pg_analytics import PgAnalyticsReads
from tsrmon.reader.pg_serving import range_sql, served_items, text_range
from tsrmon.reader.pooled import PooledReads
from tsrmon.reader.series import Chunk, StatSeries, _finite, _item, align_series
from tsrmon.rooms import IReconfigurable
from tsrmon.stats.sums import PartialSums
from tsrmon.store import schema as sqlite_schema
from tsrmon.store.contract import IAnalyticsReader, IStatsReader
from tsrmon.store.feed import SENSORS


@implementer(IReconfigurable, IStatsReader, IAnalyticsReader)
class PgReader(PooledReads, PgAnalyticsReads, service.Service):
    """Reads of the shared PostgreSQL store for REST and live."""

    log = Logger()
    name = "pg-reader"
    warm_hour_cache = True
    POOL_NAME = "tsrmon-pg-read"

    def __init__(self, config, reactor, feed, dsn=None, threads=2):
        self.config = config
        self.reactor = reactor
        self.dsn = dsn or config.database.dsn
        self._threads = threads
        self._pool = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._machine_locks = {}
        self._hour = {}      # (machine, sensor) -> HourCache
        self._pending = {}   # (machine, sensor) -> pending work
        self._sensor_rows = {}   # machine -> [(name, type, mode)]
        self._conns = []
        self.feed = feed
        self.feed.subscribe(self._changed)

    # -- service -----------------------------------------------------------
    def startService(self):
        super().startService()
        if hasattr(self.feed, "start"):
            self.feed.start()    # PgChangeFeed: idempotent, the store may have started it
        self._ensure_pool()
        if self.warm_hour_cache:
            self._run(self._warm).addErrback(lambda f: self.log.failure("warming the hour cache", f))

    def stopService(self):
        super().stopService()
        self.feed.unsubscribe(self._changed)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
        for conn in self._conns:
            try:
                conn.close()
            except Exception:
                pass
        self._conns = []
        return defer.succeed(None)

    def reconfigure(self, config):
        self.config = config

    def _call(self, fn, args, then):
        import psycopg

        try:
            result = fn(*args)
        except psycopg.OperationalError:
            # A broken connection: drop it, the next read opens another.
            self._local.conn = None
            raise
        return result if then is None else then(result)

    def _cursor(self):
        import psycopg

        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            with self._lock:
                self._conns.append(conn)
        return conn.cursor()

    def _warm(self):
        for machine in self._machines():
            self._stats(machine, "hour", None, None, False)

    # -- the feed ----------------------------------------------------------
    def _changed(self, change):
        work = hourcache.change_work(change, lambda sensor: sensor)
        with self._lock:
            if change.everything or any(k == SENSORS for _s, k in change.spans):
                self._sensor_rows.pop(change.machine, None)
            hourcache.mark_pending(self._hour, self._pending, change.machine, work, change.everything)

    # -- public API --------------------------------------------------------
    def machines(self):
        return self._run(self._machines)

    # -- reads (reader threads) --------------------------------------------
    def _machines(self):
        with self._cursor() as cur:
            cur.execute("SELECT DISTINCT machine FROM sensor ORDER BY machine")
            return [m for (m,) in cur.fetchall() if is_valid_name(m)]

    def _sensors(self, cur, machine):
        """``[(name, type, mode)]`` of a machine, cached until the feed
        announces a sensor of it (or cannot say what changed)."""
        with self._lock:
            got = self._sensor_rows.get(machine)
        if got is None:
            cur.execute("SELECT name, type, mode FROM sensor WHERE machine = %s "
                        "ORDER BY ord, first_seen, name", (machine,))
            got = cur.fetchall()
            if got:
                with self._lock:
                    self._sensor_rows[machine] = got
        return got

    def _machine_lock(self, machine):
        with self._lock:
            lock = self._machine_locks.get(machine)
            if lock is None:
                lock = self._machine_locks[machine] = threading.Lock()
            return lock

    def _stats(self, machine, level, start, end, align):
        if level == "minute":
            raise ValueError("use minutes() for the minute level")
        if not is_valid_name(machine):
            raise ValueError(f"invalid machine name {machine!r}")
        series = []
        with self._cursor() as cur:
            sensors = self._sensors(cur, machine)
            with self._machine_lock(machine):
                for sensor, _stype, mode in sensors:
                    mode = mode or "REAL"
                    table = sqlite_schema.stat_table(sensor, level)
                    if level == "hour":
                        chunks = self._hour_chunks(cur, machine, sensor, mode, table, start, end)
                    else:
                        items = served_items(cur, machine, sensor, level, mode, start, end)
                        chunks = [Chunk(table, items)]
                    series.append(StatSeries(sensor, table, chunks))
        if align:
            series = align_series(series, level)
        return series

    def _hour_chunks(self, cur, machine, sensor, mode, table, start, end):
        key = (machine, sensor)
        with self._lock:
            pending = self._pending.pop(key, None)
            cache = self._hour.get(key)
            if cache is None:
                cache = self._hour[key] = hourcache.HourCache(None)
                pending = hourcache.RECHECK

        def serve(sensor_, table_, level, s, e):
            return served_items(cur, machine, sensor_, level, mode, s, e)

        days = None if pending in (None, hourcache.RECHECK) else hourcache.days_of(pending)
        if pending is hourcache.RECHECK or (pending and days is None):
            cache.chunks = {}
            by_key = {}
            for it in serve(sensor, table, "hour", None, None):
                by_key.setdefault(it[0][:7], []).append(it)
            cache.chunks = {k: Chunk(table, v) for k, v in by_key.items()}
        elif days:
            hourcache.patch_days(cache, serve, sensor, table, days)
        return cache.select(start, end)

    def _minute_rows(self, cur, machine, sensor, since_t, until_t):
        args = [machine, sensor, int(math.floor(since_t))]
        sql = ("SELECT t0, utc_offset, time, data, count, sum, sum_abs, min, max, sum_sq FROM stat_minute "
               "WHERE machine = %s AND sensor = %s AND t0 >= %s")
        if until_t is not None:
            sql += " AND t0 < %s"
            args.append(int(math.ceil(until_t)))
        cur.execute(sql + " AND count > 0 ORDER BY t0", args)
        keys = ("t0", "utc_offset", "time", "data", "count", "sum", "sum_abs", "min", "max", "sum_sq")
        out = []
        for r in cur.fetchall():
            d = dict(zip(keys, r), sensor=sensor)
            count, sq = d["count"], _finite(d["sum_sq"])
            d["rms"] = math.sqrt(sq / count) if count and sq is not None and sq >= 0 else None
            out.append(d)
        return out

    def _minutes(self, machine, since_t, until_t):
        series = []
        with self._cursor() as cur:
            for sensor, _stype, _mode in self._sensors(cur, machine):
                table = sqlite_schema.stat_table(sensor, "minute")
                items = [it for it in (_item(r) for r in self._minute_rows(cur, machine, sensor, since_t, until_t))
                         if it is not None]
                series.append(StatSeries(sensor, table, [Chunk(table, items)]))
        return series

    def _recent_minutes(self, machine, since_t):
        out = []
        with self._cursor() as cur:
            for order, (sensor, stype, _mode) in enumerate(self._sensors(cur, machine)):
                for r in self._minute_rows(cur, machine, sensor, since_t, None):
                    vals = [r["count"], r["sum"], r["sum_abs"], r["min"], r["max"], r["sum_sq"]]
                    if any(_finite(v) is None for v in vals[1:]):
                        continue
                    sums = PartialSums(int(vals[0]), *(float(v) for v in vals[1:]))
                    out.append((r["t0"], order, sensor, stype or "VIB", sums))
        out.sort(key=lambda x: (x[0], x[1]))
        return [(sensor, stype, t0, sums) for t0, _, sensor, stype, sums in out]

    def _score_rows(self, table, machine, start, end):
        lo, hi = text_range(start, end)
        args = [machine]
        with self._cursor() as cur:
            cur.execute(f"SELECT time, t, score, threshold FROM {table} WHERE machine = %s"
                        f"{range_sql(lo, hi, args)} ORDER BY time, id", args)
            rows = cur.fetchall()
        out = []
        for t, epoch, score, threshold in rows:
            score, threshold = _finite(score), _finite(threshold)
            if score is not None and threshold is not None:
                out.append((t, _finite(epoch), score, threshold))
        return out

    def _anomalies(self, machine, start, end):
        return [(machine, t, s, th) for t, _e, s, th in self._score_rows("anomaly", machine, start, end)]

    def _all_anomalies(self, start, end):
        out = []
        for machine in self._machines():
            out.extend(self._anomalies(machine, start, end))
        out.sort(key=lambda r: (r[1], r[0]), reverse=True)
        return out

    def _faults(self, machine, start, end):
        return self._score_rows("fault_detect", machine, start, end)
