"""SQLite dialect of the writes: the additive upsert and the sensor catalog.

One table per sensor and level (``schema.stat_table``), ``ON CONFLICT(t0)
DO UPDATE`` applying ``deltas.MERGE``.  Runs on a machine's writer thread,
inside the caller's transaction.
"""

from tsrmon.names import quote_identifier
from tsrmon.store import migrate, schema, serving
from tsrmon.store.deltas import MERGE, MOMENT_COLUMNS, SUM_COLUMNS, mean_column, moment_values, sum_values

_SQL_MERGE = {
    "add": '"{c}" = "{c}" + excluded."{c}"',
    "add0": '"{c}" = COALESCE("{c}", {zero}) + excluded."{c}"',
    "min": '"{c}" = MIN("{c}", excluded."{c}")',
    "max": '"{c}" = MAX("{c}", excluded."{c}")',
}


def _column(c):
    return c if c in ("time", "data", "t0", "utc_offset") else f'"{c}"'


def upsert_sql(sensor, level, mode, moments=False):
    """Additive upsert of one sum row into a sensor's level table (with the
    moment columns too when ``moments``; NULL in old rows counts as 0)."""
    q = quote_identifier(schema.stat_table(sensor, level))
    cols = SUM_COLUMNS + (MOMENT_COLUMNS if moments else ())
    num = f'"{mean_column(mode)}"'
    updates = [_SQL_MERGE[MERGE[c]].format(c=c, zero="0" if c == "mcount" else "0.0")
               for c in cols if c in MERGE]
    updates.append(f'data = ({num} + excluded.{num}) / ("count" + excluded."count")')
    return (f"INSERT INTO {q} ({', '.join(map(_column, cols))}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT(t0) DO UPDATE SET {', '.join(updates)}")


class SensorCatalog:
    """Which sensors have tables in one database, their modes and moment
    references (writer thread).

    ``modes[sensor]`` is None for a sensor known only from deployed tables;
    ``refs[sensor]`` is None until its first moments are written.
    """

    def __init__(self):
        self.modes = {}
        self.refs = {}
        self.spectra = set()   # sensors whose spectra tables exist

    def load(self, conn):
        self.modes = {s["name"]: s["mode"] for s in serving.sensors(conn)}
        # A file marked version 2 by another tool without the column.
        migrate.add_missing_columns(conn, schema.SENSORS_TABLE, schema.ADDED_SENSOR_COLUMNS)
        self.refs = dict(conn.execute(f"SELECT name, ref FROM {schema.SENSORS_TABLE}"))
        self.spectra = set()

    def reference(self, conn, sensor, ref):
        """The sensor's stored reference; ``ref`` becomes it when none is stored."""
        got = self.refs.get(sensor)
        if got is None:
            conn.execute(f"UPDATE {schema.SENSORS_TABLE} SET ref=? WHERE name=? AND ref IS NULL",
                         (ref, sensor))
            got = conn.execute(f"SELECT ref FROM {schema.SENSORS_TABLE} WHERE name=?",
                               (sensor,)).fetchone()[0]
            self.refs[sensor] = got
        return got

    def ensure_spectra(self, conn, sensor):
        if sensor not in self.spectra:
            for sql in schema.spectra_ddl(sensor):
                conn.execute(sql)
            self.spectra.add(sensor)

    def ensure(self, conn, sensor, stype, mode, t):
        if sensor not in self.modes:
            migrate.create_sensor_tables(conn, sensor)
            conn.execute(
                f"INSERT OR IGNORE INTO {schema.SENSORS_TABLE} (name, type, mode, first_seen, ord) "
                f"VALUES (?, ?, ?, ?, (SELECT COALESCE(MAX(ord), -1) + 1 FROM {schema.SENSORS_TABLE}))",
                (sensor, stype, mode, t))
        elif self.modes[sensor] != mode:
            # The type's STAT mode changed: ``data`` of counted rows follows.
            num = f'"{mean_column(mode)}"'
            for level in schema.LEVELS:
                table = quote_identifier(schema.stat_table(sensor, level))
                conn.execute(f'UPDATE {table} SET data = {num} / "count" WHERE "count" > 0')
        conn.execute(f"UPDATE {schema.SENSORS_TABLE} SET type=COALESCE(?, type), mode=?, "
                     f"first_seen=COALESCE(first_seen, ?) WHERE name=?", (stype, mode, t, sensor))
        self.modes[sensor] = mode

    def mode(self, conn, sensor):
        """The mode upserts use (a sensor never announced gets REAL)."""
        mode = self.modes.get(sensor)
        if mode is None:
            self.ensure(conn, sensor, None, "REAL", None)
            mode = "REAL"
        return mode


def apply_sum_rows(conn, catalog, rows):
    """Upsert sum rows, grouped per table (inside the caller's transaction).
    Rows with moments (17 columns, mcount > 0) also add to the moment
    columns, about the sensor's one stored reference."""
    groups = {}
    for r in rows:
        if r[5] <= 0:
            continue
        groups.setdefault((r[0], r[1], len(r) >= 17 and r[11] > 0), []).append(r)
    for (sensor, level, moments), group in groups.items():
        mode = catalog.mode(conn, sensor)
        if moments:
            refs = {sensor: catalog.reference(conn, sensor, group[0][12])}
            conn.executemany(upsert_sql(sensor, level, mode, True),
                             moment_values(group, mode, refs))
        else:
            conn.executemany(upsert_sql(sensor, level, mode), sum_values(group, mode))


def apply_fault(conn, text, t, score, threshold):
    """One FaultDetect: always a fault_detect row, an anomaly row above threshold."""
    conn.execute(f"INSERT INTO {schema.FAULTS_TABLE} (time, t, score, threshold) "
                 f"VALUES (?, ?, ?, ?)", (text, t, score, threshold))
    if score > threshold:
        conn.execute(f"INSERT INTO {schema.ANOMALY_TABLE} (time, threshold, score, t) "
                     f"VALUES (?, ?, ?, ?)", (text, threshold, score, t))


def prune_minutes(conn, catalog, before):
    for sensor in list(catalog.modes):
        table = quote_identifier(schema.stat_table(sensor, "minute"))
        conn.execute(f"DELETE FROM {table} WHERE t0 < ?", (before,))
