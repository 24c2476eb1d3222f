"""Alarms in SQLite: ``DATABASE.PATH/.alarms.sqlite``.

One row per alarm, inserted when it is raised and updated when it is
acknowledged or cleared, so the table is both the history and the state:
the rows with ``state = 'active'`` are the alarms a restart resumes.  The
leading dot keeps the file out of every listing of machine databases.
SQLite runs in adbapi's single thread, so writes happen in the order they
were made and the reactor never waits on the disk.
"""

from twisted.internet import defer
from zope.interface import implementer

from tsrmon.alarms.engine import Alarm
from tsrmon.store.contract import IAlarmTable
from tsrmon.store.sidecar import SidecarFile, SidecarSchema

FILE_NAME = ".alarms.sqlite"
RETENTION_DAYS = 365  # cleared alarms older than this are pruned at start-up
HISTORY_LIMIT = 10000

COLUMNS = Alarm.COLUMNS

# Version 1: the schema of the unversioned files written before versions.
_V1 = (
    """CREATE TABLE IF NOT EXISTS alarms (
        id TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        kind TEXT NOT NULL,         -- threshold | daq-silent | sensor-flatline | daq-rate-drop
        machine TEXT NOT NULL,
        sensor TEXT NOT NULL,       -- '' for machine rules
        stype TEXT,
        metric TEXT,
        severity TEXT NOT NULL,
        level REAL,
        clear_level REAL,
        message TEXT,
        state TEXT NOT NULL,        -- active | cleared
        raised_t REAL NOT NULL,     -- epoch seconds
        value REAL,                 -- latest value seen while active
        peak REAL,                  -- worst value seen while active
        cleared_t REAL,
        clear_reason TEXT,
        acked_t REAL,
        acked_by TEXT)""",
    "CREATE INDEX IF NOT EXISTS alarms_raised_t ON alarms(raised_t)",
    "CREATE INDEX IF NOT EXISTS alarms_state ON alarms(state)",
)
# Ordered migrations (``tsrmon/store/sidecar.py``); a new version appends a step.
SCHEMA = SidecarSchema("alarms", ((1, _V1),))


@implementer(IAlarmTable)
class AlarmStore(SidecarFile):
    """Reads and writes the alarm table; ``open``/``close`` bracket its life."""

    FILE_NAME = FILE_NAME
    SCHEMA = SCHEMA
    WHAT = "alarm history"
    MARK = "?"   # the driver's parameter placeholder (the PostgreSQL table: "%s")

    def __init__(self, folder, reactor):
        super().__init__(folder, reactor)
        self.writes = 0
        self.failures = 0
        self._pending = set()

    def open(self, now):
        """Deferred[list of active :class:`Alarm`]; a failure is logged and gives []."""
        cutoff = now - RETENTION_DAYS * 86400

        def load(txn):
            txn.execute(f"DELETE FROM alarms WHERE state = 'cleared' AND cleared_t < {self.MARK}", (cutoff,))
            txn.execute(f"SELECT {', '.join(COLUMNS)} FROM alarms WHERE state = 'active' "
                        f"ORDER BY raised_t, id")
            return [Alarm(**dict(zip(COLUMNS, row))) for row in txn.fetchall()]

        def opened(active):
            if self.error is not None:
                self.failures += 1
            return active or []

        return self._open(load, "; alarms live in memory only").addCallback(opened)

    def _track(self, d, what, alarm_id):
        self._pending.add(d)

        def ok(_):
            self.writes += 1
            self.error = None

        def failed(f):
            self.failures += 1
            self.error = f"cannot write {self.path}: {f.getErrorMessage()}"
            self.log.failure("alarm {alarm} not stored ({what})", f, alarm=alarm_id, what=what)

        def done(result):
            self._pending.discard(d)
            return result

        d.addCallbacks(ok, failed)
        d.addBoth(done)
        return d

    def insert(self, alarm):
        if self.pool is None:
            return defer.succeed(None)
        row = alarm.row()
        d = self.pool.runOperation(self._upsert_sql(), tuple(row[c] for c in COLUMNS))
        return self._track(d, "insert", alarm.id)

    def _upsert_sql(self):
        """The dialect's insert-or-replace of one whole alarm row."""
        return (f"INSERT OR REPLACE INTO alarms ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})")

    def update(self, alarm, *columns):
        """Write ``columns`` of ``alarm`` (all but the id when none are named)."""
        if self.pool is None:
            return defer.succeed(None)
        columns = columns or tuple(c for c in COLUMNS if c != "id")
        d = self.pool.runOperation(
            self._update_sql(columns),
            tuple(getattr(alarm, c) for c in columns) + (alarm.id,))
        return self._track(d, "update", alarm.id)

    def update_many(self, alarms, *columns):
        """One transaction for many alarms (the latest values at shutdown)."""
        return self._update_rows(alarms, columns, self._update_sql(columns))

    def update_active(self, alarms, *columns):
        """:meth:`update_many` for the rows still active: in a cluster a node
        holds copies of alarms that another node may have cleared meanwhile,
        and must not write over their final values at its stop."""
        return self._update_rows(alarms, columns, self._update_sql(columns) + " AND state = 'active'")

    def _update_rows(self, alarms, columns, sql):
        if self.pool is None or not alarms:
            return defer.succeed(None)
        rows = [tuple(getattr(a, c) for c in columns) + (a.id,) for a in alarms]
        d = self.pool.runInteraction(lambda txn: txn.executemany(sql, rows))
        return self._track(d, "update", f"{len(rows)} alarms")

    def _update_sql(self, columns):
        m = self.MARK
        return f"UPDATE alarms SET {', '.join(c + ' = ' + m for c in columns)} WHERE id = {m}"

    def query(self, start_t, end_t, machine=None, limit=HISTORY_LIMIT):
        """Deferred[list of :class:`Alarm`] active at some time in [start_t, end_t]."""
        if self.pool is None:
            return self._unavailable()
        m = self.MARK
        sql = (f"SELECT {', '.join(COLUMNS)} FROM alarms WHERE raised_t <= {m} "
               f"AND (cleared_t IS NULL OR cleared_t >= {m})")
        args = [end_t, start_t]
        if machine is not None:
            sql += f" AND machine = {m}"
            args.append(machine)
        d = self.pool.runQuery(sql + f" ORDER BY raised_t, id LIMIT {m}", (*args, int(limit)))
        d.addCallback(lambda rows: [Alarm(**dict(zip(COLUMNS, r))) for r in rows])
        return d

    def machine_state(self, machine, ids=()):
        """Deferred[list of :class:`Alarm`]: ``machine``'s active alarms and
        the rows of ``ids`` whatever their state (a cluster's new owner of
        the machine reads them, ``alarms/owner_sync.py``)."""
        if self.pool is None:
            return defer.succeed([])
        m = self.MARK
        extra = f" OR id IN ({', '.join([m] * len(ids))})" if ids else ""
        sql = (f"SELECT {', '.join(COLUMNS)} FROM alarms WHERE machine = {m} "
               f"AND (state = 'active'{extra}) ORDER BY raised_t, id")
        d = self.pool.runQuery(sql, (machine, *ids))
        return d.addCallback(lambda rows: [Alarm(**dict(zip(COLUMNS, r))) for r in rows])

    def close(self):
        """Deferred firing once pending writes are done and the pool is closed."""
        pending = list(self._pending)
        d = defer.DeferredList(pending, consumeErrors=True) if pending else defer.succeed(None)

        return d.addCallback(lambda _: self._close_pool())
