"""The side tables in the shared PostgreSQL store: alarm history
(``contract.IAlarmTable``) and notification attempts (``IAttemptTable``).

The SQLite classes (``alarms/store.py``, ``notify/records.py``) with their
file replaced by the shared ``alarms`` and ``notification_attempts``
tables (schema ``pg_schemas/v1.sql``, created by the store's
``prepare``): the same rows, retention and error accounting, the SQL in
PostgreSQL's dialect.  Every node sees every alarm, so after a failover the
new owner resumes the active ones instead of raising them again.
"""

from zope.interface import implementer

from tsrmon.alarms import store as alarm_store
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
    """The SQLite class's logic with PostgreSQL's placeholder and upsert."""

    MARK = "%s"

    def __init__(self, dsn, reactor):
        _Shared.__init__(self, dsn, reactor)
        self.writes = 0
        self.failures = 0
        self._pending = set()

    def _upsert_sql(self):
        sets = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "id")
        return (f"INSERT INTO alarms ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
                f"ON CONFLICT (id) DO UPDATE SET {sets}")


@implementer(IAttemptTable)
class PgAttemptTable(_Shared, records.AttemptRecords):
    """The SQLite class's logic with PostgreSQL's placeholder."""

    MARK = "%s"

    def __init__(self, dsn, reactor):
        _Shared.__init__(self, dsn, reactor)
        self.written = 0
        self.failed = 0
