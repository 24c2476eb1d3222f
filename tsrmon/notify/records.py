"""The history of notification attempts, in ``DATABASE.PATH/.notifications.sqlite``.

One row per notification and target once its delivery has ended (sent,
failed after its retries, or cancelled at shutdown), with the number of
attempts it took and the count of notifications for the same machine that
the throttle held back before it.  Held-back notifications are not rows of
their own: a storm must not become a storm of writes.

The leading dot keeps the file out of every listing of machine databases.
SQLite runs in adbapi's own single thread, so the reactor never waits on it.
"""

from zope.interface import implementer

from tsrmon.store.contract import IAttemptTable
from tsrmon.store.sidecar import SidecarFile, SidecarSchema

FILE_NAME = ".notifications.sqlite"
# Rows older than this are pruned at start-up (the cap keeps the table small).
RETENTION_DAYS = 365
HISTORY_LIMIT = 10000

_COLUMNS = ("t", "event_id", "event_t", "machine", "kind", "channel", "target", "result",
            "attempts", "suppressed", "error", "title", "body")

# Version 1: the schema of the unversioned files written before versions.
_V1 = (
    """CREATE TABLE IF NOT EXISTS notification_attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        t REAL NOT NULL,          -- when the delivery ended (epoch seconds)
        event_id TEXT NOT NULL,   -- the notification (same for every target)
        event_t REAL,             -- the fault's own time
        machine TEXT NOT NULL,
        kind TEXT NOT NULL,
        channel TEXT NOT NULL,    -- fcm | webhook
        target TEXT NOT NULL,     -- topic:anomaly, token:abcd1234…, a webhook name
        result TEXT NOT NULL,     -- sent | failed | cancelled
        attempts INTEGER NOT NULL,
        suppressed INTEGER NOT NULL,
        error TEXT,
        title TEXT,
        body TEXT)""",
    "CREATE INDEX IF NOT EXISTS notification_attempts_t ON notification_attempts(t)",
)
# Ordered migrations (``tsrmon/store/sidecar.py``); a new version appends a step.
SCHEMA = SidecarSchema("notification_attempts", ((1, _V1),))


@implementer(IAttemptTable)
class AttemptRecords(SidecarFile):
    """Writes and reads the attempt history; ``open``/``close`` bracket its life."""

    FILE_NAME = FILE_NAME
    SCHEMA = SCHEMA
    WHAT = "notification history"
    MARK = "?"   # the driver's parameter placeholder (the PostgreSQL table: "%s")

    def __init__(self, folder, reactor):
        super().__init__(folder, reactor)
        self.written = 0
        self.failed = 0

    def open(self, now):
        """Deferred firing once the table exists; failures are logged and kept in ``error``."""
        cutoff = now - RETENTION_DAYS * 86400

        def prune(txn):
            txn.execute(f"DELETE FROM notification_attempts WHERE t < {self.MARK}", (cutoff,))

        return self._open(prune).addCallback(lambda _: None)

    def add(self, row):
        """Append one attempt row (a dict with the keys of ``_COLUMNS``)."""
        if self.pool is None:
            self.failed += 1
            return None
        values = tuple(row.get(c) for c in _COLUMNS)
        d = self.pool.runOperation(
            f"INSERT INTO notification_attempts ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join([self.MARK] * len(_COLUMNS))})", values)

        def ok(_):
            self.written += 1
            self.error = None

        def failed(f):
            self.failed += 1
            self.error = f"cannot write {self.path}: {f.getErrorMessage()}"
            self.log.failure("notification attempt for {machine} not recorded", f, machine=row.get("machine"))

        d.addCallbacks(ok, failed)
        return d

    def query(self, start_t, end_t, machine=None, limit=HISTORY_LIMIT):
        """Deferred[list of row dicts] with start_t <= t <= end_t, oldest first."""
        m = self.MARK
        sql = f"SELECT {', '.join(_COLUMNS)} FROM notification_attempts WHERE t >= {m} AND t <= {m}"
        args = [start_t, end_t]
        if machine is not None:
            sql += f" AND machine = {m}"
            args.append(machine)
        sql += f" ORDER BY t, id LIMIT {m}"
        args.append(int(limit))
        if self.pool is None:
            return self._unavailable()
        d = self.pool.runQuery(sql, tuple(args))
        d.addCallback(lambda rows: [dict(zip(_COLUMNS, r)) for r in rows])
        return d

    def close(self):
        self._close_pool()
