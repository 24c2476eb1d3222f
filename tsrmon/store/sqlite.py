"""The SQLite aggregate store: one writer per machine database.

Implements the statistics' ``AggregateStore`` (``stats/ports.py``) and the
hub's ``FaultSink``.  Calls on the reactor thread only queue operations; a
commit (:meth:`SQLiteStore.flush`, every ``DATABASE.FLUSH`` seconds from the
statistics, and soon after each FaultDetect) runs every queued operation of a
database as ONE transaction on that database's own ``adbapi`` thread.  A
failed transaction is rolled back and its operations go back to the queue
(retried at the next flush); a database that fails its integrity check or
migration at open is *broken*: its writes are dropped and counted, the error
(naming the file) is logged once, ``healthy()`` turns false, and the other
machines go on.  When the queue outgrows ``max_queue_rows`` the hub is told
storage is congested (DAQ reads pause) until it drains below half.
"""

import math
import os

from twisted.application import service
from twisted.enterprise import adbapi
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from tsrmon.names import name_problem, quote_identifier
from tsrmon.stats.calendar import Calendar
from tsrmon.store import migrate, schema, serving

MINUTE_RETENTION_DAYS = 7
PRUNE_INTERVAL = 3600.0

_STAT_COLS = "time, data, t0, utc_offset, count, sum, sum_abs, min, max, sum_sq"


def upsert_sql(sensor, level, mode):
    """Additive upsert of one sum row into a sensor's level table."""
    q = quote_identifier(schema.stat_table(sensor, level))
    num = '"sum_abs"' if mode == "ABS" else '"sum"'
    return (
        f'INSERT INTO {q} (time, data, t0, utc_offset, "count", "sum", "sum_abs", "min", "max", "sum_sq") '
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        f'ON CONFLICT(t0) DO UPDATE SET '
        f'"count" = "count" + excluded."count", '
        f'"sum" = "sum" + excluded."sum", '
        f'"sum_abs" = "sum_abs" + excluded."sum_abs", '
        f'"sum_sq" = "sum_sq" + excluded."sum_sq", '
        f'"min" = MIN("min", excluded."min"), '
        f'"max" = MAX("max", excluded."max"), '
        f'data = ({num} + excluded.{num}) / ("count" + excluded."count")'
    )


def sum_params(rows, mode):
    """executemany parameters for sum rows ``(sensor, level, t0, off, time, n, s, sa, lo, hi, sq)``."""
    if mode == "ABS":
        return [(r[4], r[7] / r[5], r[2], r[3], r[5], r[6], r[7], r[8], r[9], r[10]) for r in rows]
    return [(r[4], r[6] / r[5], r[2], r[3], r[5], r[6], r[7], r[8], r[9], r[10]) for r in rows]


class SensorCatalog:
    """Which sensors have tables in one database, and their modes (writer thread).

    ``modes[sensor]`` is None for a sensor known only from deployed tables.
    """

    def __init__(self):
        self.modes = {}

    def load(self, conn):
        self.modes = {s["name"]: s["mode"] for s in serving.sensors(conn)}

    def ensure(self, conn, sensor, stype, mode, t):
        if sensor not in self.modes:
            migrate.create_sensor_tables(conn, sensor)
            conn.execute(
                f"INSERT OR IGNORE INTO {schema.SENSORS_TABLE} (name, type, mode, first_seen, ord) "
                f"VALUES (?, ?, ?, ?, (SELECT COALESCE(MAX(ord), -1) + 1 FROM {schema.SENSORS_TABLE}))",
                (sensor, stype, mode, t))
        elif self.modes[sensor] != mode:
            # The type's STAT mode changed: ``data`` of counted rows follows.
            num = '"sum_abs"' if mode == "ABS" else '"sum"'
            for level in schema.LEVELS:
                table = quote_identifier(schema.stat_table(sensor, level))
                conn.execute(f'UPDATE {table} SET data = {num} / "count" WHERE "count" > 0')
        conn.execute(f"UPDATE {schema.SENSORS_TABLE} SET type=COALESCE(?, type), mode=?, "
                     f"first_seen=COALESCE(first_seen, ?) WHERE name=?", (stype, mode, t, sensor))
        self.modes[sensor] = mode

    def mode(self, conn, sensor):
        """The mode upserts use (a sensor never announced gets REAL)."""
        mode = self.modes.get(sensor)
        if mode is None:
            self.ensure(conn, sensor, None, "REAL", None)
            mode = "REAL"
        return mode


def apply_sum_rows(conn, catalog, rows):
    """Upsert sum rows, grouped per table (inside the caller's transaction)."""
    groups = {}
    for r in rows:
        if r[5] <= 0:
            continue
        groups.setdefault((r[0], r[1]), []).append(r)
    for (sensor, level), group in groups.items():
        mode = catalog.mode(conn, sensor)
        conn.executemany(upsert_sql(sensor, level, mode), sum_params(group, mode))


def _touched_hours(ops):
    """hour table -> the ``time`` texts a batch of operations upserts."""
    touched = {}
    for op in ops:
        if op[0] == "sums":
            for r in op[1]:
                if r[1] == "hour":
                    touched.setdefault(schema.stat_table(r[0], "hour"), set()).add(r[4])
    return touched


class MachineDatabase:
    """One machine's file: its writer pool, its queue and its state."""

    log = Logger()

    def __init__(self, store, machine, path):
        self.store = store
        self.machine = machine
        self.path = path
        self.queue = []           # operations, committed together
        self.queued_rows = 0
        self.broken = None        # error text once the file is unusable
        self._opened = False      # writer thread only
        self._catalog = SensorCatalog()
        self._inflight = None
        self._waiters = []
        self._failures = 0        # consecutive failed transactions
        self.pool = adbapi.ConnectionPool(
            "sqlite3", path, isolation_level=None, check_same_thread=False,
            cp_min=1, cp_max=1, cp_reactor=store.reactor)

    # -- reactor thread ------------------------------------------------------
    def enqueue(self, op, rows=1):
        if self.broken is not None or self.store.closed:
            self.store.dropped_rows += rows
            if self.store.closed:
                # A wiring bug (a room still writing after the store stopped).
                self.log.error("{machine}: {n} rows dropped: the store has stopped",
                               machine=self.machine, n=rows)
            return
        self.queue.append(op)
        self.queued_rows += rows
        self.store._queue_changed(rows)

    def commit(self):
        """A Deferred firing once everything queued now is committed (or kept
        for a retry after a logged failure).  Never errbacks."""
        if self.broken is not None and self._inflight is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        if self._inflight is None:
            self._start()
        return d

    def _start(self):
        ops, self.queue = self.queue, []
        rows, self.queued_rows = self.queued_rows, 0
        waiters, self._waiters = self._waiters, []
        touched = _touched_hours(ops)
        self._inflight = self.pool.runWithConnection(self._write, ops)

        def done(result):
            self._inflight = None
            if isinstance(result, Failure):
                if result.check(migrate.DatabaseBroken):
                    self._mark_broken(str(result.value), rows)
                else:
                    self.store.failed_transactions += 1
                    self._failures += 1
                    # Logged in full once per streak, then at 10, 100, ... failures.
                    if self._failures == 1:
                        self.log.failure("{path}: writing {n} queued rows failed; they stay "
                                         "queued and are retried at every flush", result,
                                         path=self.path, n=rows)
                    elif math.log10(self._failures).is_integer():
                        self.log.error("{path}: still failing ({count} attempts, {n} rows "
                                       "queued): {error}", path=self.path, count=self._failures,
                                       n=rows + self.queued_rows, error=result.getErrorMessage())
                    # Still counted in the store's queue: only put them back.
                    self.queue[:0] = ops
                    self.queued_rows += rows
            else:
                if self._failures:
                    self.log.info("{path}: writing again after {count} failed attempts",
                                  path=self.path, count=self._failures)
                    self._failures = 0
                self.store.transactions += 1
                self.store.rows_written += rows
                self.store._queue_changed(-rows)
                if touched:
                    self.store._committed(self.machine, touched)
            for w in waiters:
                w.callback(None)
            if self._waiters:
                self._start()

        self._inflight.addBoth(done)

    def _mark_broken(self, text, rows):
        self.broken = text
        self.store.dropped_rows += rows + self.queued_rows
        self.store._queue_changed(-(rows + self.queued_rows))
        self.queue = []
        self.queued_rows = 0
        self.log.error("{error}. Writes for machine {machine} stop (its other data and "
                       "other machines go on)", error=text, machine=self.machine)

    def close(self):
        self.pool.close()

    # -- writer thread ---------------------------------------------------------
    def _open(self, conn):
        migrate.prepare(conn, self.path, log=self.log)
        self._catalog.load(conn)
        self._opened = True

    def _write(self, conn, ops):
        if not self._opened:
            self._open(conn)
        if not ops:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                kind = op[0]
                if kind == "sums":
                    apply_sum_rows(conn, self._catalog, op[1])
                elif kind == "sensor":
                    self._catalog.ensure(conn, *op[1:])
                elif kind == "fault":
                    _, text, t, score, threshold = op
                    conn.execute(f"INSERT INTO {schema.FAULTS_TABLE} (time, t, score, threshold) "
                                 f"VALUES (?, ?, ?, ?)", (text, t, score, threshold))
                    if score > threshold:
                        conn.execute(f"INSERT INTO {schema.ANOMALY_TABLE} (time, threshold, score, t) "
                                     f"VALUES (?, ?, ?, ?)", (text, threshold, score, t))
                elif kind == "prune":
                    for sensor in list(self._catalog.modes):
                        table = quote_identifier(schema.stat_table(sensor, "minute"))
                        conn.execute(f"DELETE FROM {table} WHERE t0 < ?", (op[1],))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            # Tables created in the rolled-back transaction are gone again.
            self._catalog.load(conn)
            raise

    def read(self, fn, *args):
        """Run ``fn(conn, *args)`` on the writer thread (after queued writes)."""
        def run(conn):
            if not self._opened:
                self._open(conn)
            return fn(conn, *args)
        return self.pool.runWithConnection(run)


class SQLiteStore(service.Service):
    """``DATABASE.PATH/<machine>.db`` files; see the module docstring."""

    log = Logger()
    name = "store"

    def __init__(self, config, reactor, hub=None, clock=None, max_queue_rows=200_000,
                 minute_retention_days=MINUTE_RETENTION_DAYS):
        self.config = config
        self.reactor = reactor
        self.clock = clock or reactor
        self.hub = hub
        self.folder = config["DATABASE"]["PATH"]
        self.calendar = Calendar(config["TIME"]["ZONE"])
        self.max_queue_rows = max_queue_rows
        self.minute_retention = minute_retention_days * 86400
        self.databases = {}
        self.queued_rows = 0
        self.congested = False
        self.rows_written = 0
        self.transactions = 0
        self.failed_transactions = 0
        self.dropped_rows = 0
        self.faults = 0
        self._fault_commit = None
        # Called as listener(machine, {hour table: {time text}}) after each
        # commit (reactor thread): the reader patches its hour cache.
        self.commit_listeners = []
        self._pruner = None
        self.closed = False

    # -- service ---------------------------------------------------------------
    def startService(self):
        super().startService()
        os.makedirs(self.folder, exist_ok=True)
        # Check (and migrate) every existing file now, on the writer threads,
        # so a broken or deployed file is reported before any DAQ connects.
        for machine in self.known_machines():
            self.database(machine).commit()
        self._pruner = task.LoopingCall(self.prune_minutes)
        self._pruner.clock = self.clock
        self._pruner.start(PRUNE_INTERVAL, now=True).addErrback(
            lambda f: self.log.failure("minute pruning stopped", f))

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._pruner is not None and self._pruner.running:
            self._pruner.stop()
        yield self.flush()
        self.closed = True
        for db in self.databases.values():
            db.close()

    # -- databases ---------------------------------------------------------------
    def path_of(self, machine):
        return os.path.join(self.folder, f"{machine}.db")

    def database(self, machine):
        db = self.databases.get(machine)
        if db is None:
            problem = name_problem(machine)
            if problem is not None:
                raise ValueError(f"bad machine name {machine!r}: {problem}")
            db = self.databases[machine] = MachineDatabase(self, machine, self.path_of(machine))
        return db

    def known_machines(self):
        """Machines with a database file (for ``hub.remember``)."""
        return schema.machine_names(self.folder)

    # -- AggregateStore ------------------------------------------------------------
    def ensure_sensor(self, machine, sensor, stype, mode):
        self.database(machine).enqueue(("sensor", sensor, stype, mode, self.clock.seconds()), 1)

    def upsert_sums(self, machine, rows):
        rows = list(rows)
        if rows:
            self.database(machine).enqueue(("sums", rows), len(rows))

    def record_fault(self, machine, score, threshold, t):
        self.faults += 1
        self.database(machine).enqueue(
            ("fault", self.calendar.text(t), t, float(score), float(threshold)), 1)
        # Faults are rare and wanted at once: commit on the next reactor turn.
        if self._fault_commit is None and not self.closed:
            self._fault_commit = self.reactor.callLater(0, self._commit_faults)

    fault = record_fault  # the hub's FaultSink

    def _commit_faults(self):
        self._fault_commit = None
        self.flush()

    def flush(self):
        if self.closed:
            return defer.succeed(None)
        ds = [db.commit() for db in self.databases.values()]
        return defer.gatherResults(ds).addCallback(lambda _: None)

    def prune_minutes(self):
        before = int(self.clock.seconds() - self.minute_retention)
        for db in self.databases.values():
            db.enqueue(("prune", before), 1)

    def healthy(self):
        return not any(db.broken for db in self.databases.values())

    def broken(self):
        """``{machine: error text}`` of unusable databases."""
        return {m: db.broken for m, db in self.databases.items() if db.broken}

    def counters(self):
        return {
            "databases": len(self.databases),
            "queued_rows": self.queued_rows,
            "rows_written": self.rows_written,
            "transactions": self.transactions,
            "failed_transactions": self.failed_transactions,
            "dropped_rows": self.dropped_rows,
            "faults": self.faults,
            "congested": self.congested,
            "broken_databases": sum(1 for db in self.databases.values() if db.broken),
        }

    def _committed(self, machine, touched):
        for listener in self.commit_listeners:
            try:
                listener(machine, touched)
            except Exception:
                self.log.failure("commit listener {listener!r} failed for {machine}",
                                 listener=listener, machine=machine)

    def _queue_changed(self, delta):
        self.queued_rows += delta
        if not self.congested and self.queued_rows > self.max_queue_rows:
            self.congested = True
            if self.hub is not None:
                self.hub.storage_congested(True)
        elif self.congested and self.queued_rows <= self.max_queue_rows // 2:
            self.congested = False
            if self.hub is not None:
                self.hub.storage_congested(False)

    # -- reads -------------------------------------------------------------------------
    def recent_minutes(self, machine, since_t):
        """Deferred ``{sensor: minute_rows}`` of a machine (live cache after a restart)."""
        if machine not in self.databases and not os.path.exists(self.path_of(machine)):
            return defer.succeed({})

        def read(conn):
            return {s["name"]: serving.minute_rows(conn, s["name"], since_t)
                    for s in serving.sensors(conn)}
        return self.database(machine).read(read)

