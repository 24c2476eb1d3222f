"""The daemon's own small SQLite files beside the machine databases (alarm
state, notification attempts).  Their names start with a dot, which no
machine name may, so they are never listed or served as machines.

Each file is versioned like a machine database (``store/migrate.py``): a
``tsrmon_schema`` table holds its version, and a :class:`SidecarSchema`
lists the ordered migrations that build it (version 1 is the schema the
files had before they were versioned, so an unversioned file holding the
main table is recognised as version 1).  A file that has a version and needs
steps is first copied to ``<folder>/backups/``; a file newer than this code
is refused with one line and left untouched.
"""

import os

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger

from tsrmon.store import migrate
from tsrmon.store.schema import VERSION_TABLE


class SidecarTooNew(Exception):
    """The file was written by a newer tsrmon; the text names it."""


class SidecarSchema:
    """``migrations``: ``((version, (statement, ...)), ...)`` in ascending
    order from 1; ``main_table`` is the table whose presence in an
    unversioned file means version 1."""

    def __init__(self, main_table, migrations):
        versions = [v for v, _ in migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"migrations must be numbered 1, 2, ... (got {versions})")
        self.main_table = main_table
        self.migrations = tuple(migrations)
        self.version = versions[-1]


def file_version(conn, sidecar_schema):
    """0 for an empty file, 1 for an unversioned one holding the main table,
    else the stored version."""
    names = set(migrate.table_names(conn))
    if VERSION_TABLE in names:
        row = conn.execute(f"SELECT MAX(version) FROM {VERSION_TABLE}").fetchone()
        if row[0] is not None:
            return row[0]
    return 1 if sidecar_schema.main_table in names else 0


def prepare(conn, path, sidecar_schema):
    """Bring the open file ``conn`` to ``sidecar_schema.version`` in one
    transaction.  Returns ``(old_version, backup_path_or_None)``; raises
    :class:`SidecarTooNew`.  Synchronous: runs on the pool's thread."""
    version = file_version(conn, sidecar_schema)
    latest = sidecar_schema.version
    if version > latest:
        # Operations queued behind this check must not write to it either.
        conn.execute("PRAGMA query_only=ON")
        raise SidecarTooNew(f"{path}: schema version {version} is newer than this tsrmon "
                            f"understands ({latest}); not opened (upgrade tsrmon or move the file away)")
    if version == latest and VERSION_TABLE in migrate.table_names(conn):
        return version, None
    copy = None
    if version >= 1 and any(v > version for v, _ in sidecar_schema.migrations):
        copy = migrate.backup_copy(conn, migrate.backup_path(path, version))
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step, statements in sidecar_schema.migrations:
            if step > version:
                for sql in statements:
                    conn.execute(sql)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER NOT NULL)")
        conn.execute(f"DELETE FROM {VERSION_TABLE}")
        conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (?)", (latest,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version, copy


def _wal(conn):
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def sidecar_pool(path, reactor):
    """A one-connection adbapi pool on ``path`` (its folder created).

    Raises OSError when the folder cannot be created; the caller logs it and
    carries on without the file.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return adbapi.ConnectionPool(
        "sqlite3", path, check_same_thread=False, cp_min=1, cp_max=1,
        cp_openfun=_wal, cp_reactor=reactor)


def open_sidecar(path, reactor, sidecar_schema, first, log, unavailable):
    """Open the file: create its pool, bring it to its version (``prepare``
    on the pool's thread) and run ``first(txn)`` (prune, load).

    Returns ``(pool, opened)``: the pool at once (``None`` when the folder
    cannot be created), so operations issued meanwhile queue behind the
    check in its one thread; ``opened`` is Deferred[(pool or None, error text
    or None, first's result)] and never fails.  A file newer than the code
    closes the pool (``None``) and the caller works without the file.
    ``unavailable`` starts the log line ("alarm history unavailable").
    """
    try:
        pool = sidecar_pool(path, reactor)
    except OSError as e:
        error = f"cannot create {os.path.dirname(path)}: {e.strerror}"
        log.error("{what}: {error}", what=unavailable, error=error)
        return None, defer.succeed((None, error, None))

    def migrated(result):
        old, copy = result
        if copy is not None:
            log.info("{path}: schema version {old} backed up to {copy} and migrated to {new}",
                     path=path, old=old, copy=copy, new=sidecar_schema.version)
        return pool.runInteraction(first)

    def failed(f):
        if f.check(SidecarTooNew):
            # Not ours to write: one line, and the file is left as it is.
            pool.close()
            log.error("{what}: {error}", what=unavailable, error=str(f.value))
            return None, str(f.value), None
        log.failure("{what} ({path})", f, what=unavailable, path=path)
        return pool, f"cannot open {path}: {f.getErrorMessage()}", None

    d = pool.runWithConnection(prepare, path, sidecar_schema)
    d.addCallback(migrated)
    return pool, d.addCallbacks(lambda result: (pool, None, result), failed)


class SidecarFile:
    """What a side database's reader/writer shares: its path, pool and last
    error.  A subclass sets ``FILE_NAME``, ``SCHEMA`` (a :class:`SidecarSchema`)
    and ``WHAT`` (the name of the file's content in errors: "alarm history")."""

    FILE_NAME = SCHEMA = WHAT = None
    log = Logger()

    def __init__(self, folder, reactor):
        self.path = os.path.join(folder, self.FILE_NAME)
        self.reactor = reactor
        self.pool = None
        self.error = None

    def _open(self, first, consequence=""):
        """Deferred[first's result, or None when the file is unusable]."""

        def opened(result):
            self.pool, self.error, value = result
            return value

        self.pool, d = open_sidecar(self.path, self.reactor, self.SCHEMA, first, self.log,
                                    f"{self.WHAT} unavailable{consequence}")
        return d.addCallback(opened)

    def _unavailable(self):
        return defer.fail(RuntimeError(f"{self.WHAT} unavailable: {self.error}"))

    def _close_pool(self):
        if self.pool is not None:
            self.pool.close()
            self.pool = None
