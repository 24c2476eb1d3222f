"""The SQLite aggregate store: one writer per machine database.

Implements the store contract (``store/contract.py``: ``IAggregateStore``,
``ISpectraStore``, ``ISpool``; the statistics' ``AggregateStore``) and the
hub's ``FaultSink``; each machine's file is a
:class:`~tsrmon.store.sqlite_machine.MachineDatabase`.  After every commit
the store publishes what it touched on its change feed (``self.feed``,
``store/feed.py``), which the reader follows.  Calls on the reactor thread only queue operations; a
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

import os

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.names import name_problem
from tsrmon.peerlog import peer_text
from tsrmon.rooms import ICounters, IHealth
from tsrmon.stats.calendar import Calendar
from tsrmon.store import schema, serving, spool
from tsrmon.store.contract import IAggregateStore, ISpectraStore, ISpool
from tsrmon.store.deltas import compact_ops
from tsrmon.store.feed import LocalChangeFeed
from tsrmon.store.queueing import QueuedStore
from tsrmon.store.sqlite_machine import MachineDatabase

MINUTE_RETENTION_DAYS = 7
PRUNE_INTERVAL = 3600.0


@implementer(IHealth, ICounters, IAggregateStore, ISpectraStore, ISpool)
class SQLiteStore(QueuedStore, service.Service):
    """``DATABASE.PATH/<machine>.db`` files; see the module docstring."""

    log = Logger()
    name = "store"
    health_key = "database"  # IHealth: its /healthz check
    counters_key = "store"  # ICounters: its /metrics prefix

    def __init__(self, config, reactor, hub=None, clock=None, max_queue_rows=200_000,
                 minute_retention_days=MINUTE_RETENTION_DAYS, run_in_thread=None, feed=None):
        self.config = config
        self.reactor = reactor
        self.clock = clock or reactor
        self.hub = hub
        self.folder = config.database.path
        self.calendar = Calendar(config.time.zone)
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
        # A Change is published here after each commit (reactor thread).
        self.feed = LocalChangeFeed() if feed is None else feed
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
            self.spool_queued()
            self.closed = True
            for db in self.databases.values():
                # A transaction still running (after the shutdown timeout)
                # closes its pool when it ends; closing now would block the
                # reactor until then.
                if db._inflight is None:
                    db.close()

    # -- the spool -------------------------------------------------------------------
    def spool_queued(self):
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

    def known_sensors(self, machine):
        """The sensor names a machine's file records (read-only, at start-up:
        the registry refuses new names that differ from them only in case)."""
        return schema.stored_sensor_names(self.folder, machine)

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
        self._commit_faults_soon()

    fault = record_fault  # the hub's FaultSink

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

    def _committed(self, change):
        if change is not None:
            self.feed.publish(change)

    # -- reads -------------------------------------------------------------------------
    def recent_minutes(self, machine, since_t):
        """Deferred ``{sensor: minute_rows}`` of a machine (live cache after a restart)."""
        if machine not in self.databases and not os.path.exists(self.path_of(machine)):
            return defer.succeed({})

        def read(conn):
            return {s["name"]: serving.minute_rows(conn, s["name"], since_t)
                    for s in serving.sensors(conn)}
        return self.database(machine).read(read)
