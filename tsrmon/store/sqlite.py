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

Nothing is lost in silence: operations of a failing database are compacted
(one sum row per bucket) and retried; whatever is still queued when the
store stops is written to the spool (``store/spool.py``, ``DATABASE.PATH/
spool/``), which the next start replays before new data; every row dropped
is counted and logged.  :meth:`SQLiteStore.health` is the ``/healthz``
detail: one failing or broken database is *degraded* (the others go on),
the store as a whole failing is *unhealthy* (docs/storage.md).
"""

import math
import os

from twisted.application import service
from twisted.enterprise import adbapi
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tsrmon.names import name_problem, quote_identifier
from tsrmon.peerlog import peer_text
from tsrmon.rooms import ICounters, IHealth
from tsrmon.stats.calendar import Calendar
from tsrmon.stats.sums import merge_rows, row_moments
from tsrmon.store import migrate, schema, serving, spool, spectra

MINUTE_RETENTION_DAYS = 7
PRUNE_INTERVAL = 3600.0

_STAT_COLS = "time, data, t0, utc_offset, count, sum, sum_abs, min, max, sum_sq"


def upsert_sql(sensor, level, mode, moments=False):
    """Additive upsert of one sum row into a sensor's level table (with the
    moment columns too when ``moments``; NULL in old rows counts as 0)."""
    q = quote_identifier(schema.stat_table(sensor, level))
    num = '"sum_abs"' if mode == "ABS" else '"sum"'
    columns = 'time, data, t0, utc_offset, "count", "sum", "sum_abs", "min", "max", "sum_sq"'
    updates = [
        '"count" = "count" + excluded."count"',
        '"sum" = "sum" + excluded."sum"',
        '"sum_abs" = "sum_abs" + excluded."sum_abs"',
        '"sum_sq" = "sum_sq" + excluded."sum_sq"',
        '"min" = MIN("min", excluded."min")',
        '"max" = MAX("max", excluded."max")',
        f'data = ({num} + excluded.{num}) / ("count" + excluded."count")',
    ]
    n = 10
    if moments:
        columns += ', "mcount", "s1", "s2", "s3", "s4"'
        updates.append('"mcount" = COALESCE("mcount", 0) + excluded."mcount"')
        updates += [f'"{c}" = COALESCE("{c}", 0.0) + excluded."{c}"' for c in ("s1", "s2", "s3", "s4")]
        n = 15
    return (f"INSERT INTO {q} ({columns}) VALUES ({', '.join('?' * n)}) "
            f"ON CONFLICT(t0) DO UPDATE SET {', '.join(updates)}")


def sum_params(rows, mode):
    """executemany parameters for sum rows ``(sensor, level, t0, off, time, n, s, sa, lo, hi, sq)``."""
    if mode == "ABS":
        return [(r[4], r[7] / r[5], r[2], r[3], r[5], r[6], r[7], r[8], r[9], r[10]) for r in rows]
    return [(r[4], r[6] / r[5], r[2], r[3], r[5], r[6], r[7], r[8], r[9], r[10]) for r in rows]


def moment_params(rows, mode, refs):
    """executemany parameters of sum rows with moments, each shifted to its
    sensor's stored reference ``refs`` (a shift is exact algebra; it only
    happens when a process chose c before the stored one was known)."""
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


class SensorCatalog:
    """Which sensors have tables in one database, their modes and moment
    references (writer thread).

    ``modes[sensor]`` is None for a sensor known only from deployed tables;
    ``refs[sensor]`` is None until its first moments are written.
    """

    def __init__(self):
        self.modes = {}
        self.refs = {}
        self.spectra = set()   # sensors whose spectra tables exist

    def load(self, conn):
        self.modes = {s["name"]: s["mode"] for s in serving.sensors(conn)}
        # A file marked version 2 by another tool without the column.
        migrate.add_missing_columns(conn, schema.SENSORS_TABLE, schema.ADDED_SENSOR_COLUMNS)
        self.refs = dict(conn.execute(f"SELECT name, ref FROM {schema.SENSORS_TABLE}"))
        self.spectra = set()

    def reference(self, conn, sensor, ref):
        """The sensor's stored reference; ``ref`` becomes it when none is stored."""
        got = self.refs.get(sensor)
        if got is None:
            conn.execute(f"UPDATE {schema.SENSORS_TABLE} SET ref=? WHERE name=? AND ref IS NULL",
                         (ref, sensor))
            got = conn.execute(f"SELECT ref FROM {schema.SENSORS_TABLE} WHERE name=?",
                               (sensor,)).fetchone()[0]
            self.refs[sensor] = got
        return got

    def ensure_spectra(self, conn, sensor):
        if sensor not in self.spectra:
            for sql in schema.spectra_ddl(sensor):
                conn.execute(sql)
            self.spectra.add(sensor)

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
    """Upsert sum rows, grouped per table (inside the caller's transaction).
    Rows with moments (17 columns, mcount > 0) also add to the moment
    columns, about the sensor's one stored reference."""
    groups = {}
    for r in rows:
        if r[5] <= 0:
            continue
        groups.setdefault((r[0], r[1], len(r) >= 17 and r[11] > 0), []).append(r)
    for (sensor, level, moments), group in groups.items():
        mode = catalog.mode(conn, sensor)
        if moments:
            refs = {sensor: catalog.reference(conn, sensor, group[0][12])}
            conn.executemany(upsert_sql(sensor, level, mode, True),
                             moment_params(group, mode, refs))
        else:
            conn.executemany(upsert_sql(sensor, level, mode), sum_params(group, mode))


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
    others = []   # spectra rows and their pruning (store/spectra.py), in order
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
        self._closed = False
        self.failing = None       # error text of the last failed transaction
        self.failing_since = None
        self.dropped_rows = 0     # this machine's rows dropped (broken file)
        self._dropped_logged = 0
        self.pool = adbapi.ConnectionPool(
            "sqlite3", path, isolation_level=None, check_same_thread=False,
            cp_min=1, cp_max=1, cp_reactor=store.reactor)

    # -- reactor thread ------------------------------------------------------
    def enqueue(self, op, rows=1):
        if self.broken is not None and op[0] in ("prune", "prune_spectra"):
            return
        if self.broken is not None or self.store.closed:
            self.store.dropped_rows += rows
            self.dropped_rows += rows
            if self.store.closed:
                # A wiring bug (a room still writing after the store stopped).
                self.log.error("{machine}: {n} rows dropped: the store has stopped",
                               machine=peer_text(self.machine), n=rows)
            elif self.dropped_rows >= 10 * max(self._dropped_logged, 1):
                # Logged each time the total grows tenfold, not once a flush.
                self._dropped_logged = self.dropped_rows
                self.log.error("{machine}: {n} rows dropped in all since its database broke "
                               "({error})", machine=peer_text(self.machine),
                               n=self.dropped_rows, error=self.broken)
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
                    self._mark_broken(str(result.value), rows, ops)
                else:
                    self.store.failed_transactions += 1
                    self._failures += 1
                    if self.failing is None:
                        self.failing_since = self.store.clock.seconds()
                    self.failing = result.getErrorMessage()
                    # Logged in full once per streak, then at 10, 100, ... failures.
                    if self._failures == 1:
                        self.log.failure("{path}: writing {n} queued rows failed; they stay "
                                         "queued and are retried at every flush", result,
                                         path=self.path, n=rows)
                    elif math.log10(self._failures).is_integer():
                        self.log.error("{path}: still failing ({count} attempts, {n} rows "
                                       "queued): {error}", path=self.path, count=self._failures,
                                       n=rows + self.queued_rows, error=result.getErrorMessage())
                    # Still counted in the store's queue: put them back,
                    # merged per bucket so a long outage stays small.
                    self.queue, kept = compact_ops(ops + self.queue)
                    before = rows + self.queued_rows
                    self.queued_rows = kept
                    self.store._queue_changed(kept - before)
                    if self.store.closed:
                        # The shutdown timeout cut the final commit short and
                        # it failed since: spool these rows too.
                        self.store._spool_queued()
            else:
                if isinstance(result, dict):
                    self.store.references[self.machine] = result
                if self._failures:
                    self.log.info("{path}: writing again after {count} failed attempts",
                                  path=self.path, count=self._failures)
                    self._failures = 0
                self.failing = None
                self.failing_since = None
                self.store.transactions += 1
                self.store.rows_written += rows
                self.store._queue_changed(-rows)
                if touched:
                    self.store._committed(self.machine, touched)
            for w in waiters:
                w.callback(None)
            if self.store.closed:
                # Finished after the shutdown timeout: nothing more to start.
                self.close()
            elif self._waiters:
                self._start()

        self._inflight.addBoth(done)

    def _mark_broken(self, text, rows, ops):
        self.broken = text
        self.failing = None
        self.store._queue_changed(-(rows + self.queued_rows))
        # Data rows only (a prune is not data).
        lost = sum(op_rows(op) for op in ops + self.queue if op[0] not in ("prune", "prune_spectra"))
        self.store.dropped_rows += lost
        self.dropped_rows += lost
        self._dropped_logged = self.dropped_rows
        self.queue = []
        self.queued_rows = 0
        self.log.error("{error}. Writes for machine {machine} stop ({n} queued rows dropped; "
                       "its other data and other machines go on)",
                       error=text, machine=peer_text(self.machine), n=lost)

    def replay(self, ops):
        """Commit spooled operations as one transaction of their own, ahead of
        anything queued later; a Deferred firing True or False (logged)."""
        if self.broken is not None:
            return defer.succeed(False)
        d = self.pool.runWithConnection(self._write, ops)

        def done(result):
            if isinstance(result, Failure):
                if self.failing is None:
                    self.failing_since = self.store.clock.seconds()
                self.failing = result.getErrorMessage()
                self.log.error("{path}: replaying {n} spooled rows failed ({error}); they stay "
                               "in the spool for the next start", path=self.path,
                               n=sum(map(op_rows, ops)), error=result.getErrorMessage())
                return False
            if isinstance(result, dict):
                self.store.references[self.machine] = result
            touched = _touched_hours(ops)
            if touched:
                self.store._committed(self.machine, touched)
            return True
        return d.addBoth(done)

    def close(self):
        if not self._closed:
            self._closed = True
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
            return self._refs()
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
                else:
                    spectra.apply(conn, self._catalog, op)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            # Tables created in the rolled-back transaction are gone again.
            self._catalog.load(conn)
            raise
        return self._refs()

    def _refs(self):
        """``{sensor: ref}`` of the stored moment references (handed to the
        reactor thread with each commit: ``SQLiteStore.reference``)."""
        return {k: v for k, v in self._catalog.refs.items() if v is not None}

    def read(self, fn, *args):
        """Run ``fn(conn, *args)`` on the writer thread (after queued writes)."""
        def run(conn):
            if not self._opened:
                self._open(conn)
            return fn(conn, *args)
        return self.pool.runWithConnection(run)


@implementer(IHealth, ICounters)
class SQLiteStore(service.Service):
    """``DATABASE.PATH/<machine>.db`` files; see the module docstring."""

    log = Logger()
    name = "store"
    health_key = "database"  # IHealth: its /healthz check
    counters_key = "store"  # ICounters: its /metrics prefix

    def __init__(self, config, reactor, hub=None, clock=None, max_queue_rows=200_000,
                 minute_retention_days=MINUTE_RETENTION_DAYS, run_in_thread=None, commit_listeners=()):
        self.config = config
        self.reactor = reactor
        self.clock = clock or reactor
        self.hub = hub
        self.folder = config["DATABASE"]["PATH"]
        self.calendar = Calendar(config["TIME"]["ZONE"])
        self.max_queue_rows = max_queue_rows
        self.minute_retention = minute_retention_days * 86400
        self.databases = {}
        self.references = {}   # machine -> {sensor: moment reference} (after a commit)
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
        self.commit_listeners = list(commit_listeners)
        self._pruner = None
        self.closed = False
        self.spool_folder = spool.spool_dir(self.folder)
        self.spooled_rows = 0        # written to the spool at stop
        self.replayed_rows = 0       # replayed from it at start
        self.spool_kept_rows = 0     # still in the spool after the replay (failed)
        self.spool_errors = 0
        self.replay_done = None      # a Deferred: the start-up replay is over
        self.case_collisions = None  # find_case_collisions() at start
        if run_in_thread is None:
            def run_in_thread(fn, *args):
                return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)
        self._run_in_thread = run_in_thread

    # -- service ---------------------------------------------------------------
    def startService(self):
        super().startService()
        os.makedirs(self.folder, exist_ok=True)
        # Check (and migrate) every existing file now, on the writer threads,
        # so a broken or deployed file is reported before any DAQ connects.
        for machine in self.known_machines():
            self.database(machine).commit()
        # Spooled rows go to each writer thread now, ahead of any new data.
        self.replay_done = self.replay_spool()
        self.replay_done.addErrback(lambda f: self.log.failure("replaying the spool failed", f))
        self._run_in_thread(schema.find_case_collisions, self.folder).addCallbacks(
            self._report_collisions,
            lambda f: self.log.failure("looking for names that differ only in case failed", f))
        self._pruner = task.LoopingCall(self.prune_minutes)
        self._pruner.clock = self.clock
        self._pruner.start(PRUNE_INTERVAL, now=True).addErrback(
            lambda f: self.log.failure("minute pruning stopped", f))

    def _report_collisions(self, found):
        self.case_collisions = found
        for c in found:
            self.log.warn("{folder}: {text}", folder=self.folder,
                          text=peer_text(schema.describe_case_collision(c), 400))

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._pruner is not None and self._pruner.running:
            self._pruner.stop()
        try:
            # A database that failed at its last attempt (the statistics' flush
            # a moment ago) is not tried again: its rows go to the spool.
            ds = [db._inflight for db in self.databases.values()
                  if db.failing and db._inflight is not None]
            ds += [db.commit() for db in self.databases.values() if not db.failing]
            yield defer.gatherResults(ds, consumeErrors=True)
        except (defer.CancelledError, defer.FirstError):
            # SERVER.SHUTDOWN_TIMEOUT expired (commits never errback
            # otherwise): spool what is queued now.
            pass
        finally:
            self._spool_queued()
            self.closed = True
            for db in self.databases.values():
                # A transaction still running (after the shutdown timeout)
                # closes its pool when it ends; closing now would block the
                # reactor until then.
                if db._inflight is None:
                    db.close()

    # -- the spool -------------------------------------------------------------------
    def _spool_queued(self):
        """Write every queued operation to a spool file (at stop); log counts."""
        records = []
        machines = 0
        inflight = 0
        for m, db in self.databases.items():
            if db._inflight is not None:
                # Only after SERVER.SHUTDOWN_TIMEOUT cut the final commit short.
                inflight += 1
            recs = spool.records_of(m, db.queue)
            if recs:
                machines += 1
                records.extend(recs)
            db.queue = []
            self._queue_changed(-db.queued_rows)
            db.queued_rows = 0
        if inflight:
            self.log.error("the shutdown timeout expired while {n} databases were committing; "
                           "their rows are stored if those transactions finish", n=inflight)
        if not records:
            return
        n_sums = sum(1 for r in records if r["kind"] == "sums")
        n_faults = sum(1 for r in records if r["kind"] == "fault")
        try:
            path = spool.write_records(self.spool_folder, records, self.clock.seconds())
        except (OSError, ValueError) as e:
            self.spool_errors += 1
            self.dropped_rows += len(records)
            self.log.critical("{n} rows of {machines} machines ({sums} sum rows, {faults} faults) "
                              "could not be committed nor spooled to {folder} ({error}): lost",
                              n=len(records), machines=machines, sums=n_sums, faults=n_faults,
                              folder=self.spool_folder, error=e)
            return
        self.spooled_rows += len(records)
        self.log.warn("{n} rows of {machines} machines ({sums} sum rows, {faults} faults) could "
                      "not be committed before shutdown; kept in {path}, replayed at the next start",
                      n=len(records), machines=machines, sums=n_sums, faults=n_faults, path=path)

    def replay_spool(self):
        """Replay every spool file (oldest first), one transaction per machine
        and file.  The files are read and the transactions handed to the
        writer threads here, synchronously, so they run before anything
        queued later.  A file is removed once all its rows are committed;
        rows that fail stay in it (rewritten without the committed ones).
        Returns a Deferred firing when every file is dealt with."""
        jobs = []
        for path in spool.spool_files(self.spool_folder):
            try:
                records, bad = spool.read_file(path)
            except OSError as e:
                self.spool_errors += 1
                self.log.error("cannot read spool file {path} ({error}); left in place",
                               path=path, error=e)
                continue
            if bad:
                self.log.error("spool file {path}: {n} lines are not spool records; skipped",
                               path=path, n=bad)
            by_machine = {}
            invalid = 0
            for rec in records:
                try:
                    machine, op, _ = spool.op_of(rec)
                except spool.SpoolError:
                    invalid += 1
                    continue
                ops, recs = by_machine.setdefault(machine, ([], []))
                ops.append(op)
                recs.append(rec)
            if invalid:
                self.log.error("spool file {path}: {n} records are malformed; skipped",
                               path=path, n=invalid)
            results = []
            for machine, (ops, recs) in by_machine.items():
                try:
                    db = self.database(machine)
                except ValueError as e:
                    self.log.error("spool file {path}: {n} rows of machine {machine} cannot be "
                                   "stored ({error}); they stay in the spool", path=path,
                                   n=len(recs), machine=peer_text(machine),
                                   error=peer_text(str(e), 200))
                    results.append(defer.succeed(False))
                    continue
                results.append(db.replay(compact_ops(ops)[0]))
            jobs.append((path, by_machine, defer.gatherResults(results)))
        return self._replayed(jobs)

    @defer.inlineCallbacks
    def _replayed(self, jobs):
        for path, by_machine, results in jobs:
            outcome = yield results
            machines = list(by_machine)
            done = sum(len(by_machine[m][1]) for m, ok in zip(machines, outcome) if ok)
            kept = [rec for m, ok in zip(machines, outcome) if not ok for rec in by_machine[m][1]]
            self.replayed_rows += done
            self.rows_written += done
            try:
                if kept:
                    name = os.path.basename(path)
                    if name.endswith(spool.PART):
                        name = name[:-len(spool.PART)]
                    yield self._run_in_thread(spool.write_records, self.spool_folder, kept,
                                              self.clock.seconds(), name)
                    if path.endswith(spool.PART):
                        yield self._run_in_thread(spool.remove, path)
                else:
                    yield self._run_in_thread(spool.remove, path)
            except OSError as e:
                self.spool_errors += 1
                # The file still holds the committed rows: replaying it again
                # would count them twice, so say so loudly.
                self.log.critical("spool file {path}: {done} rows were replayed but the file "
                                  "could not be updated ({error}); move it away before the next "
                                  "start or they are counted twice", path=path, done=done, error=e)
                continue
            self.spool_kept_rows += len(kept)
            if done:
                self.log.info("replayed {n} spooled rows of {machines} machines from {path}",
                              n=done, machines=sum(outcome), path=path)
            if kept:
                self.log.error("{n} spooled rows of {machines} machines could not be replayed; "
                               "kept in {path} for the next start", n=len(kept),
                               machines=len(machines) - sum(outcome), path=path)

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

    def reference(self, machine, sensor):
        """The sensor's stored moment reference c, once its database has
        been opened or written (None before: the statistics then choose c
        and the writer shifts their rows to the stored one)."""
        return self.references.get(machine, {}).get(sensor)

    def upsert_sums(self, machine, rows):
        rows = list(rows)
        if rows:
            self.database(machine).enqueue(("sums", rows), len(rows))

    # -- spectra (tsrmon/spectra/, store/spectra.py) ------------------------------
    def upsert_spectrum(self, machine, sensor, kind, t0, utc_offset, text, blocks, rate, f0, df, blob):
        """Queue a spectrum row (``kind``: spectrum_minute | spectrum_hour |
        envelope_minute); an existing row merges (power average by blocks)."""
        self.database(machine).enqueue(("spectrum", sensor, kind, int(t0), int(utc_offset), text,
                                        int(blocks), float(rate), float(f0), float(df),
                                        bytes(blob)), 1)

    def upsert_features(self, machine, sensor, t0, utc_offset, text, blocks, velocity_rms, doc):
        """Queue a minute's features (``doc`` JSON text)."""
        self.database(machine).enqueue(("features", sensor, int(t0), int(utc_offset), text,
                                        int(blocks), velocity_rms, doc), 1)

    def prune_spectra(self, minute_before, hour_before):
        """Queue the spectra retention of every open database."""
        for db in self.databases.values():
            db.enqueue(("prune_spectra", int(minute_before), int(hour_before)), 1)

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

    MAX_HEALTH_DETAIL = 20

    def health(self):
        """The ``/healthz`` check: ``ok`` False only when the store as a whole
        cannot write; one failing or broken database is ``degraded`` detail.

        Unhealthy: ``DATABASE.PATH`` is not a writable folder, SQLite says
        the disk is full, or at least two databases are failing and none is
        writing.  Degraded entries vanish by themselves once their database
        commits again (a broken file stays until it is repaired and the
        daemon restarted).
        """
        degraded = {}
        failing = writing = 0
        full = False
        for m, db in self.databases.items():
            if db.broken:
                entry = {"error": db.broken, "broken": True, "dropped_rows": db.dropped_rows}
            elif db.failing:
                failing += 1
                full = full or "full" in db.failing
                entry = {"error": db.failing, "broken": False, "since": db.failing_since,
                         "attempts": db._failures, "queued_rows": db.queued_rows}
            else:
                writing += 1
                continue
            if len(degraded) < self.MAX_HEALTH_DETAIL:
                degraded[peer_text(m)] = entry
        n_degraded = sum(1 for db in self.databases.values() if db.broken or db.failing)
        problem = None
        if not (os.path.isdir(self.folder) and os.access(self.folder, os.W_OK | os.X_OK)):
            problem = f"{self.folder} is not a writable folder"
        elif full:
            problem = "the disk is full"
        elif failing >= 2 and not writing:
            problem = "every database is failing"
        out = {"ok": problem is None,
               "state": "failing" if problem else ("degraded" if n_degraded else "ok"),
               "path": self.folder,
               "queued_rows": self.queued_rows,
               "dropped_rows": self.dropped_rows}
        if problem:
            out["error"] = problem
        if n_degraded:
            out["degraded"] = degraded
            out["degraded_count"] = n_degraded
        if self.spool_kept_rows:
            out["spool_rows"] = self.spool_kept_rows
        return out

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
            "failing_databases": sum(1 for db in self.databases.values() if db.failing),
            "spooled_rows": self.spooled_rows,
            "replayed_rows": self.replayed_rows,
            "spool_rows": self.spool_kept_rows,
            "spool_errors": self.spool_errors,
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
