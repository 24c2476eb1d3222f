"""The store backend of ``DATABASE.BACKEND``: the aggregate store with its
change feed, and the side tables (``store/contract.py``).  The reader that
follows the feed is built by ``tsrmon.reader.backends.build_reader`` (the
store never imports the reader).

``sqlite`` (default): ``SQLiteStore`` (and ``SQLiteReader``) on ``DATABASE.PATH``,
exactly as before, no service needed.  ``postgresql``: ``PostgresStore``,
``PgChangeFeed`` (LISTEN/NOTIFY: every node's commits) (and ``PgReader``) on
``DATABASE.DSN``; the schema is created or migrated and ``TIME.ZONE``
checked here, so a refused database stops the start with one line (a
PostgreSQL that does not answer does not: the node starts and queues).

The offline tools (``store/tools.py``) take their backend's half from here
too: what ``backup`` copies and what ``rebuild-stats`` writes into (a
machine's SQLite file, or the shared store: ``postgres/rebuild.py``).
"""

from tsrmon.config import ConfigError


def build_store(config, reactor, hub=None, feed=None):
    """``(store, feed)`` of the configured backend."""
    if config.database.backend == "postgresql":
        from tsrmon.store.postgres.feed import PgChangeFeed
        from tsrmon.store.postgres.schema import SchemaError, StoreUnreachable
        from tsrmon.store.postgres.store import PostgresStore

        owned = feed is None
        feed = feed or PgChangeFeed(config.database.dsn, reactor)
        store = PostgresStore(config, reactor, hub, feed=feed)
        store.owns_feed = owned
        try:
            store.prepare()
        except StoreUnreachable as e:
            # Like a node losing PostgreSQL: it ingests, queues and catches up.
            store.start_unprepared(str(e))
        except SchemaError as e:
            raise ConfigError(config.source, "DATABASE.DSN", str(e)) from None
        return store, feed
    from tsrmon.store.sqlite import SQLiteStore

    store = SQLiteStore(config, reactor, hub, feed=feed,
                        minute_retention_days=config.database.minute_retention_days)
    return store, store.feed


def build_alarm_table(config, reactor):
    """The alarm history (``IAlarmTable``) of the configured backend."""
    if config.database.backend == "postgresql":
        from tsrmon.store.postgres.sidetables import PgAlarmTable

        return PgAlarmTable(config.database.dsn, reactor)
    from tsrmon.alarms.store import AlarmStore

    return AlarmStore(config.database.path, reactor)


def build_attempt_table(config, reactor):
    """The notification attempts (``IAttemptTable``) of the configured backend."""
    if config.database.backend == "postgresql":
        from tsrmon.store.postgres.sidetables import PgAttemptTable

        return PgAttemptTable(config.database.dsn, reactor)
    from tsrmon.notify.records import AttemptRecords

    return AttemptRecords(config.database.path, reactor)


def backup(config, dest):
    """``tsrmon backup DEST`` of the configured backend: online copies of every
    SQLite database in ``DATABASE.PATH`` (side files too), or a ``pg_dump``
    of the shared store (its own consistent snapshot).  Returns the files
    written; a refusal is a :class:`ToolError` with a one-line reason."""
    if config.database.backend == "postgresql":
        from tsrmon.store.postgres.backup import backup as pg_backup

        return pg_backup(config, dest)
    from tsrmon.store.sqlite_tools import backup as sqlite_backup

    return sqlite_backup(config, dest)


class RebuildTarget:
    """What ``rebuild-stats`` writes into: ``open(machine)`` gives the machine
    store (``reference``, ``replace_days``, ``recompute``, ``close``, and
    ``fed_days`` when the store records which node fed which day); ``shared``
    says whether other nodes' daemons write the store meanwhile (then raw CSV
    comes from every feeding node's folder, and a day must be over)."""

    def __init__(self, open, shared):
        self.open = open
        self.shared = shared


def rebuild_target(config):
    """The :class:`RebuildTarget` of the configured backend.  Nothing is read
    or opened here (a store that does not answer refuses at ``open``)."""
    if config.database.backend == "postgresql":
        from tsrmon.store.postgres.rebuild import PgRebuild

        return RebuildTarget(lambda machine: PgRebuild(config, machine), shared=True)
    from tsrmon.store.sqlite_tools import SQLiteRebuild

    return RebuildTarget(lambda machine: SQLiteRebuild(config.database.path, machine), shared=False)
