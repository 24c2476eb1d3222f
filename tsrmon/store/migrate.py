"""Opening a machine database: integrity check, backup, in-place migration.

A deployed database (``anomaly`` and ``<sensor>_<level>_avg`` tables, no
``tsrmon_schema``) is version 0.  Before it is changed it is copied with
SQLite's online backup API to ``<DATABASE.PATH>/backups/`` (a sub-folder, so
the deployed "every name containing .db" listing never shows it), then
migrated in one transaction by nullable ``ALTER TABLE ... ADD COLUMN`` only:
no row is changed or removed.  ``migrate`` is idempotent and serves every
step: version 0 → 2 and 1 → 2 (the moment columns of issue 17, ``ref`` in
``tsrmon_sensors``) add whatever columns are missing.  Everything here is synchronous and runs on
the database's writer thread (or in a CLI tool).
"""

import datetime
import os
import re
import sqlite3

from tsrmon.names import quote_identifier
from tsrmon.store import schema

_STAT_TABLE = re.compile(r"^(.+)_(minute|hour|day|month|year)_avg$")


class DatabaseBroken(Exception):
    """The file cannot be used; the text names it and says what to do."""


def connect(path):
    """A connection in autocommit mode (transactions are explicit)."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def set_pragmas(conn):
    conn.execute("PRAGMA busy_timeout=10000")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    conn.execute("PRAGMA synchronous=NORMAL")
    return mode


def quick_check(conn, path):
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as e:
        raise DatabaseBroken(f"{path}: not a usable SQLite database ({e})") from None
    problems = [r[0] for r in rows if r[0] != "ok"]
    if problems:
        shown = "; ".join(problems[:3])
        raise DatabaseBroken(f"{path}: integrity check failed ({shown}); "
                             f"restore it from a backup or move it away")


def table_names(conn):
    """User tables in creation (sqlite_master) order."""
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY rowid")]


def stat_tables(conn):
    """``[(table, sensor, level)]`` of the statistics tables, creation order."""
    out = []
    for name in table_names(conn):
        m = _STAT_TABLE.match(name)
        if m:
            out.append((name, m.group(1), m.group(2)))
    return out


def columns(conn, table):
    return [r[1] for r in conn.execute(f"PRAGMA table_info({quote_identifier(table)})")]


def schema_version(conn):
    """0 for a deployed (or empty) database, else the stored version."""
    names = set(table_names(conn))
    if schema.VERSION_TABLE not in names:
        return 0
    row = conn.execute(f"SELECT MAX(version) FROM {schema.VERSION_TABLE}").fetchone()
    return row[0] or 0


def is_empty(conn):
    return not table_names(conn)


def backup_copy(conn, dest):
    """An online, consistent copy of ``conn``'s database into file ``dest``."""
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = dest + ".part"
    if os.path.exists(tmp):
        os.remove(tmp)
    target = sqlite3.connect(tmp)
    try:
        conn.backup(target)
    finally:
        target.close()
    os.replace(tmp, dest)
    return dest


def backup_path(db_path, version, now=None):
    now = now or datetime.datetime.now()
    folder = os.path.join(os.path.dirname(db_path), "backups")
    base = os.path.splitext(os.path.basename(db_path))[0]
    stamp = now.strftime("%Y%m%dT%H%M%S")
    path = os.path.join(folder, f"{base}.{stamp}.v{version}.db")
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(folder, f"{base}.{stamp}-{n}.v{version}.db")
    return path


def create_sensor_tables(conn, sensor):
    """The five level tables of a sensor (idempotent)."""
    for level in schema.LEVELS:
        for sql in schema.create_stat_table_sql(sensor, level):
            conn.execute(sql)


def add_missing_columns(conn, table, wanted):
    """``ALTER TABLE ... ADD COLUMN`` each ``(name, type)`` of ``wanted`` that
    ``table`` lacks; returns the ``table.column`` names added."""
    have = set(columns(conn, table))
    added = []
    for col, typ in wanted:
        if col not in have:
            conn.execute(f"ALTER TABLE {quote_identifier(table)} ADD COLUMN {quote_identifier(col)} {typ}")
            added.append(f"{table}.{col}")
    return added


def migrate(conn):
    """Bring a version-0 (deployed) database to ``SCHEMA_VERSION`` in place, in
    one transaction.  Returns the list of changes made (for the log)."""
    changes = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        sensors = []
        for table, sensor, _level in stat_tables(conn):
            changes += add_missing_columns(conn, table, schema.ADDED_STAT_COLUMNS)
            conn.execute(schema.unique_t0_index_sql(table))
            conn.execute(schema.time_index_sql(table))
            if sensor not in sensors:
                sensors.append(sensor)
        names = set(table_names(conn))
        if schema.ANOMALY_TABLE in names:
            changes += add_missing_columns(conn, schema.ANOMALY_TABLE, schema.ADDED_ANOMALY_COLUMNS)
        for sql in schema.BASE_DDL:
            conn.execute(sql)
        changes += add_missing_columns(conn, schema.SENSORS_TABLE, schema.ADDED_SENSOR_COLUMNS)
        # Legacy sensors: complete their set of level tables, and list them
        # (type and mode unknown until their DAQ sends them again).
        for sensor in sensors:
            create_sensor_tables(conn, sensor)
            conn.execute(
                f"INSERT OR IGNORE INTO {schema.SENSORS_TABLE} (name, type, mode, first_seen, ord) "
                f"VALUES (?, NULL, NULL, NULL, "
                f"(SELECT COALESCE(MAX(ord), -1) + 1 FROM {schema.SENSORS_TABLE}))", (sensor,))
        conn.execute(f"DELETE FROM {schema.VERSION_TABLE}")
        conn.execute(f"INSERT INTO {schema.VERSION_TABLE} (version) VALUES (?)",
                     (schema.SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return changes


def prepare(conn, path, now=None, log=None):
    """Check and, if needed, back up and migrate an open database.

    Returns ``(old_version, backup_path_or_None)``.  Raises
    :class:`DatabaseBroken` with a message naming the file.
    """
    try:
        set_pragmas(conn)
    except sqlite3.DatabaseError as e:
        raise DatabaseBroken(f"{path}: cannot open as SQLite ({e})") from None
    quick_check(conn, path)
    try:
        version = schema_version(conn)
        if version > schema.SCHEMA_VERSION:
            raise DatabaseBroken(f"{path}: schema version {version} is newer than this "
                                 f"tsrmon understands ({schema.SCHEMA_VERSION})")
        if version == schema.SCHEMA_VERSION:
            return version, None
        copy = None
        if not is_empty(conn):
            copy = backup_copy(conn, backup_path(path, version, now))
            if log is not None:
                log.info("{path}: schema version {old} backed up to {copy}", path=path,
                         old=version, copy=copy)
        changes = migrate(conn)
        if log is not None and copy is not None:
            log.info("{path}: migrated in place from version {old} to {new} "
                     "({n} columns added)", path=path, old=version,
                     new=schema.SCHEMA_VERSION, n=len(changes))
        return version, copy
    except sqlite3.DatabaseError as e:
        raise DatabaseBroken(f"{path}: migration failed ({e}); the file is unchanged") from None


def open_database(path, now=None, log=None):
    """Connect, check and migrate (CLI tools); the caller closes it."""
    conn = connect(path)
    try:
        prepare(conn, path, now, log)
    except BaseException:
        conn.close()
        raise
    return conn
