"""The side tables in the shared PostgreSQL store: alarm history
(``contract.IAlarmTable``) and notification attempts (``IAttemptTable``).

The SQLite classes (``alarms/store.py``, ``notify/records.py``) with their
file replaced by the shared ``alarms`` and ``notification_attempts``
tables (schema ``pg_schemas/v1.sql``, created by the store's
``prepare``): the same rows, retention and error accounting, the SQL in
PostgreSQL's dialect.  Every node sees every alarm, so after a failover the
new owner resumes the active ones instead of raising them again.
"""

from twisted.internet import defer
from zope.interface import implementer

from tsrmon.alarms import store as alarm_store
from tsrmon.alarms.engine import Alarm
from tsrmon.notify import records
from tsrmon.store.contract import IAlarmTable, IAttemptTable
from tsrmon.store.postgres.store import connection_pool

COLUMNS = alarm_store.COLUMNS


class _Shared:
    """Opens the pool on the shared database instead of a side file."""

    def __init__(self, dsn, reactor):
        self.dsn = dsn
        self.path = "PostgreSQL store"   # named in errors, like the file path
        self.reactor = reactor
        self.pool = None
        self.error = None

    def _open(self, first, consequence=""):
        self.pool = connection_pool(self.dsn, self.reactor)

        def failed(f):
            self.error = f"cannot open {self.WHAT}: {f.getErrorMessage().strip()}"
            self.log.error("{what} unavailable{consequence}: {error}", what=self.WHAT,
                           consequence=consequence, error=self.error)
            return None
        return self.pool.runInteraction(first).addErrback(failed)


@implementer(IAlarmTable)
class PgAlarmTable(_Shared, alarm_store.AlarmStore):
    def __init__(self, dsn, reactor):
        _Shared.__init__(self, dsn, reactor)
        self.writes = 0
        self.failures = 0
        self._pending = set()

    def open(self, now):
        cutoff = now - alarm_store.RETENTION_DAYS * 86400

        def load(txn):
            txn.execute("DELETE FROM alarms WHERE state = 'cleared' AND cleared_t < %s", (cutoff,))
            txn.execute(f"SELECT {', '.join(COLUMNS)} FROM alarms WHERE state = 'active' ORDER BY raised_t, id")
            return [Alarm(**dict(zip(COLUMNS, row))) for row in txn.fetchall()]

        def opened(active):
            if self.error is not None:
                self.failures += 1
            return active or []
        return self._open(load, "; alarms live in memory only").addCallback(opened)

    def insert(self, alarm):
        if self.pool is None:
            return defer.succeed(None)
        row = alarm.row()
        sets = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "id")
        d = self.pool.runOperation(
            f"INSERT INTO alarms ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
            f"ON CONFLICT (id) DO UPDATE SET {sets}", tuple(row[c] for c in COLUMNS))
        return self._track(d, "insert", alarm.id)

    def update(self, alarm, *columns):
        if self.pool is None:
            return defer.succeed(None)
        columns = columns or tuple(c for c in COLUMNS if c != "id")
        d = self.pool.runOperation(
            f"UPDATE alarms SET {', '.join(c + ' = %s' for c in columns)} WHERE id = %s",
            tuple(getattr(alarm, c) for c in columns) + (alarm.id,))
        return self._track(d, "update", alarm.id)

    def update_many(self, alarms, *columns):
        if self.pool is None or not alarms:
            return defer.succeed(None)
        rows = [tuple(getattr(a, c) for c in columns) + (a.id,) for a in alarms]
        sql = f"UPDATE alarms SET {', '.join(c + ' = %s' for c in columns)} WHERE id = %s"
        d = self.pool.runInteraction(lambda txn: txn.executemany(sql, rows))
        return self._track(d, "update", f"{len(rows)} alarms")

    def query(self, start_t, end_t, machine=None, limit=alarm_store.HISTORY_LIMIT):
        if self.pool is None:
            return self._unavailable()
        sql = (f"SELECT {', '.join(COLUMNS)} FROM alarms WHERE raised_t <= %s "
               f"AND (cleared_t IS NULL OR cleared_t >= %s)")
        args = [end_t, start_t]
        if machine is not None:
            sql += " AND machine = %s"
            args.append(machine)
        d = self.pool.runQuery(sql + " ORDER BY raised_t, id LIMIT %s", (*args, int(limit)))
        d.addCallback(lambda rows: [Alarm(**dict(zip(COLUMNS, r))) for r in rows])
        return d


@implementer(IAttemptTable)
class PgAttemptTable(_Shared, records.AttemptRecords):
    def __init__(self, dsn, reactor):
        _Shared.__init__(self, dsn, reactor)
        self.written = 0
        self.failed = 0

    def open(self, now):
        cutoff = now - records.RETENTION_DAYS * 86400
        return self._open(lambda txn: txn.execute(
            "DELETE FROM notification_attempts WHERE t < %s", (cutoff,))).addCallback(lambda _: None)

    def add(self, row):
        if self.pool is None:
            self.failed += 1
            return None
        cols = records._COLUMNS
        d = self.pool.runOperation(
            f"INSERT INTO notification_attempts ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
            tuple(row.get(c) for c in cols))

        def ok(_):
            self.written += 1
            self.error = None

        def failed(f):
            self.failed += 1
            self.error = f"cannot write {self.path}: {f.getErrorMessage()}"
            self.log.failure("notification attempt for {machine} not recorded", f, machine=row.get("machine"))
        d.addCallbacks(ok, failed)
        return d

    def query(self, start_t, end_t, machine=None, limit=records.HISTORY_LIMIT):
        cols = records._COLUMNS
        sql = f"SELECT {', '.join(cols)} FROM notification_attempts WHERE t >= %s AND t <= %s"
        args = [start_t, end_t]
        if machine is not None:
            sql += " AND machine = %s"
            args.append(machine)
        sql += " ORDER BY t, id LIMIT %s"
        args.append(int(limit))
        if self.pool is None:
            return self._unavailable()
        d = self.pool.runQuery(sql, tuple(args))
        d.addCallback(lambda rows: [dict(zip(cols, r)) for r in rows])
        return d
