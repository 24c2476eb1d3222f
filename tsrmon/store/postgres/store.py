"""The PostgreSQL aggregate store: every node's writes into one database.

Implements the store contract (``store/contract.py``: ``IAggregateStore``,
``ISpectraStore``, ``ISpool``) like ``store/sqlite.py``, through
``twisted.enterprise.adbapi`` with psycopg 3 (autocommit off): calls on the
reactor thread only queue operations (``store/deltas.py``); :meth:`flush`
commits everything queued, every machine, as ONE transaction.  Writes are
additive upserts (``postgres/writes.py``), so several nodes writing the
same bucket lose nothing.  Inside that transaction each machine's
:class:`~tsrmon.store.feed.Change` is sent with ``pg_notify`` (delivered
only if it commits, to every node's ``postgres/feed.py``); this node's own
subscribers hear it at once through ``feed.publish``.

A failed transaction is rolled back and its operations go back to the
queue, compacted per bucket (retried at the next flush); while PostgreSQL
is away the queue grows with the buckets touched, the hub is told storage
is congested past ``max_queue_rows``, and whatever is queued at stop goes
to the spool (``DATABASE.PATH/spool/``), replayed at the next start.
"""

import math
import uuid

import psycopg
from twisted.application import service
from twisted.enterprise import adbapi
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tsrmon.names import name_problem
from tsrmon.rooms import ICounters, IHealth
from tsrmon.stats.calendar import Calendar
from tsrmon.store import spool
from tsrmon.store.contract import IAggregateStore, ISpectraStore, ISpool
from tsrmon.store.deltas import compact_ops, op_rows
from tsrmon.store.feed import LocalChangeFeed, change_of
from tsrmon.store.postgres import schema, writes
from tsrmon.store.queueing import QueuedStore, join_commit

PARTITION_INTERVAL = 3600.0  # partitions ahead and minute retention, checked hourly


def first_line(e):
    """An error's first line (psycopg messages run to several), for one-line reports."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def read_fed_days(cur, machine):
    """``{day: [node]}``: which nodes fed ``machine`` on which local day."""
    cur.execute("SELECT day, node FROM fed_day WHERE machine = %s ORDER BY day, node", (machine,))
    out = {}
    for day, node in cur.fetchall():
        out.setdefault(day, []).append(node)
    return out


def connection_pool(dsn, reactor, cp_min=1, cp_max=1):
    """An adbapi pool of psycopg 3 connections (autocommit off: adbapi
    commits or rolls back each interaction)."""
    return adbapi.ConnectionPool("psycopg", conninfo=dsn, autocommit=False, connect_timeout=10,
                                 cp_min=cp_min, cp_max=cp_max, cp_reactor=reactor,
                                 cp_noisy=False, cp_reconnect=True)


@implementer(IHealth, ICounters, IAggregateStore, ISpectraStore, ISpool)
class PostgresStore(QueuedStore, service.Service):
    """The shared store of ``DATABASE.DSN``; see the module docstring."""

    log = Logger()
    name = "store"
    health_key = "database"
    counters_key = "store"

    def __init__(self, config, reactor, hub=None, clock=None, feed=None, max_queue_rows=200_000,
                 dsn=None, node=None):
        self.config = config
        self.reactor = reactor
        self.clock = clock or reactor
        self.hub = hub
        self.dsn = dsn or config.database.dsn
        self.zone = config.time.zone
        self.calendar = Calendar(self.zone)
        self.minute_retention = config.database.minute_retention_days * 86400
        self.max_queue_rows = max_queue_rows
        self.feed = LocalChangeFeed() if feed is None else feed
        # Our own NOTIFYs are skipped by our feed (published locally already).
        self.node = node or getattr(self.feed, "node", None) or uuid.uuid4().hex
        # The node's name in rows (fault_detect.node, fed_day.node): CLUSTER.NODE,
        # which the configuration defaults to the host name.
        self.node_name = config.cluster.node
        self.pool = connection_pool(self.dsn, reactor)
        self.queue = {}          # machine -> [operation]
        self.queued_rows = 0
        self.references = {}     # machine -> {sensor: ref} after a commit
        self._catalog = writes.Catalog()
        self._partitions = set()
        self._prepared = False
        self._inflight = None
        self._waiters = []
        self._fault_commit = None
        self._ticker = None
        self.closed = False
        self.congested = False
        self.failing = None
        self.failing_since = None
        self.failures = 0
        self.rows_written = self.transactions = self.failed_transactions = 0
        self.dropped_rows = self.faults = 0
        self.spool_folder = spool.spool_dir(config.database.path)
        self.spooled_rows = self.replayed_rows = self.spool_kept_rows = self.spool_errors = 0
        self.replay_done = None
        self._sensors = None     # {machine: [sensor]} read once at start-up
        self.owns_feed = False   # build_store: the feed was made for this store

    # -- start-up (synchronous: before the reactor runs, like SQLite's file checks)
    def prepare(self):
        """Create or migrate the schema, check TIME.ZONE, read the machines
        and sensors; raises :class:`schema.SchemaError` (one line)."""
        try:
            with psycopg.connect(self.dsn, autocommit=False, connect_timeout=10) as conn:
                schema.prepare(conn, self.zone, self.node)
                with conn.cursor() as cur:
                    cur.execute("SELECT machine, name FROM sensor ORDER BY machine, ord, name")
                    sensors = {}
                    for m, s in cur.fetchall():
                        sensors.setdefault(m, []).append(s)
                    now = self.clock.seconds()
                    schema.ensure_ahead(conn, now, self._partitions)
        except psycopg.OperationalError as e:
            raise schema.StoreUnreachable(f"cannot reach the PostgreSQL store: {first_line(e)}") from None
        except psycopg.Error as e:
            raise schema.SchemaError(f"cannot open the PostgreSQL store: {first_line(e)}") from None
        self._sensors = sensors
        self._prepared = True
        return self

    def start_unprepared(self, error):
        """Go on without the store at start (PostgreSQL away): no machines
        known yet, rows queued; the first commit that reaches it creates or
        checks the schema and the zone (a refusal then keeps the store
        failing, in /healthz, and its rows spooled at stop)."""
        self.log.warn("{error}; starting anyway: rows are queued (and spooled at stop) until it "
                      "answers", error=error)
        self._sensors = {}
        return self

    def known_machines(self):
        if self._sensors is None:
            self.prepare()
        return sorted(self._sensors)

    def known_sensors(self, machine):
        if self._sensors is None:
            self.prepare()
        return list(self._sensors.get(machine, ()))

    # -- service ---------------------------------------------------------------
    def startService(self):
        super().startService()
        if hasattr(self.feed, "start"):
            self.feed.start()    # PgChangeFeed: other nodes' commits
        self.replay_done = self.replay_spool()
        self.replay_done.addErrback(lambda f: self.log.failure("replaying the spool failed", f))
        self._ticker = task.LoopingCall(self.maintain)
        self._ticker.clock = self.clock
        self._ticker.start(PARTITION_INTERVAL, now=True).addErrback(
            lambda f: self.log.failure("partition maintenance stopped", f))

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        try:
            if self.failing is None:
                yield self.flush()
            elif self._inflight is not None:
                yield self._inflight
        except defer.CancelledError:
            pass
        finally:
            self.spool_queued()
            self.closed = True
            if self._inflight is None:
                self._close_pool()
            if self.owns_feed:
                # After the last commit's publish; readers stopped before us.
                self.feed.close()

    def _close_pool(self):
        if self.pool.running or self.pool.threadpool is not None:
            pool, self.pool = self.pool, _ClosedPool()
            pool.close()

    def maintain(self):
        """Partitions ahead, and minute partitions past retention dropped."""
        now = self.clock.seconds()
        before = int(now - self.minute_retention)

        def run(conn):
            schema.ensure_ahead(conn, now, self._partitions)
            return schema.drop_minutes_before(conn, before, self._partitions)

        def done(dropped):
            if dropped:
                self.log.info("dropped minute partitions {names} (DATABASE.MINUTE_RETENTION_DAYS)",
                              names=", ".join(dropped))
        d = self.pool.runWithConnection(run)
        d.addCallbacks(done, lambda f: self.log.warn("partition maintenance failed: {error}",
                                                     error=f.getErrorMessage()))
        return d

    # -- AggregateStore ------------------------------------------------------------
    def _enqueue(self, machine, op, rows=1):
        problem = name_problem(machine)
        if problem is not None:
            raise ValueError(f"bad machine name {machine!r}: {problem}")
        if self.closed:
            self.dropped_rows += rows
            self.log.error("{machine}: {n} rows dropped: the store has stopped", machine=machine, n=rows)
            return
        self.queue.setdefault(machine, []).append(op)
        self._queue_changed(rows)

    def ensure_sensor(self, machine, sensor, stype, mode):
        self._enqueue(machine, ("sensor", sensor, stype, mode, self.clock.seconds()))
        self._sensors = self._sensors or {}
        names = self._sensors.setdefault(machine, [])
        if sensor not in names:
            names.append(sensor)

    def upsert_sums(self, machine, rows):
        rows = list(rows)
        if rows:
            self._enqueue(machine, ("sums", rows), len(rows))

    def reference(self, machine, sensor):
        return self.references.get(machine, {}).get(sensor)

    def record_fault(self, machine, score, threshold, t):
        self.faults += 1
        self._enqueue(machine, ("fault", self.calendar.text(t), t, float(score), float(threshold)))
        self._commit_faults_soon()

    fault = record_fault  # the hub's FaultSink

    def upsert_spectrum(self, machine, sensor, kind, t0, utc_offset, text, blocks, rate, f0, df, blob):
        self._enqueue(machine, ("spectrum", sensor, kind, int(t0), int(utc_offset), text, int(blocks),
                                float(rate), float(f0), float(df), bytes(blob)))

    def upsert_features(self, machine, sensor, t0, utc_offset, text, blocks, velocity_rms, doc):
        self._enqueue(machine, ("features", sensor, int(t0), int(utc_offset), text, int(blocks),
                                velocity_rms, doc))

    def prune_spectra(self, minute_before, hour_before):
        for machine in self.known_machines():
            self._enqueue(machine, ("prune_spectra", int(minute_before), int(hour_before)))

    def healthy(self):
        return self.failing is None

    def fed_days(self, machine):
        """Deferred ``{day: [node]}``: which nodes fed ``machine`` on which
        local day (for ``rebuild-stats`` across nodes' raw CSV folders)."""
        def read(conn):
            with conn.cursor() as cur:
                return read_fed_days(cur, machine)
        return self.pool.runWithConnection(read)

    # -- commits ---------------------------------------------------------------
    def flush(self):
        """Commit everything queued now: a Deferred that never errbacks."""
        if self.closed:
            return defer.succeed(None)
        return join_commit(self)

    def _start(self):
        batch, self.queue = self.queue, {}
        rows = sum(op_rows(op) for ops in batch.values() for op in ops)
        waiters, self._waiters = self._waiters, []
        self._inflight = self.pool.runWithConnection(self._write, batch)

        def done(result):
            self._inflight = None
            if isinstance(result, Failure):
                self.failed_transactions += 1
                self.failures += 1
                if self.failing is None:
                    self.failing_since = self.clock.seconds()
                    self.log.failure("writing {n} queued rows to PostgreSQL failed; they stay queued "
                                     "and are retried at every flush", result, n=rows)
                lines = result.getErrorMessage().strip().splitlines()
                self.failing = lines[0] if lines else result.type.__name__
                if self.failures > 1 and math.log10(self.failures).is_integer():
                    # Logged in full once per streak, then at 10, 100, ... failures.
                    self.log.error("PostgreSQL store still failing ({count} attempts, {n} rows "
                                   "queued): {error}", count=self.failures,
                                   n=rows + self.queued_rows, error=self.failing)
                # Re-read what this node cached: the rolled-back sensors, and
                # partitions another node may have dropped (retention).
                self._catalog.loaded = False
                self._partitions = set()
                kept = 0
                for machine in set(batch) | set(self.queue):
                    ops, n = compact_ops(batch.get(machine, []) + self.queue.get(machine, []))
                    self.queue[machine] = ops
                    kept += n
                self.queued_rows = 0
                self._queue_changed(kept)
                if self.closed:
                    self.spool_queued()
            else:
                if self.failing is not None:
                    self.log.info("writing to PostgreSQL again after {n} failed attempts", n=self.failures)
                self.failing = self.failing_since = None
                self.failures = 0
                self.transactions += 1
                self.rows_written += rows
                self._queue_changed(-rows)
                self.references.update(result)
                for machine, ops in batch.items():
                    change = change_of(machine, ops)
                    if change is not None:
                        self.feed.publish(change)
            for w in waiters:
                w.callback(None)
            if self.closed:
                self._close_pool()
            elif self._waiters:
                self._start()

        self._inflight.addBoth(done)

    def _write(self, conn, batch):
        """One transaction (writer thread): every machine's operations, then
        a NOTIFY per machine; adbapi commits (or rolls back on error)."""
        if not self._prepared:
            schema.prepare(conn, self.zone, self.node)
            self._prepared = True
        level_t0s = {(r[1], r[2]) for ops in batch.values() for op in ops if op[0] == "sums" for r in op[1]}
        schema.ensure_for(conn, level_t0s, self._partitions)
        with conn.cursor() as cur:
            if not self._catalog.loaded:
                self._catalog.load(cur)
            for machine, ops in sorted(batch.items()):   # one lock order on every node
                for op in ops:
                    kind = op[0]
                    if kind == "sums":
                        writes.apply_sum_rows(cur, self._catalog, machine, op[1])
                    elif kind == "sensor":
                        self._catalog.ensure(cur, machine, *op[1:])
                    elif kind == "fault":
                        writes.apply_fault(cur, machine, *op[1:], node=self.node_name)
                    elif kind == "prune":
                        pass  # minute retention drops partitions (maintain)
                    else:
                        writes.apply_spectra(cur, machine, op)
                days = {r[4][:10] for op in ops if op[0] == "sums" for r in op[1] if r[1] == "minute"}
                if days:
                    cur.executemany("INSERT INTO fed_day (machine, day, node) VALUES (%s, %s, %s) "
                                    "ON CONFLICT DO NOTHING", [(machine, d, self.node_name) for d in sorted(days)])
                change = change_of(machine, ops)
                if change is not None:
                    cur.execute("SELECT pg_notify(%s, %s)",
                                (schema.CHANNEL, writes.encode_change(change, self.node)))
        return {m: self._catalog.refs_of(m) for m in batch}

    # -- the spool -----------------------------------------------------------------
    def spool_queued(self):
        records = []
        for machine, ops in self.queue.items():
            records.extend(spool.records_of(machine, ops))
        self.queue = {}
        self._queue_changed(-self.queued_rows)
        if not records:
            return
        try:
            path = spool.write_records(self.spool_folder, records, self.clock.seconds())
        except (OSError, ValueError) as e:
            self.spool_errors += 1
            self.dropped_rows += len(records)
            self.log.critical("{n} rows could not be committed nor spooled to {folder} ({error}): lost",
                              n=len(records), folder=self.spool_folder, error=e)
            return
        self.spooled_rows += len(records)
        self.log.warn("{n} rows could not be committed before shutdown; kept in {path}, replayed "
                      "at the next start", n=len(records), path=path)

    @defer.inlineCallbacks
    def replay_spool(self):
        """Replay every spool file (oldest first), one transaction per file;
        a file is removed once committed, kept whole otherwise."""
        for path in spool.spool_files(self.spool_folder):
            try:
                records, bad = spool.read_file(path)
            except OSError as e:
                self.spool_errors += 1
                self.log.error("cannot read spool file {path} ({error}); left in place", path=path, error=e)
                continue
            batch = {}
            for rec in records:
                try:
                    machine, op, _ = spool.op_of(rec)
                except spool.SpoolError:
                    continue
                batch.setdefault(machine, []).append(op)
            batch = {m: compact_ops(ops)[0] for m, ops in batch.items()}
            try:
                refs = yield self.pool.runWithConnection(self._write, batch)
            except Exception as e:
                self._catalog.loaded = False
                self._partitions = set()
                self.spool_kept_rows += len(records)
                self.log.error("replaying spool file {path} failed ({error}); kept for the next start",
                               path=path, error=str(e).strip())
                continue
            self.references.update(refs)
            for machine, ops in batch.items():
                change = change_of(machine, ops)
                if change is not None:
                    self.feed.publish(change)
            self.replayed_rows += len(records)
            try:
                spool.remove(path)
            except OSError as e:
                self.spool_errors += 1
                self.log.critical("spool file {path}: replayed but not removed ({error}); move it "
                                  "away before the next start or its rows count twice", path=path, error=e)

    # -- health --------------------------------------------------------------------
    def health(self):
        out = {"ok": self.failing is None or self.failures < 2,
               "state": "ok" if self.failing is None else "failing",
               "backend": "postgresql",
               "queued_rows": self.queued_rows,
               "dropped_rows": self.dropped_rows}
        if self.failing is not None:
            out.update(error=self.failing, since=self.failing_since, attempts=self.failures)
        if self.spool_kept_rows:
            out["spool_rows"] = self.spool_kept_rows
        return out

    def counters(self):
        return {
            "queued_rows": self.queued_rows, "rows_written": self.rows_written,
            "transactions": self.transactions, "failed_transactions": self.failed_transactions,
            "dropped_rows": self.dropped_rows, "faults": self.faults, "congested": self.congested,
            "spooled_rows": self.spooled_rows, "replayed_rows": self.replayed_rows,
            "spool_rows": self.spool_kept_rows, "spool_errors": self.spool_errors,
        }




class _ClosedPool:
    """Stands in for the pool once closed (a late call fails, nothing hangs)."""

    running = False
    threadpool = None

    def runWithConnection(self, *args, **kw):
        return defer.fail(RuntimeError("the PostgreSQL store is closed"))

    def close(self):
        pass
