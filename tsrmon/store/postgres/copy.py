"""``tsrmon migrate-store postgresql://…``: every SQLite database of
``DATABASE.PATH`` copied into the shared PostgreSQL store.

Refused while a daemon holds the folder's lock, or while spooled rows wait
for their replay (they are in no file yet).  Each machine file (tsrmon's
own and deployed ones, opened read-only: a deployed file is not migrated in
place, its columns are read as they are) is copied in ONE transaction:
sensors, the statistics rows (rows with sums into ``stat_<level>``, rows of the deployed server, without ``t0`` or sums,
into ``stat_legacy`` keyed by their row id), ``anomaly``, ``fault_detect``
(keyed by the source row id), spectra and features; then the side files
(alarm history, notification attempts).  Then every table is verified:
row counts and sums (``count``, ``sum``, ``data``, ``score``) of the source
equal the copy's, or the tool stops with the difference.

Safe to rerun: every row is written with ``ON CONFLICT … DO UPDATE SET
column = excluded.column`` (the source's value, never added), so a second
run leaves the same rows.  Meant before nodes write to the store: a rerun
puts back the source's values of the buckets it copies.
"""

import math
import os
import sqlite3
import urllib.parse

from tsrmon.lock import lock_owner
from tsrmon.store import migrate, schema as sqlite_schema, spool
from tsrmon.store.contract import ToolError
from tsrmon.store.postgres import schema
from tsrmon.store.spectra import spectra_sensors

_STAT = ("t0", "utc_offset", "time", "data", "count", "sum", "sum_abs", "min", "max", "sum_sq",
         "mcount", "s1", "s2", "s3", "s4")


def _ro(path):
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    conn.execute("PRAGMA query_only = 1")
    return conn


def _upsert(table, cols, key):
    sets = ", ".join(f'"{c}" = excluded."{c}"' for c in cols if c not in key)
    return (f"INSERT INTO {table} ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)}) "
            f"VALUES ({', '.join(['%s'] * len(cols))}) ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")


def _close(a, b):
    return (a is None and b is None) or (a is not None and b is not None
                                         and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6))


class StoreCopy:
    """One run of the copy (see the module docstring)."""

    def __init__(self, config, dsn, progress=None, say=print):
        self.config = config
        self.folder = config.database.path
        self.dsn = dsn
        self.progress = progress
        self.say = say
        self.summary = {"machines": 0, "stat_rows": 0, "legacy_rows": 0, "anomaly": 0,
                        "fault_detect": 0, "spectra": 0, "alarms": 0, "notification_attempts": 0}

    # -- plan ----------------------------------------------------------------
    def _units(self):
        units = [("machine", m) for m in sqlite_schema.machine_names(self.folder)]
        for name, kind in ((".alarms.sqlite", "alarms"), (".notifications.sqlite", "attempts")):
            if os.path.isfile(os.path.join(self.folder, name)):
                units.append((kind, os.path.join(self.folder, name)))
        return units

    def run(self):
        import psycopg

        owner = lock_owner(self.folder)
        if owner is not None:
            raise ToolError(f"a tsrmon daemon (PID {owner}) holds the lock of {self.folder}; "
                            f"stop it before copying its databases")
        pending = spool.spool_files(spool.spool_dir(self.folder))
        if pending:
            # Spooled rows are in no database yet: they would be left behind.
            raise ToolError(f"{len(pending)} spool file(s) in {os.path.dirname(pending[0])} are not "
                            f"replayed yet: start the daemon once (it replays them), stop it, then copy")
        units = self._units()
        if not units:
            raise ToolError(f"no SQLite databases in {self.folder}")
        try:
            conn = psycopg.connect(self.dsn, autocommit=False, connect_timeout=10)
        except psycopg.Error as e:
            raise ToolError(f"cannot connect to {self.dsn}: {str(e).strip().splitlines()[0]}") from None
        with conn:
            try:
                schema.prepare(conn, self.config.time.zone, "migrate-store")
            except schema.SchemaError as e:
                raise ToolError(str(e)) from None
            known = set()
            for i, (kind, what) in enumerate(units):
                if self.progress is not None:
                    self.progress(i, len(units))
                if kind == "machine":
                    self._machine(conn, what, known)
                elif kind == "alarms":
                    self._alarms(conn, what)
                else:
                    self._attempts(conn, what)
            if self.progress is not None:
                self.progress(len(units), len(units))
        return self.summary

    # -- machines ------------------------------------------------------------
    def _machine(self, conn, machine, known):
        path = os.path.join(self.folder, f"{machine}.db")
        try:
            src = _ro(path)
            tables = migrate.stat_tables(src)
        except sqlite3.DatabaseError as e:
            raise ToolError(f"{path}: not a usable SQLite database ({e})") from None
        checks = []
        try:
            names = set(migrate.table_names(src))
            sensors = self._sensors(src, names, tables)
            t0s = set()
            for table, sensor, level in tables:
                if level in schema.PARTITIONED and "t0" in migrate.columns(src, table):
                    t0s |= {(level, r[0]) for r in src.execute(
                        f'SELECT DISTINCT t0 FROM "{table}" WHERE t0 IS NOT NULL AND "count" IS NOT NULL')}
            schema.ensure_for(conn, t0s, known)
            with conn.cursor() as cur:
                cur.executemany(_upsert("sensor", ("machine", "name", "type", "mode", "first_seen", "ord", "ref"),
                                        ("machine", "name")), [(machine,) + s for s in sensors])
                for table, sensor, level in tables:
                    checks.append(self._stat_table(src, cur, machine, table, sensor, level))
                for table in (sqlite_schema.ANOMALY_TABLE, sqlite_schema.FAULTS_TABLE):
                    if table in names:
                        checks.append(self._scores(src, cur, machine, table))
                for sensor, kinds in spectra_sensors(src).items():
                    for kind in kinds:
                        checks.append(self._spectra(src, cur, machine, sensor, kind))
                for check in checks:
                    check(cur)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            src.close()
        self.summary["machines"] += 1
        self.say(f"{machine}: {len(tables)} statistics tables, {len(checks)} tables verified")

    def _sensors(self, src, names, tables):
        out = {}
        if sqlite_schema.SENSORS_TABLE in names:
            cols = migrate.columns(src, sqlite_schema.SENSORS_TABLE)
            ref = "ref" if "ref" in cols else "NULL"
            for name, stype, mode, first, ord_, r in src.execute(
                    f"SELECT name, type, mode, first_seen, ord, {ref} FROM {sqlite_schema.SENSORS_TABLE} "
                    f"ORDER BY ord, name"):
                if isinstance(name, str):
                    out[name] = (name, stype, mode or "REAL", first, ord_ if ord_ is not None else len(out), r)
        for _table, sensor, _level in tables:
            if sensor not in out:   # a deployed file: no sensors table, mean of data (REAL)
                out[sensor] = (sensor, None, "REAL", None, len(out), None)
        return list(out.values())

    def _stat_table(self, src, cur, machine, table, sensor, level):
        cols = set(migrate.columns(src, table))
        counted_ok = {"t0", "count"} <= cols
        q = f'"{table}"'
        counted = legacy = []
        if counted_ok:
            have = [c if c in cols else "NULL" for c in _STAT]
            counted = src.execute(f'SELECT {", ".join(have)} FROM {q} '
                                  f'WHERE t0 IS NOT NULL AND "count" IS NOT NULL').fetchall()
            legacy = src.execute(f'SELECT id, time, data FROM {q} WHERE t0 IS NULL OR "count" IS NULL').fetchall()
        else:
            legacy = src.execute(f"SELECT id, time, data FROM {q}").fetchall()
        legacy = [r for r in legacy if isinstance(r[1], str)]
        if counted:
            cur.executemany(_upsert(schema.LEVEL_TABLES[level], ("machine", "sensor") + _STAT,
                                    ("machine", "sensor", "t0")),
                            [(machine, sensor) + tuple(r) for r in counted])
        if legacy:
            cur.executemany(_upsert("stat_legacy", ("machine", "sensor", "level", "id", "time", "data"),
                                    ("machine", "sensor", "level", "id")),
                            [(machine, sensor, level) + tuple(r) for r in legacy])
        self.summary["stat_rows"] += len(counted)
        self.summary["legacy_rows"] += len(legacy)
        want = (len(counted), sum(r[4] for r in counted), math.fsum(r[5] for r in counted),
                len(legacy), math.fsum(r[2] for r in legacy if r[2] is not None))

        def check(cur):
            cur.execute(f"SELECT count(*), COALESCE(sum(count), 0), COALESCE(sum(sum), 0) FROM "
                        f"{schema.LEVEL_TABLES[level]} WHERE machine = %s AND sensor = %s", (machine, sensor))
            a = cur.fetchone()
            cur.execute("SELECT count(*), COALESCE(sum(data), 0) FROM stat_legacy WHERE machine = %s "
                        "AND sensor = %s AND level = %s", (machine, sensor, level))
            b = cur.fetchone()
            got = (a[0], int(a[1]), a[2], b[0], b[1])
            if got[0] != want[0] or got[1] != want[1] or got[3] != want[3] \
                    or not _close(got[2], want[2]) or not _close(got[4], want[4]):
                raise ToolError(f"{machine} {table}: the copy differs from the source "
                                f"(rows, count, sum, legacy rows, legacy data: {got} != {want})")
        return check

    def _scores(self, src, cur, machine, table):
        cols = set(migrate.columns(src, table))
        t = "t" if "t" in cols else "NULL"
        rows = src.execute(f"SELECT id, time, {t}, score, threshold FROM {table}").fetchall()
        rows = [r for r in rows if isinstance(r[1], str)]
        cur.executemany(_upsert(table, ("machine", "source_id", "time", "t", "score", "threshold"),
                                ("machine", "source_id")), [(machine,) + tuple(r) for r in rows])
        self.summary[table] += len(rows)
        want = (len(rows), math.fsum(r[3] for r in rows if r[3] is not None))

        def check(cur):
            cur.execute(f"SELECT count(*), COALESCE(sum(score), 0) FROM {table} WHERE machine = %s "
                        f"AND source_id IS NOT NULL", (machine,))
            got = cur.fetchone()
            if got[0] != want[0] or not _close(got[1], want[1]):
                raise ToolError(f"{machine} {table}: the copy differs from the source ({got} != {want})")
        return check

    def _spectra(self, src, cur, machine, sensor, kind):
        table = f'"{sqlite_schema.spectra_table(sensor, kind)}"'
        if kind == sqlite_schema.FEATURES_KIND:
            cols = ("t0", "utc_offset", "time", "blocks", "velocity_rms", "json")
            target, key = "features", ("machine", "sensor", "t0")
            rows = [(machine, sensor) + tuple(r) for r in src.execute(f"SELECT {', '.join(cols)} FROM {table}")]
            cols = ("machine", "sensor") + cols
        else:
            base = ("t0", "utc_offset", "time", "blocks", "rate", "f0", "df", "lines")
            target, key = "spectrum", ("machine", "sensor", "kind", "t0")
            rows = [(machine, sensor, kind) + tuple(r) for r in src.execute(f"SELECT {', '.join(base)} FROM {table}")]
            cols = ("machine", "sensor", "kind") + base
        if rows:
            cur.executemany(_upsert(target, cols, key), rows)
        self.summary["spectra"] += len(rows)
        n = len(rows)

        def check(cur):
            if target == "features":
                cur.execute("SELECT count(*) FROM features WHERE machine = %s AND sensor = %s", (machine, sensor))
            else:
                cur.execute("SELECT count(*) FROM spectrum WHERE machine = %s AND sensor = %s AND kind = %s",
                            (machine, sensor, kind))
            got = cur.fetchone()[0]
            if got != n:
                raise ToolError(f"{machine} {table}: {got} rows copied, {n} in the source")
        return check

    # -- side files --------------------------------------------------------------
    def _side(self, conn, path, table, cols, key, select, summary_key, verify_where=""):
        src = None
        try:
            src = _ro(path)
            rows = src.execute(select).fetchall()
        except sqlite3.DatabaseError as e:
            raise ToolError(f"{path}: not a usable SQLite database ({e})") from None
        finally:
            if src is not None:
                src.close()
        try:
            with conn.cursor() as cur:
                if rows:
                    cur.executemany(_upsert(table, cols, key), rows)
                cur.execute(f"SELECT count(*) FROM {table}{verify_where}")
                got = cur.fetchone()[0]
            if got < len(rows):
                raise ToolError(f"{path}: {got} rows in {table}, {len(rows)} in the source")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        self.summary[summary_key] += len(rows)
        self.say(f"{os.path.basename(path)}: {len(rows)} rows")

    def _alarms(self, conn, path):
        from tsrmon.alarms.store import COLUMNS

        self._side(conn, path, "alarms", COLUMNS, ("id",), f"SELECT {', '.join(COLUMNS)} FROM alarms",
                   "alarms")

    def _attempts(self, conn, path):
        from tsrmon.notify.records import _COLUMNS

        self._side(conn, path, "notification_attempts", ("source_id",) + _COLUMNS, ("source_id",),
                   f"SELECT id, {', '.join(_COLUMNS)} FROM notification_attempts", "notification_attempts",
                   " WHERE source_id IS NOT NULL")


def migrate_store(config, dsn, progress=None, say=print):
    """Copy and verify (see the module docstring); returns the summary."""
    return StoreCopy(config, dsn, progress, say).run()
