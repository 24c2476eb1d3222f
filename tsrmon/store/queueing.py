"""What both aggregate stores (``store/sqlite.py``, ``store/postgres/store.py``)
share of their write queue: congestion, fault commits and joining a commit.
Backend-neutral: no SQL here."""

from twisted.internet import defer


class QueuedStore:
    """A mixin of a store with ``queued_rows``, ``max_queue_rows``,
    ``congested``, ``hub``, ``reactor``, ``closed``, ``_fault_commit`` and
    ``flush``."""

    def _queue_changed(self, delta):
        """``delta`` rows more (or fewer) queued: the hub is told storage is
        congested past ``max_queue_rows`` and free again below half."""
        self.queued_rows += delta
        if not self.congested and self.queued_rows > self.max_queue_rows:
            self.congested = True
            if self.hub is not None:
                self.hub.storage_congested(True)
        elif self.congested and self.queued_rows <= self.max_queue_rows // 2:
            self.congested = False
            if self.hub is not None:
                self.hub.storage_congested(False)

    def _commit_faults_soon(self):
        # Faults are rare and wanted at once: commit on the next reactor turn.
        if self._fault_commit is None and not self.closed:
            self._fault_commit = self.reactor.callLater(0, self._commit_faults)

    def _commit_faults(self):
        self._fault_commit = None
        self.flush()


def join_commit(writer):
    """A Deferred firing when the commit that takes everything queued now
    ends: the next one after ``writer``'s commit in flight, or one started
    at once (``writer._start``)."""
    d = defer.Deferred()
    writer._waiters.append(d)
    if writer._inflight is None:
        writer._start()
    return d
