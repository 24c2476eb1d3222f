"""One machine's SQLite file: its writer thread, its queue, its retries.

The reactor thread queues operations (``store/deltas.py``); :meth:`commit`
runs everything queued as ONE transaction on the file's own ``adbapi``
thread.  A failed transaction is rolled back and its operations go back to
the queue, compacted (retried at the next flush); a file that fails its
integrity check or migration at open is *broken* (its writes are dropped,
counted and logged).  After each commit the :class:`~tsrmon.store.feed.Change`
it made is published on the store's feed.
"""

import math

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from tsrmon.peerlog import peer_text
from tsrmon.store import migrate, sqlite_spectra
from tsrmon.store.deltas import compact_ops, op_rows
from tsrmon.store.feed import change_of
from tsrmon.store.queueing import join_commit
from tsrmon.store.sqlite_upsert import SensorCatalog, apply_fault, apply_sum_rows, prune_minutes


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
        return join_commit(self)

    def _start(self):
        ops, self.queue = self.queue, []
        rows, self.queued_rows = self.queued_rows, 0
        waiters, self._waiters = self._waiters, []
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
                        self.store.spool_queued()
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
                self.store._committed(change_of(self.machine, ops))
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
            self.store._committed(change_of(self.machine, ops))
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
                    apply_fault(conn, *op[1:])
                elif kind == "prune":
                    prune_minutes(conn, self._catalog, op[1])
                else:
                    sqlite_spectra.apply(conn, self._catalog, op)
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
