"""The SQLite reader: every SQL read of the REST API and the live layer,
off the reactor thread.

:class:`SQLiteReader` owns a small thread pool; each worker thread keeps one
read-only connection per machine file (``file:...?mode=ro``, so a read never
creates a file or a table).  Rows are served by the rules of
``docs/storage.md`` (``tsrmon.store.serving``).  Served hour rows are cached
(``reader/hourcache.py``); the cache follows one change feed
(``store/contract.py`` ``IChangeFeed``): the in-process writer's in the
daemon, or, for a reader on its own, ``store/filefeed.py``, which notices
commits of writers that publish nothing.  The reader knows nothing of the
writer but the feed.
"""

import itertools
import math
import os
import sqlite3
import threading
import time
import urllib.parse

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.names import is_valid_name, quote_identifier
from tsrmon.reader import hourcache
from tsrmon.reader.analytics import AnalyticsReads
from tsrmon.reader.pooled import PooledReads
from tsrmon.reader.scores import ScoreReads
from tsrmon.reader.series import Chunk, StatSeries, _finite, _item, align_series
from tsrmon.rooms import IReconfigurable
from tsrmon.stats.sums import PartialSums
from tsrmon.store import schema, serving
from tsrmon.store.contract import IAnalyticsReader, IStatsReader
from tsrmon.store.filefeed import FileChangeFeed


class _ReadConnection(sqlite3.Connection):
    """A connection with a serial number (cache validation is per connection)."""

    serial = 0


class _Conn:
    __slots__ = ("conn", "ino")

    def __init__(self, conn, ino):
        self.conn = conn
        self.ino = ino


@implementer(IReconfigurable, IStatsReader, IAnalyticsReader)
class SQLiteReader(PooledReads, AnalyticsReads, ScoreReads, service.Service):
    """Read-only access to ``DATABASE.PATH/<machine>.db`` for REST and live.

    ``feed``: the change feed the hour cache follows (the store's
    ``feed`` in the daemon); None for a reader on its own, which then
    follows a :class:`~tsrmon.store.filefeed.FileChangeFeed` of its own.
    """

    log = Logger()
    name = "sqlite-reader"
    warm_hour_cache = True
    POOL_NAME = "tsrmon-sqlite-read"

    def __init__(self, config, reactor, threads=2, feed=None):
        self.config = config
        self.reactor = reactor
        self._threads = threads
        self._pool = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._path_locks = {}
        self._hour = {}     # (path, table) -> HourCache
        self._pending = {}  # (path, table) -> {(first_day, last_day)} or hourcache.RECHECK
        self._own_feed = None
        if feed is None:
            feed = self._own_feed = FileChangeFeed(config.database.path)
        self.feed = feed
        self.feed.subscribe(self._changed)
        self._warned = set()
        self._serials = itertools.count(1)

    # -- service -----------------------------------------------------------
    def startService(self):
        super().startService()
        self._ensure_pool()
        if self.warm_hour_cache:
            self._run(self._warm).addErrback(
                lambda f: self.log.failure("warming the hour cache", f))

    def _warm(self):
        """Read every machine's hour rows once, so the app's first year query is fast."""
        started = time.perf_counter()
        machines = self.list_machines()
        for machine in machines:
            try:
                self._stats(machine, "hour", None, None, False)
            except sqlite3.DatabaseError as e:
                self._warn_once(("_stats", (machine,), str(e)), "{machine}: unreadable database: {error}",
                                machine=machine, error=e)
        if machines:
            self.log.info("hour cache of {n} machine(s) ready in {s:.1f} s", n=len(machines),
                          s=time.perf_counter() - started)

    def stopService(self):
        super().stopService()
        self.feed.unsubscribe(self._changed)
        if self._own_feed is not None:
            self._own_feed.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            # Reads are short and nothing is left to flush: joining the
            # workers here is bounded by the query in flight.
            pool.stop()
        return defer.succeed(None)

    def _call(self, fn, args, then):
        try:
            result = fn(*args)
        except sqlite3.DatabaseError as e:
            # A damaged or foreign file: that machine has no data; the others do.
            self._warn_once((fn.__name__, args[:1], str(e)),
                            "{what}{args}: unreadable database: {error}", what=fn.__name__,
                            args=args[:1], error=e)
            result = []
        return result if then is None else then(result)

    def reconfigure(self, config):
        self.config = config

    def follow(self, feed):
        """Follow ``feed`` from now on instead of the current one (every
        cached table is re-checked once, since changes may have been missed)."""
        old, self.feed = self.feed, feed
        old.unsubscribe(self._changed)
        if old is self._own_feed and old is not None:
            old.close()
            self._own_feed = None
        feed.subscribe(self._changed)
        with self._lock:
            for key in list(self._hour):
                self._pending[key] = hourcache.RECHECK

    def _changed(self, change):
        """A Change from the feed (any thread): note the work for the next read.

        Hours re-serve their local days; a sensor announcement (its mode,
        hence ``data``, may have changed) and a change of unknown extent
        re-check by checksums.  Nothing else touches the cache."""
        try:
            path = self.db_path(change.machine)
        except ValueError:
            return
        work = hourcache.change_work(change, lambda sensor: schema.stat_table(sensor, "hour"))
        with self._lock:
            hourcache.mark_pending(self._hour, self._pending, path, work, change.everything)

    def _take_pending(self, key):
        with self._lock:
            return self._pending.pop(key, None)

    # -- public API (each returns a Deferred) ------------------------------
    def machines(self):
        """Valid machine names that have a ``.db`` file, sorted."""
        return self._run(self.list_machines)

    # -- files and connections -------------------------------------------
    def db_path(self, machine):
        """The file of a valid machine name (never built from another string)."""
        if not is_valid_name(machine):
            raise ValueError(f"invalid machine name {machine!r}")
        return os.path.join(self.config.database.path, machine + ".db")

    def list_machines(self):
        return schema.machine_names(self.config.database.path)

    def _path_lock(self, path):
        with self._lock:
            lock = self._path_locks.get(path)
            if lock is None:
                lock = self._path_locks[path] = threading.Lock()
            return lock

    def _connect(self, machine):
        """This thread's read-only connection to a machine's file, or None."""
        path = self.db_path(machine)
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        try:
            st = os.stat(path)
        except OSError:
            old = conns.pop(path, None)
            if old is not None:
                old.conn.close()
            return None, path
        cached = conns.get(path)
        if cached is not None and cached.ino == (st.st_dev, st.st_ino):
            return cached.conn, path
        if cached is not None:
            cached.conn.close()
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=True,
                                   factory=_ReadConnection)
            conn.serial = next(self._serials)
            conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as e:
            self._warn_once(path, "cannot open {path} read-only: {error}", path=path, error=e)
            conns.pop(path, None)
            return None, path
        conns[path] = _Conn(conn, (st.st_dev, st.st_ino))
        return conn, path

    def _warn_once(self, key, fmt, **kw):
        if key not in self._warned:
            self._warned.add(key)
            self.log.warn(fmt, **kw)

    @staticmethod
    def _tables(conn):
        return [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]

    @staticmethod
    def _columns(conn, table):
        return {r[1] for r in conn.execute(f"PRAGMA table_info({quote_identifier(table)})")}

    def _sensor_tables(self, conn, level):
        """[(sensor, table)] for a level: ``tsrmon_sensors`` order, then any
        other ``*_<level>_avg`` table in creation order (deployed files)."""
        tables = self._tables(conn)
        present = set(tables)
        suffix = schema.table_suffix(level)
        out = []
        seen = set()
        if schema.SENSORS_TABLE in present:
            for (name,) in conn.execute(
                    f"SELECT name FROM {schema.SENSORS_TABLE} ORDER BY ord, first_seen"):
                table = f"{name}{suffix}" if isinstance(name, str) else None
                if table in present and table not in seen:
                    seen.add(table)
                    out.append((name, table))
        for table in tables:
            if table.endswith(suffix) and table not in seen and len(table) > len(suffix):
                seen.add(table)
                out.append((table[:-len(suffix)], table))
        return out

    def _sensor_types(self, conn):
        try:
            return {n: (t, m) for n, t, m in conn.execute(
                f"SELECT name, type, mode FROM {schema.SENSORS_TABLE}")}
        except sqlite3.OperationalError:
            return {}

    @staticmethod
    def _date_where(start, end, column="time"):
        where, args = [], []
        if start is not None:
            where.append(f"DATE({column}) >= ?")
            args.append(start)
        if end is not None:
            where.append(f"DATE({column}) <= ?")
            args.append(end)
        return where, args

    # -- statistics --------------------------------------------------------
    def _served(self, conn, sensor, table, level, start, end):
        try:
            rows = serving.served_rows(conn, sensor, level, start, end)
        except sqlite3.DatabaseError as e:
            self._warn_once((table, str(e)), "cannot read table {table}: {error}", table=table, error=e)
            return []
        items = []
        for row in rows:
            it = _item(row)
            if it is not None:
                items.append(it)
        return items

    def _stats(self, machine, level, start, end, align):
        if level == "minute":
            raise ValueError("use minutes() for the minute level")
        if level == "hour":
            self.db_path(machine)  # a valid name before the feed sees it
            self.feed.catch_up(machine)
        conn, path = self._connect(machine)
        if conn is None:
            return []
        series = []
        with self._path_lock(path):
            for sensor, table in self._sensor_tables(conn, level):
                if level == "hour":
                    chunks = self._hour_chunks(conn, path, sensor, table, start, end)
                else:
                    chunks = [Chunk(table, self._served(conn, sensor, table, level, start, end))]
                series.append(StatSeries(sensor, table, chunks))
        if align:
            series = align_series(series, level)
        return series

    def _hour_chunks(self, conn, path, sensor, table, start, end):
        """The cached hour chunks of a table in [start, end], after the work
        the feed left for it (taken before reading: a change published
        meanwhile waits for the next request)."""
        key = (path, table)
        pending = self._take_pending(key)
        ino = self._local.conns[path].ino
        cache = self._hour.get(key)
        if cache is None or cache.ino != ino:
            cache = self._hour[key] = hourcache.HourCache(ino)
            pending = hourcache.RECHECK
        if pending is hourcache.RECHECK:
            hourcache.recheck(conn, cache, self._served_for(conn), sensor, table, self._warn_once)
        elif pending:
            days = hourcache.days_of(pending)
            if days is None:
                hourcache.recheck(conn, cache, self._served_for(conn), sensor, table, self._warn_once)
            else:
                hourcache.patch_days(cache, self._served_for(conn), sensor, table, days)
        return cache.select(start, end)

    def _served_for(self, conn):
        return lambda sensor, table, level, start, end: self._served(conn, sensor, table, level, start, end)

    def _minutes(self, machine, since_t, until_t):
        conn, path = self._connect(machine)
        if conn is None:
            return []
        series = []
        for sensor, table in self._sensor_tables(conn, "minute"):
            items = []
            for row in self._minute_rows(conn, sensor, table, since_t, until_t):
                it = _item(row)
                if it is not None:
                    items.append(it)
            series.append(StatSeries(sensor, table, [Chunk(table, items)]))
        return series

    def _minute_rows(self, conn, sensor, table, since_t, until_t):
        try:
            rows = serving.minute_rows(conn, sensor, int(math.floor(since_t)),
                                       None if until_t is None else int(math.ceil(until_t)))
        except sqlite3.DatabaseError as e:
            self._warn_once((table, str(e)), "cannot read table {table}: {error}", table=table, error=e)
            return []
        for r in rows:
            count, sq = r.get("count"), _finite(r.get("sum_sq"))
            r["rms"] = math.sqrt(sq / count) if isinstance(count, int) and count > 0 and sq is not None and sq >= 0 else None
        return rows

    def _recent_minutes(self, machine, since_t):
        conn, path = self._connect(machine)
        if conn is None:
            return []
        types = self._sensor_types(conn)
        out = []
        for order, (sensor, table) in enumerate(self._sensor_tables(conn, "minute")):
            stype = (types.get(sensor) or ("VIB", None))[0] or "VIB"
            for r in self._minute_rows(conn, sensor, table, since_t, None):
                vals = [r["count"], r["sum"], r["sum_abs"], r["min"], r["max"], r["sum_sq"]]
                if not isinstance(vals[0], int) or any(_finite(v) is None for v in vals[1:]):
                    continue
                sums = PartialSums(vals[0], float(vals[1]), float(vals[2]), float(vals[3]),
                                   float(vals[4]), float(vals[5]))
                out.append((r["t0"], order, sensor, stype, sums))
        out.sort(key=lambda x: (x[0], x[1]))
        return [(sensor, stype, t0, sums) for t0, _, sensor, stype, sums in out]
