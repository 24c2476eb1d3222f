"""What both readers share: their thread pool and the public read methods.

A base of :class:`~tsrmon.reader.sqlite_reader.SQLiteReader` and
:class:`~tsrmon.reader.pg_reader.PgReader`: each public method runs its
private half (``_stats``, ``_minutes``, …, the backend's own) in the
reader's pool and returns a Deferred.  The backend gives ``_call`` (how a
read fails there), ``_threads`` and ``POOL_NAME``.
"""

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool


class PooledReads:
    """``IStatsReader``'s public methods (``store/contract.py``) on a thread pool."""

    POOL_NAME = "tsrmon-read"

    def _ensure_pool(self):
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=self._threads, name=self.POOL_NAME)
            self._pool.start()
        return self._pool

    def _run(self, fn, *args, then=None):
        """Run ``fn(*args)`` in the pool; then ``then(result)`` there too, so a
        caller can encode a large answer without blocking the reactor."""
        return deferToThreadPool(self.reactor, self._ensure_pool(), self._call, fn, args, then)

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
