"""Every SQL read of the REST API and the live layer, off the reactor thread.

:class:`SQLiteReader` owns a small thread pool; each worker thread keeps one
read-only connection per machine file (``file:...?mode=ro``, so a read never
creates a file or a table).  Rows are served by the rules of
``docs/storage.md`` (``tsrmon.store.serving``).

The hour level is what the app asks for most (a year of hourly rows for
every sensor), and turning 70,000 SQLite rows into Python objects costs
hundreds of milliseconds on a small PC.  So hour rows are kept, per table and
per calendar month, already served and already JSON-encoded
(:class:`_Chunk`).  A chunk is re-read only when its checksum (row count,
highest id, totals of data and count, grouped by month in SQL) changes.
Checksums are computed only after a commit by another connection (``PRAGMA
data_version``, plus the file/WAL signature so one commit is checked once,
not once per thread), and then only for rows from the start of the previous
month on (the ``t0`` index): that is where a running writer upserts.  Every
row is checked every ``FULL_CHECK_INTERVAL`` and when the file is replaced.
"""

import calendar
import itertools
import math
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import orjson
from twisted.application import service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from tsrmon.names import is_valid_name, quote_identifier
from tsrmon.analytics import spectrum as _spectrum
from tsrmon.analytics.moments import Moments, peak_figures
from tsrmon.rooms import IReconfigurable
from tsrmon.stats.sums import PartialSums
from tsrmon.store import schema, serving
from tsrmon.store import spectra as _spectra

# Every row of an hour table is re-checked this often (seconds); in between,
# only the months a running writer touches.
FULL_CHECK_INTERVAL = 300

_MONTH = re.compile(r"\d{4}-\d{2}$")


def _finite(x):
    """``x`` as a float if it is a finite number, else None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, int) and not isinstance(x, bool):
        return float(x)
    return None


def _item(row):
    """A ``served_rows`` dict → a clean item tuple ``(time, data, min, max,
    rms, count)``, or None if it must not be served."""
    data = _finite(row.get("data"))
    t = row.get("time")
    if data is None or not isinstance(t, str):
        return None
    count = row.get("count")
    if not (isinstance(count, int) and not isinstance(count, bool) and count > 0):
        count = None
    return (t, data, _finite(row.get("min")), _finite(row.get("max")),
            _finite(row.get("rms")), count)


def legacy_item(name, t, data, mn, mx, rms, count):
    """One row in the legacy shape ``{name, time, data}`` plus the extras a
    counted row has (min, max, rms, count; absent for legacy rows)."""
    d = {"name": name, "time": t, "data": data}
    if mn is not None:
        d["min"] = mn
    if mx is not None:
        d["max"] = mx
    if rms is not None:
        d["rms"] = rms
    if count is not None:
        d["count"] = count
    return d


def encode_items(name, items):
    """JSON array body (without brackets) of items in the legacy shape plus extras."""
    return orjson.dumps([legacy_item(name, *item) for item in items])[1:-1]


class _Chunk:
    """The served rows of one table for one key (a month, or a whole query)."""

    __slots__ = ("name", "items", "times", "first_date", "last_date", "_json")

    def __init__(self, name, items):
        self.name = name
        self.items = items
        self.times = tuple(i[0] for i in items)
        self.first_date = items[0][0][:10] if items else None
        self.last_date = items[-1][0][:10] if items else None
        self._json = None

    def json(self):
        if self._json is None:
            self._json = encode_items(self.name, self.items)
        return self._json

    def within(self, start, end):
        return (self.items and (start is None or start <= self.first_date)
                and (end is None or self.last_date <= end))

    def cut(self, start, end, keep=None):
        """A new chunk with only the items in [start, end] (and in ``keep``)."""
        items = [i for i in self.items
                 if (start is None or start <= i[0][:10]) and (end is None or i[0][:10] <= end)
                 and (keep is None or i[0] in keep)]
        return _Chunk(self.name, items)


class StatSeries:
    """The served rows of one sensor table for a request: a list of chunks."""

    __slots__ = ("sensor", "name", "chunks")

    def __init__(self, sensor, name, chunks):
        self.sensor = sensor
        self.name = name
        self.chunks = [c for c in chunks if c.items]

    def items(self):
        for c in self.chunks:
            yield from c.items

    def json_fragments(self):
        return [c.json() for c in self.chunks]

    def __len__(self):
        return sum(len(c.items) for c in self.chunks)


# The part of the stored time text that names a bucket of each level (old
# deployed hour rows carry minutes and microseconds: "2024-01-25 14:23:11.5").
BUCKET_PREFIX = {"minute": 16, "hour": 13, "day": 10, "month": 7, "year": 4}


def align_series(series, level):
    """Keep only the buckets every non-empty series has, one row each (the app
    pairs the channels of a machine by index)."""
    present = [s for s in series if s.chunks]
    if len(present) < 2:
        return series
    first = present[0].chunks
    if all(len(s.chunks) == len(first) and all(a.times == b.times for a, b in zip(s.chunks, first))
           for s in present[1:]):
        return series
    n = BUCKET_PREFIX[level]
    common = {i[0][:n] for i in present[0].items()}
    for s in present[1:]:
        common.intersection_update(i[0][:n] for i in s.items())
    out = []
    for s in series:
        seen = set()
        chunks = []
        for c in s.chunks:
            keys = [t[:n] for t in c.times]
            if all(k in common for k in keys) and len(set(keys)) == len(keys) and seen.isdisjoint(keys):
                seen.update(keys)
                chunks.append(c)
                continue
            items = []
            for it, k in zip(c.items, keys):
                if k in common and k not in seen:
                    seen.add(k)
                    items.append(it)
            chunks.append(_Chunk(c.name, items))
        out.append(StatSeries(s.sensor, s.name, chunks))
    return out


class _HourCache:
    """Served hour chunks of one table, keyed by month (``YYYY-MM``)."""

    __slots__ = ("signature", "recent", "chunks", "validated", "files", "full_at", "ino")

    def __init__(self):
        self.ino = None  # the file's inode: another file (a restore) is re-read whole
        self.files = None  # _file_signature() when last validated
        self.full_at = -math.inf  # when every row was last checked
        self.recent = {}  # month -> checksum of the rows after the recent cutoff
        self.signature = {}
        self.chunks = {}
        self.validated = {}  # connection serial -> data_version when it last validated


class _ReadConnection(sqlite3.Connection):
    """A connection with a serial number (cache validation is per connection)."""

    serial = 0


class _Conn:
    __slots__ = ("conn", "ino")

    def __init__(self, conn, ino):
        self.conn = conn
        self.ino = ino


@implementer(IReconfigurable)
class SQLiteReader(service.Service):
    """Read-only access to ``DATABASE.PATH/<machine>.db`` for REST and live."""

    log = Logger()
    name = "sqlite-reader"
    warm_hour_cache = True

    def __init__(self, config, reactor, threads=2):
        self.config = config
        self.reactor = reactor
        self._threads = threads
        self._pool = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._path_locks = {}
        self._hour = {}  # (path, table) -> _HourCache
        self._dirty = {}  # (path, table) -> hour time texts the writer reported
        self.follow_writer = False  # True once the in-process writer reports its commits
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
        pool, self._pool = self._pool, None
        if pool is not None:
            # Reads are short and nothing is left to flush: joining the
            # workers here is bounded by the query in flight.
            pool.stop()
        return defer.succeed(None)

    def _ensure_pool(self):
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=self._threads, name="tsrmon-sqlite-read")
            self._pool.start()
        return self._pool

    def _run(self, fn, *args, then=None):
        """Run ``fn(*args)`` in the pool; then ``then(result)`` there too, so a
        caller can encode a large answer without blocking the reactor."""
        return deferToThreadPool(self.reactor, self._ensure_pool(), self._call, fn, args, then)

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

    def written(self, machine, touched):
        """The in-process writer committed these hours (reactor thread).

        ``touched`` maps an hour table to the ``time`` texts it upserted.  In
        the daemon the store is the only writer (the instance lock keeps the
        tools out), so a request after a flush re-serves just those hours
        instead of re-reading the current months of every table; a full
        check every FULL_CHECK_INTERVAL still catches anything else.
        """
        path = self.db_path(machine)
        with self._lock:
            for table, times in touched.items():
                self._dirty.setdefault((path, table), set()).update(times)
        self.follow_writer = True

    def _take_dirty(self, path, table):
        with self._lock:
            return self._dirty.pop((path, table), None)

    # -- public API (each returns a Deferred) ------------------------------
    def machines(self):
        """Valid machine names that have a ``.db`` file, sorted."""
        return self._run(self.list_machines)

    def stats(self, machine, level, start=None, end=None, align=True, then=None):
        """Deferred[list[StatSeries]] in table (creation) order.

        ``then(series)`` runs in the worker thread too, so the caller can
        encode a large answer without blocking the reactor.
        """
        return self._run(self._stats, machine, level, start, end, align, then=then)

    def anomalies(self, machine, start=None, end=None):
        """Deferred[[(machine, time, score, threshold)]] oldest first."""
        return self._run(self._anomalies, machine, start, end)

    def all_anomalies(self, start=None, end=None):
        """Every machine's anomalies, newest first."""
        return self._run(self._all_anomalies, start, end)

    def faults(self, machine, start=None, end=None):
        """Deferred[[(time, t, score, threshold)]] from ``fault_detect``, oldest first."""
        return self._run(self._faults, machine, start, end)

    def minutes(self, machine, since_t, until_t=None, then=None):
        """Deferred[list[StatSeries]] of minute rows with since_t <= t0 < until_t."""
        return self._run(self._minutes, machine, since_t, until_t, then=then)

    def recent_minutes(self, machine, since_t):
        """Deferred[[(sensor, stype, t0, PartialSums)]], oldest first."""
        return self._run(self._recent_minutes, machine, since_t)

    # -- files and connections -------------------------------------------
    def db_path(self, machine):
        """The file of a valid machine name (never built from another string)."""
        if not is_valid_name(machine):
            raise ValueError(f"invalid machine name {machine!r}")
        return os.path.join(self.config["DATABASE"]["PATH"], machine + ".db")

    def list_machines(self):
        return schema.machine_names(self.config["DATABASE"]["PATH"])

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
        conn, path = self._connect(machine)
        if conn is None:
            return []
        if level == "minute":
            raise ValueError("use minutes() for the minute level")
        series = []
        with self._path_lock(path):
            files = _file_signature(path)
            for sensor, table in self._sensor_tables(conn, level):
                if level == "hour":
                    chunks = self._hour_chunks(conn, path, files, sensor, table, start, end)
                else:
                    chunks = [_Chunk(table, self._served(conn, sensor, table, level, start, end))]
                series.append(StatSeries(sensor, table, chunks))
        if align:
            series = align_series(series, level)
        return series

    def _hour_chunks(self, conn, path, files, sensor, table, start, end):
        cache = self._hour.get((path, table))
        if cache is None:
            cache = self._hour[(path, table)] = _HourCache()
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        now = self.reactor.seconds()
        ino = files[0][0] if files[0] else None
        if now - cache.full_at >= FULL_CHECK_INTERVAL or ino != cache.ino:
            self._take_dirty(path, table)  # the full read covers them
            self._refresh_hour(conn, sensor, table, cache, None)
            cache.full_at = now
            cache.ino = ino
            cache.files = files if _settled(files) else None
        elif self.follow_writer:
            dirty = self._take_dirty(path, table)
            if dirty:
                self._patch_hours(conn, sensor, table, cache, dirty)
        elif cache.validated.get(conn.serial) != version and cache.files != files:
            # Someone committed since this connection last looked, and since
            # any connection last validated (the files changed since).
            self._refresh_hour(conn, sensor, table, cache, self._recent_cutoff(now))
            cache.files = files if _settled(files) else None
        cache.validated[conn.serial] = version
        out = []
        lo = start[:7] if start else None
        hi = end[:7] if end else None
        for key in sorted(cache.chunks):
            if (lo is not None and key < lo) or (hi is not None and key > hi):
                continue
            chunk = cache.chunks[key]
            out.append(chunk if chunk.within(start, end) else chunk.cut(start, end))
        return out

    def _patch_hours(self, conn, sensor, table, cache, times):
        """Re-serve only the days of the reported hours, in their month chunks."""
        for day in sorted({t[:10] for t in times}):
            key = day[:7]
            fresh = self._served(conn, sensor, table, "hour", day, day)
            chunk = cache.chunks.get(key)
            kept = [] if chunk is None else [i for i in chunk.items if i[0][:10] != day]
            # Stable: a DST fall-back day's repeated hour keeps its served order.
            cache.chunks[key] = _Chunk(table, sorted(kept + fresh, key=lambda i: i[0]))

    def _recent_cutoff(self, now):
        """Epoch of the local start of the previous month: the writer's upserts
        (current buckets, late samples) land after it."""
        zone = ZoneInfo(self.config["TIME"]["ZONE"])
        d = datetime.fromtimestamp(now, zone)
        year, month = (d.year, d.month - 1) if d.month > 1 else (d.year - 1, 12)
        return int(datetime(year, month, 1, tzinfo=zone).timestamp())

    def _refresh_hour(self, conn, sensor, table, cache, cutoff):
        """Re-read the months whose checksum changed.

        ``cutoff`` None checks every row (the first time, and every
        FULL_CHECK_INTERVAL); otherwise only counted rows with ``t0 >= cutoff``
        (through the t0 index), which is where a running writer writes.
        """
        cols = self._columns(conn, table)
        q = quote_identifier(table)
        counted = "count" in cols and "t0" in cols
        if cutoff is not None and not counted:
            return  # a deployed table nobody writes to any more
        # Enough to notice the writer's inserts (count, id) and upserts (count, data).
        sql = (f"SELECT substr(time, 1, 7) AS k, count(*), max(id), total(data)"
               f"{', total(count)' if counted else ''} FROM {q}"
               f"{' WHERE t0 >= ?' if cutoff is not None else ''} GROUP BY k")
        try:
            signature = {row[0]: row[1:] for row in conn.execute(sql, () if cutoff is None else (cutoff,))
                         if _month_key(row[0])}
        except sqlite3.DatabaseError as e:
            self._warn_once((table, str(e)), "cannot read table {table}: {error}", table=table, error=e)
            cache.signature, cache.recent, cache.chunks = {}, {}, {}
            return
        if cutoff is None:
            old, cache.signature = cache.signature, signature
            for k in list(cache.chunks):
                if k not in signature:
                    del cache.chunks[k]
        else:
            old, cache.recent = cache.recent, signature
        changed = [k for k, sig in signature.items() if old.get(k) != sig or k not in cache.chunks]
        if cutoff is None:
            cache.recent = {}  # recompute against the new full picture next time
        if len(changed) > 3:
            # A cold cache (or a rebuild): one pass over the table, split by month.
            items = self._served(conn, sensor, table, "hour", min(changed) + "-01", _month_end(max(changed)))
            by_key = {}
            for it in items:
                by_key.setdefault(it[0][:7], []).append(it)
            for k in changed:
                cache.chunks[k] = _Chunk(table, by_key.get(k, []))
        else:
            for k in changed:
                cache.chunks[k] = _Chunk(table, self._served(conn, sensor, table, "hour", k + "-01", _month_end(k)))

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
            series.append(StatSeries(sensor, table, [_Chunk(table, items)]))
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

    # -- anomalies and faults ---------------------------------------------
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

    def _anomalies(self, machine, start, end):
        conn, path = self._connect(machine)
        if conn is None:
            return []
        return self._anomaly_rows(conn, machine, start, end)

    def _anomaly_rows(self, conn, machine, start, end):
        return [(machine, t, score, threshold)
                for t, _epoch, score, threshold in self._score_rows(conn, machine, schema.ANOMALY_TABLE,
                                                                    start, end)]

    def _score_rows(self, conn, machine, table, start, end):
        """``[(time, epoch or None, score, threshold)]`` of the anomaly or
        fault table in a local date range, oldest first; rows with a missing
        or non-finite score or threshold are never served."""
        if table not in self._tables(conn):
            return []
        cols = self._columns(conn, table)
        if not {"time", "score", "threshold"} <= cols:
            return []
        tcol = "t" if "t" in cols else "NULL"  # deployed anomaly tables have no t
        where, args = self._date_where(start, end)
        where.append("typeof(time) = 'text'")
        sql = (f"SELECT time, {tcol}, score, threshold FROM {table} "
               f"WHERE {' AND '.join(where)} ORDER BY time, id")
        out = []
        try:
            for t, epoch, score, threshold in conn.execute(sql, args):
                score, threshold = _finite(score), _finite(threshold)
                if score is None or threshold is None:
                    continue
                out.append((t, _finite(epoch), score, threshold))
        except sqlite3.DatabaseError as e:
            self._warn_once((machine, table, str(e)), "cannot read {machine} {table}: {error}",
                            machine=machine, table=table, error=e)
        return out

    def _all_anomalies(self, start, end):
        out = []
        for machine in self.list_machines():
            try:
                out.extend(self._anomalies(machine, start, end))
            except sqlite3.DatabaseError as e:
                self._warn_once(("anomalies", machine, str(e)), "{machine}: unreadable database: {error}",
                                machine=machine, error=e)
        out.sort(key=lambda r: (r[1], r[0]), reverse=True)
        return out

    def _faults(self, machine, start, end):
        conn, path = self._connect(machine)
        if conn is None:
            return []
        return self._score_rows(conn, machine, schema.FAULTS_TABLE, start, end)

    # -- issue 17: moments, spectra, features (the REST layer calls these) ----
    MOMENT_FIELDS = ("mean", "std", "rms", "skewness", "kurtosis", "peak", "peak_to_peak",
                     "crest", "moments_count")

    def moment_stats(self, machine, level, start=None, end=None, sensors=None):
        """Deferred ``{sensor: [row, ...]}`` of the counted rows of a level
        (``minute`` … ``year``) in a local date range (``start``/``end``
        ``YYYY-MM-DD``, inclusive, as :meth:`stats`), ascending by time.

        A row is ``{"time", "t0", "count", "moments_count", "mean", "std",
        "rms", "skewness", "kurtosis", "peak", "peak_to_peak", "crest"}``.
        ``rms``, ``peak``, ``peak_to_peak`` and ``crest`` come from the
        deployed sums (every counted row has them); ``std``, ``skewness``
        (Fisher–Pearson) and ``kurtosis`` (Pearson, normal = 3) from the
        moment sums, over ``moments_count`` samples (rows written before the
        version-2 migration have fewer or none: then None).  Undefined
        figures are None, never NaN.  Legacy rows (no counts) are left out.
        """
        if level not in schema.LEVELS:
            raise ValueError(f"unknown level {level!r}")
        return self._run(self._moment_stats, machine, level, start, end,
                         None if sensors is None else tuple(sensors))

    def _moment_stats(self, machine, level, start, end, sensors):
        conn, _path = self._connect(machine)
        if conn is None:
            return {}
        refs = {}
        if schema.SENSORS_TABLE in self._tables(conn) and \
                "ref" in self._columns(conn, schema.SENSORS_TABLE):
            refs = dict(conn.execute(f"SELECT name, ref FROM {schema.SENSORS_TABLE}"))
        out = {}
        for sensor, table in self._sensor_tables(conn, level):
            if sensors is not None and sensor not in sensors:
                continue
            cols = self._columns(conn, table)
            if "count" not in cols:
                continue
            mcols = ('"mcount", "s1", "s2", "s3", "s4"' if "mcount" in cols
                     else "NULL, NULL, NULL, NULL, NULL")
            where, args = self._date_where(start, end)
            where.append('"count" > 0')
            sql = (f'SELECT time, t0, "count", "sum", "min", "max", "sum_sq", {mcols} '
                   f"FROM {quote_identifier(table)} WHERE {' AND '.join(where)} ORDER BY time, id")
            rows = []
            try:
                cursor = conn.execute(sql, args)
                for text, t0, n, total, lo, hi, sq, mn, s1, s2, s3, s4 in cursor:
                    rows.append(_moment_row(text, t0, n, total, lo, hi, sq, refs.get(sensor),
                                            mn, s1, s2, s3, s4))
            except sqlite3.DatabaseError as e:
                self._warn_once((table, str(e)), "cannot read table {table}: {error}",
                                table=table, error=e)
                continue
            out[sensor] = rows
        return out

    def spectrum(self, machine, sensor, t=None, level="minute"):
        """Deferred dict of the stored spectrum of the minute (or hour) that
        holds epoch ``t`` (the newest when ``t`` is None), or None.

        ``{"t0", "utc_offset", "time", "level", "blocks", "rate", "f0", "df",
        "convention": "rms", "lines": [float, ...]}``: line k (0-based) is at
        ``f0 + k·df`` Hz; each value is an **RMS amplitude per line** in the
        sensor's unit (a sine of amplitude A shows A/√2; window energy
        corrected).  ``level`` ``minute``, ``hour`` or ``envelope`` (the
        minute's envelope spectrum)."""
        return self._run(self._spectrum, machine, sensor, t, level)

    _KINDS = {"minute": ("spectrum_minute", 60), "hour": ("spectrum_hour", 3600),
              "envelope": ("envelope_minute", 60)}

    def _spectrum_kind(self, level):
        try:
            return self._KINDS[level]
        except KeyError:
            raise ValueError(f"unknown spectrum level {level!r} "
                             f"(minute, hour or envelope)") from None

    def _spectrum(self, machine, sensor, t, level):
        kind, span = self._spectrum_kind(level)
        conn, _path = self._connect(machine)
        if conn is None:
            return None
        if t is None:
            rows = _spectra.spectrum_rows(conn, sensor, kind, limit=1, latest=True)
        else:
            t0 = math.floor(t)
            rows = _spectra.spectrum_rows(conn, sensor, kind, t0 - span + 1, t0 + 1,
                                          limit=1, latest=True)
        if not rows:
            return None
        r = rows[0]
        vals = np.frombuffer(r.pop("lines"), dtype="<f4")
        return dict(r, level=level, convention="rms", lines=vals.astype(float).tolist())

    def waterfall(self, machine, sensor, start_t, end_t, rows=None, lines=None, level="minute"):
        """Deferred dict: the stored spectra with ``start_t <= t0 < end_t``
        decimated to at most ``rows`` × ``lines`` (``analytics.spectrum.
        waterfall``: rows power-averaged by blocks, lines grouped with power
        summed, so the total RMS is kept).  ``{"t0": [row start t0, ...],
        "f0", "df", "convention": "rms", "rows": [[float, ...], ...]}``;
        spectra on other lines than the newest (LINES changed) are left out."""
        return self._run(self._waterfall, machine, sensor, start_t, end_t, rows, lines, level)

    def _waterfall(self, machine, sensor, start_t, end_t, n_rows, n_lines, level):
        kind, _span = self._spectrum_kind(level)
        conn, _path = self._connect(machine)
        empty = {"t0": [], "f0": 0.0, "df": 0.0, "convention": "rms", "rows": []}
        if conn is None:
            return empty
        got = _spectra.spectrum_rows(conn, sensor, kind, start_t, end_t)
        if not got:
            return empty
        last = got[-1]
        got = [r for r in got if r["f0"] == last["f0"] and r["df"] == last["df"]
               and len(r["lines"]) == len(last["lines"])]
        specs = [_spectrum.unpack(r["lines"], r["f0"], r["df"], r["blocks"] or 1, r["rate"])
                 for r in got]
        groups, f0, df, rms = _spectrum.waterfall(specs, n_rows, n_lines)
        return {"t0": [got[g[0]]["t0"] for g in groups], "f0": f0, "df": df,
                "convention": "rms", "rows": rms.astype(float).tolist()}

    def features(self, machine, sensor, start_t=None, end_t=None, level="minute"):
        """Deferred list of a sensor's stored features, ascending.

        ``minute``: ``{"t0", "utc_offset", "time", "blocks", "velocity_rms",
        "features"}`` with ``features`` as ``analytics.features.features``
        made it (bands, peaks, orders, bearing tones, iso judgement, notes).
        ``hour``: per hour ``{"t0", "minutes", "velocity_rms",
        "velocity_rms_max", "bands"}``, RMS averages of its minutes."""
        if level not in ("minute", "hour"):
            raise ValueError(f"unknown features level {level!r} (minute or hour)")
        return self._run(self._features, machine, sensor, start_t, end_t, level)

    def _features(self, machine, sensor, start_t, end_t, level):
        conn, _path = self._connect(machine)
        if conn is None:
            return []
        rows = _spectra.features_rows(conn, sensor, start_t, end_t)
        if level == "minute":
            return rows
        hours = {}
        for r in rows:
            # The hour of the row's local clock (utc_offset is whole minutes).
            off = r["utc_offset"] or 0
            h = (r["t0"] + off) // 3600 * 3600 - off
            hours.setdefault(h, []).append(r)
        out = []
        for h, group in sorted(hours.items()):
            v = [r["velocity_rms"] for r in group if r["velocity_rms"] is not None]
            bands = {}
            for r in group:
                for name, val in (r["features"].get("bands") or {}).items():
                    if isinstance(val, (int, float)):
                        bands.setdefault(name, []).append(val)
            out.append({"t0": h, "minutes": len(group),
                        "velocity_rms": math.sqrt(sum(x * x for x in v) / len(v)) if v else None,
                        "velocity_rms_max": max(v) if v else None,
                        "bands": {k: math.sqrt(sum(x * x for x in vs) / len(vs))
                                  for k, vs in bands.items()}})
        return out


def _fin(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _moment_row(text, t0, n, total, lo, hi, sq, ref, mn, s1, s2, s3, s4):
    out = {"time": text, "t0": t0, "count": n, "moments_count": mn or 0,
           "mean": _fin(total / n) if _fin(total) is not None else None}
    if _fin(sq) is not None and _fin(lo) is not None and _fin(hi) is not None:
        out.update({k: _fin(v) for k, v in peak_figures(n, sq, lo, hi).items()})
    else:
        out.update(rms=None, peak=None, peak_to_peak=None, crest=None)
    m = None
    if mn and ref is not None and all(_fin(v) is not None for v in (s1, s2, s3, s4)):
        m = Moments(mn, ref, s1, s2, s3, s4)
    out["std"] = _fin(m.std) if m is not None else None
    out["skewness"] = _fin(m.skewness) if m is not None else None
    out["kurtosis"] = _fin(m.kurtosis) if m is not None else None
    return out


def _file_signature(path):
    """What a commit changes on disk (the WAL, or the file itself), taken
    before reading: if it is unchanged since a validation, so is the data."""
    out = []
    for p in (path, path + "-wal"):
        try:
            st = os.stat(p)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _settled(files):
    """False if a file changed in the last 100 ms: a commit in the same clock
    tick might not show in the signature, so do not trust it."""
    now = time.time_ns()
    return all(f is None or now - f[2] > 100_000_000 for f in files)


def _month_key(key):
    """True for a ``YYYY-MM`` text naming a real month (other rows are never served)."""
    return (isinstance(key, str) and _MONTH.match(key) is not None
            and int(key[:4]) >= 1 and 1 <= int(key[5:7]) <= 12)


def _month_end(key):
    """``YYYY-MM`` → the month's last date as ``YYYY-MM-DD``."""
    year, month = int(key[:4]), int(key[5:7])
    return f"{key}-{calendar.monthrange(year, month)[1]:02d}"
