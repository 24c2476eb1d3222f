"""SQLite side of the offline tools: the rebuild's transactions and the backup.

``tools.py`` (backend-neutral) reads the raw CSV, builds the bucket deltas
and decides what to recompute; :class:`SQLiteRebuild` writes them into a
machine's file and :func:`backup` copies the files (SQLite backup API).
Both run only while no daemon holds the instance lock (rebuild) or read
only (backup), so no change feed hears of them (docs/storage.md).
"""

import os
import shutil
import sqlite3

from twisted.logger import Logger

from tsrmon.names import quote_identifier
from tsrmon.store import migrate, schema, spool
from tsrmon.store.contract import ToolError
from tsrmon.store.sqlite_upsert import SensorCatalog, apply_sum_rows

log = Logger()


class SQLiteRebuild:
    """One machine's file opened (and migrated) for ``rebuild_stats``."""

    def __init__(self, folder, machine):
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"{machine}.db")
        try:
            self.conn = migrate.open_database(self.path, log=log)
        except migrate.DatabaseBroken as e:
            raise ToolError(str(e)) from None
        self.catalog = SensorCatalog()
        self._guard(self.catalog.load, self.conn)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except sqlite3.DatabaseError as e:
            raise ToolError(f"{self.path}: {e}") from None

    def reference(self, sensor):
        """The sensor's stored moment reference, or None."""
        return self.catalog.refs.get(sensor)

    def fed_days(self):
        """None: a machine file is fed by this node only (no record kept)."""
        return None

    def replace_days(self, sensor, levels, lo_text, hi_text, rows, default_mode):
        """One transaction: the rows of ``levels`` with ``lo_text <= time <
        hi_text`` (legacy rows too) are replaced by the sum rows ``rows``."""
        self._guard(self._replace_days, sensor, levels, lo_text, hi_text, rows, default_mode)

    def _replace_days(self, sensor, levels, lo_text, hi_text, rows, default_mode):
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if sensor not in self.catalog.modes:
                self.catalog.ensure(conn, sensor, None, default_mode, None)
            self.catalog.mode(conn, sensor)
            for level in levels:
                conn.execute(f"DELETE FROM {quote_identifier(schema.stat_table(sensor, level))} "
                             f"WHERE time >= ? AND time < ?", (lo_text, hi_text))
            apply_sum_rows(conn, self.catalog, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def recompute(self, jobs):
        """One transaction: each job ``(sensor, level, below, t_start, t_end,
        t0, utc_offset, time)`` replaces the counted ``level`` row at ``t0``
        by the merge of the counted ``below`` rows in ``[t_start, t_end)``."""
        self._guard(self._recompute, jobs)

    def _recompute(self, jobs):
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sensor, level, below, t_start, t_end, t0, offset, text in jobs:
                _recompute_parent(conn, sensor, level, below, t_start, t_end, t0, offset, text,
                                  self.catalog.mode(conn, sensor))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self):
        self.conn.close()


def _recompute_parent(conn, sensor, level, below, t_start, t_end, t0, offset, text, mode):
    """Replace the counted ``level`` row starting at ``t0`` by the merge of the
    counted ``below`` rows inside it (legacy rows are left alone)."""
    src = quote_identifier(schema.stat_table(sensor, below))
    dst = quote_identifier(schema.stat_table(sensor, level))
    # Rows below share the sensor's one stored reference (the writer shifts
    # every row to it), so their moment sums add up directly.
    n, s, sa, lo, hi, sq, mc, s1, s2, s3, s4 = conn.execute(
        f'SELECT SUM("count"), SUM("sum"), SUM("sum_abs"), MIN("min"), MAX("max"), SUM("sum_sq"), '
        f'SUM(mcount), SUM(s1), SUM(s2), SUM(s3), SUM(s4) '
        f'FROM {src} WHERE "count" > 0 AND t0 >= ? AND t0 < ? ', (t_start, t_end)).fetchone()
    conn.execute(f"DELETE FROM {dst} WHERE t0 = ?", (t0,))
    if n:
        data = (sa if mode == "ABS" else s) / n
        conn.execute(f'INSERT INTO {dst} (time, data, t0, utc_offset, "count", "sum", "sum_abs", '
                     f'"min", "max", "sum_sq", mcount, s1, s2, s3, s4) '
                     f'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                     (text, data, t0, offset, n, s, sa, lo, hi, sq, mc or 0,
                      s1 or 0.0, s2 or 0.0, s3 or 0.0, s4 or 0.0))


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _is_sqlite(path):
    try:
        with open(path, "rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def database_files(folder):
    """Every SQLite database directly in ``folder``, sorted: the machine
    databases (``<machine>.db``) and the daemon's side files
    (``.alarms.sqlite``, ``.notifications.sqlite``, and any added later),
    found by their SQLite header rather than by name."""
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(("-wal", "-shm", "-journal", ".part")):
            continue
        path = os.path.join(folder, name)
        if os.path.isfile(path) and _is_sqlite(path):
            out.append(name)
    return out


def backup(config, dest):
    """Online, consistent copies of every SQLite database in
    ``DATABASE.PATH`` (machine databases and side files) into folder
    ``dest`` (SQLite backup API: safe while the daemon writes).  Returns the
    list of files written.  A missing source folder or an unusable
    destination is a :class:`ToolError` with a one-line reason."""
    src_folder = os.path.abspath(config.database.path)
    dest = os.path.abspath(dest)
    if dest == src_folder:
        raise ToolError(f"backup destination {dest} is the database folder itself")
    try:
        names = database_files(src_folder)
    except FileNotFoundError:
        raise ToolError(f"no database folder at {src_folder}") from None
    except OSError as e:
        raise ToolError(f"cannot read the database folder {src_folder}: {e.strerror or e}") from None
    try:
        os.makedirs(dest, exist_ok=True)
        if not os.access(dest, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise ToolError(f"backup destination {dest} is unusable: {e.strerror or e}") from None
    written = []
    for name in names:
        src_path = os.path.join(src_folder, name)
        dest_path = os.path.join(dest, name)
        try:
            src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
        except sqlite3.Error as e:
            raise ToolError(f"{src_path}: cannot open for backup ({e})") from None
        try:
            written.append(migrate.backup_copy(src, dest_path))
        except OSError as e:
            raise ToolError(f"backup destination {dest} is unusable: {e.strerror or e}") from None
        except sqlite3.Error as e:
            # The copy is made into dest_path.part: an error opening that is the
            # destination's fault, anything else the source's.
            if not os.access(dest, os.W_OK):
                raise ToolError(f"backup destination {dest} is unusable: {e}") from None
            raise ToolError(f"{src_path}: backup failed ({e})") from None
        finally:
            src.close()
    # Rows spooled at the last stop are part of the store until replayed.
    pending = spool.spool_files(spool.spool_dir(src_folder))
    if pending:
        spool_dest = spool.spool_dir(dest)
        try:
            os.makedirs(spool_dest, exist_ok=True)
            for path in pending:
                written.append(shutil.copy2(path, os.path.join(spool_dest, os.path.basename(path))))
        except OSError as e:
            raise ToolError(f"backup destination {dest} is unusable: {e.strerror or e}") from None
    return written
