"""The SQLite layout of one machine's database, ``DATABASE.PATH/<machine>.db``.

It is the deployed layout plus columns, so the deployed app and any tool
that read the old files keep working:

* ``anomaly(id, time, threshold, score)`` as deployed (a row per FaultDetect
  with score > threshold), plus ``t`` (epoch seconds).
* ``"<sensor>_hour_avg"``, ``_day_avg``, ``_month_avg``, ``_year_avg`` as
  deployed (``id, time, data``), plus the partial sums ``count, sum, sum_abs,
  min, max, sum_sq``, the bucket start ``t0`` (epoch seconds, unique) and its
  ``utc_offset`` (seconds east of UTC), which makes the repeated local hour
  of a DST fall-back unambiguous.  ``data`` is the sample-weighted mean of
  the sensor's STAT mode, recomputed from the sums at every upsert.
* ``"<sensor>_minute_avg"``: the same, per minute (recent history, and the
  live cache after a restart).
* ``fault_detect``: every FaultDetect, over threshold or not.
* ``tsrmon_sensors``: sensor name, type, mode, first-seen order and (version
  2) ``ref``, the fixed reference c of the sensor's moment sums.
* ``tsrmon_schema``: the schema version (migrations are in ``migrate.py``).

Version 2 (issue 17) adds to every ``<sensor>_<level>_avg`` table the moment
columns ``mcount, s1, s2, s3, s4`` (power sums of x − ref of ``mcount``
samples, all nullable: rows written before stay as they are), ``ref`` to
``tsrmon_sensors``, and per spectrum sensor (rate ≥ 1 kHz, created when its
first spectrum is written) ``"<sensor>_spectrum_minute"``,
``"<sensor>_spectrum_hour"``, ``"<sensor>_envelope_minute"`` and
``"<sensor>_features_minute"`` (see ``spectra_ddl``).

``time`` is local naive text as the deployed server wrote it:
``YYYY-MM-DD HH:00:00`` for an hour, ``YYYY-MM-DD 00:00:00`` for a day,
``YYYY-MM-01 00:00:00`` for a month, ``YYYY-01-01 00:00:00`` for a year and
``YYYY-MM-DD HH:MM:00`` for a minute.  Rows written by the deployed server
have NULL ``t0`` and ``count``: readers serve them as described in
``docs/storage.md``.

Every identifier goes through :func:`tsrmon.names.quote_identifier`.
"""

import os

from tsrmon.names import is_valid_name, quote_identifier

SCHEMA_VERSION = 2

LEVELS = ("minute", "hour", "day", "month", "year")
# The levels the deployed server had and the legacy REST endpoints serve.
LEGACY_LEVELS = ("hour", "day", "month", "year")

SUM_COLUMNS = ("count", "sum", "sum_abs", "min", "max", "sum_sq")
# Version 2: power sums of (x - ref) up to the fourth, ``mcount`` samples.
MOMENT_COLUMNS = ("mcount", "s1", "s2", "s3", "s4")
# Columns added to a deployed ``<sensor>_<level>_avg`` table, with types.
ADDED_STAT_COLUMNS = (
    ("t0", "INTEGER"),
    ("utc_offset", "INTEGER"),
    ("count", "INTEGER"),
    ("sum", "REAL"),
    ("sum_abs", "REAL"),
    ("min", "REAL"),
    ("max", "REAL"),
    ("sum_sq", "REAL"),
    ("mcount", "INTEGER"),
    ("s1", "REAL"),
    ("s2", "REAL"),
    ("s3", "REAL"),
    ("s4", "REAL"),
)
# Added by ALTER even to a new database (BASE_DDL keeps the version-1 shape).
ADDED_SENSOR_COLUMNS = (("ref", "REAL"),)
ADDED_ANOMALY_COLUMNS = (("t", "REAL"),)

SENSORS_TABLE = "tsrmon_sensors"
VERSION_TABLE = "tsrmon_schema"
FAULTS_TABLE = "fault_detect"
ANOMALY_TABLE = "anomaly"


def machine_names(folder):
    """Machines with a database file ``<folder>/<machine>.db``, sorted.

    Only valid names, only regular files: never ``-journal``/``-wal``/``-shm``
    files, the daemon's own dot-files or anything else in the folder.  An
    absent or unreadable folder has no machines.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    out = []
    for e in entries:
        if not e.name.endswith(".db"):
            continue
        stem = e.name[:-3]
        try:
            if is_valid_name(stem) and e.is_file():
                out.append(stem)
        except OSError:
            continue
    out.sort()
    return out


def table_suffix(level):
    return f"_{level}_avg"


def stat_table(sensor, level):
    """The (unquoted) table name of a sensor's level, as deployed."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}")
    return f"{sensor}{table_suffix(level)}"


def create_stat_table_sql(sensor, level):
    """DDL for a new statistics table (deployed columns first)."""
    table = stat_table(sensor, level)
    q = quote_identifier(table)
    added = ", ".join(f"{quote_identifier(c)} {t}" for c, t in ADDED_STAT_COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS {q} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        f"time TIMESTAMP, data REAL, {added})",
        unique_t0_index_sql(table),
        time_index_sql(table),
    ]


def time_index_sql(table):
    # Readers select by local date (``time`` text, as the deployed API does).
    return (f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '__time')} "
            f"ON {quote_identifier(table)} (time)")


def unique_t0_index_sql(table):
    # NULLs are distinct in a SQLite unique index, so deployed rows (t0 NULL)
    # never conflict with each other or with ours.
    return (f"CREATE UNIQUE INDEX IF NOT EXISTS {quote_identifier(table + '__t0')} "
            f"ON {quote_identifier(table)} (t0)")


BASE_DDL = [
    f"CREATE TABLE IF NOT EXISTS {ANOMALY_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    f"time TIMESTAMP, threshold REAL, score REAL, t REAL)",
    f"CREATE TABLE IF NOT EXISTS {FAULTS_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    f"time TIMESTAMP, t REAL, score REAL, threshold REAL)",
    f"CREATE INDEX IF NOT EXISTS {FAULTS_TABLE}__t ON {FAULTS_TABLE} (t)",
    f"CREATE TABLE IF NOT EXISTS {SENSORS_TABLE} (name TEXT PRIMARY KEY, type TEXT, "
    f"mode TEXT, first_seen REAL, ord INTEGER)",
    f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER NOT NULL)",
]


# -- spectra (version 2) -------------------------------------------------------
SPECTRUM_KINDS = ("spectrum_minute", "spectrum_hour", "envelope_minute")
FEATURES_KIND = "features_minute"


def spectra_table(sensor, kind):
    if kind not in SPECTRUM_KINDS + (FEATURES_KIND,):
        raise ValueError(f"unknown spectra table kind {kind!r}")
    return f"{sensor}_{kind}"


def spectra_ddl(sensor):
    """DDL of a sensor's spectra tables (idempotent).  ``lines`` is float32
    little-endian RMS per line (``analytics.spectrum.pack``), line k at
    ``f0 + k·df``; ``blocks`` weighs averages."""
    out = []
    for kind in SPECTRUM_KINDS:
        q = quote_identifier(spectra_table(sensor, kind))
        out.append(f"CREATE TABLE IF NOT EXISTS {q} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                   f"t0 INTEGER NOT NULL UNIQUE, utc_offset INTEGER, time TIMESTAMP, "
                   f"blocks INTEGER, rate REAL, f0 REAL, df REAL, lines BLOB)")
    q = quote_identifier(spectra_table(sensor, FEATURES_KIND))
    out.append(f"CREATE TABLE IF NOT EXISTS {q} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
               f"t0 INTEGER NOT NULL UNIQUE, utc_offset INTEGER, time TIMESTAMP, "
               f"blocks INTEGER, velocity_rms REAL, json TEXT)")
    return out


def _fold(name):
    return name.casefold()


def stored_sensor_names(folder, machine):
    """The sensor names ``<folder>/<machine>.db`` records (read-only; [] for a
    deployed file without the sensors table, or one that cannot be read)."""
    import sqlite3
    import urllib.parse

    path = os.path.join(folder, f"{machine}.db")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=1.0)
    except sqlite3.Error:
        return []
    try:
        return [r[0] for r in conn.execute(f"SELECT name FROM {SENSORS_TABLE}") if isinstance(r[0], str)]
    except sqlite3.Error:
        return []  # no sensors table (deployed file, tables unique already) or unreadable
    finally:
        conn.close()


def find_case_collisions(folder):
    """Names in ``folder`` (``DATABASE.PATH``) that differ only in case.

    Reported, never merged or renamed (start-up logs them, ``tsrmon
    check-config`` prints them).  A list of dicts:

    * ``{"kind": "machine", "names": ["Press", "press"]}``: machine database
      files that are one file on a case-insensitive file system;
    * ``{"kind": "sensor", "machine": "M", "names": ["Vib", "vib"],
      "shared_tables": True}``: sensors of one database.  ``shared_tables``
      is True when SQLite (which ignores ASCII case in table names) keeps
      their statistics in the same ``<sensor>_<level>_avg`` tables, i.e.
      their rows were merged before tsrmon refused such names.

    Databases are opened read-only; one that cannot be read is skipped.
    """
    out = []
    machines = machine_names(folder)
    groups = {}
    for m in machines:
        groups.setdefault(_fold(m), []).append(m)
    out.extend({"kind": "machine", "names": sorted(g)} for g in groups.values() if len(g) > 1)
    for m in machines:
        names = stored_sensor_names(folder, m)
        by_fold = {}
        for n in names:
            if isinstance(n, str):
                by_fold.setdefault(_fold(n), []).append(n)
        for g in by_fold.values():
            if len(g) > 1:
                # SQLite folds ASCII letters only in identifiers.
                shared = len({_ascii_lower(n) for n in g}) < len(g)
                out.append({"kind": "sensor", "machine": m, "names": sorted(g),
                            "shared_tables": shared})
    return out


def _ascii_lower(name):
    return "".join(c.lower() if c.isascii() else c for c in name)


def describe_case_collision(c):
    """One line for a :func:`find_case_collisions` entry."""
    names = ", ".join(repr(n) for n in c["names"])
    if c["kind"] == "machine":
        return (f"machine databases {names} differ only in case (one file on a "
                f"case-insensitive file system); reported only, rename one by hand")
    merged = (" and share their statistics tables (SQLite ignores case there), so their rows "
              "are mixed" if c["shared_tables"] else "")
    return (f"machine {c['machine']!r}: sensors {names} differ only in case{merged}; "
            f"reported only, see docs/storage.md")


def case_collision_lines(folder):
    """:func:`describe_case_collision` lines for every collision in ``folder``."""
    return [describe_case_collision(c) for c in find_case_collisions(folder)]
