"""Build machine databases for the REST tests and benchmarks.

``fill_from_messages`` reduces decoded DAQ messages (``expected.json``'s
``session.bin``) into the schema's tables the way the store writes them
(one counted row per bucket, ``data`` from the partial sums), so the tests
do not depend on the writer being present.  ``make_deployed_db`` writes the
deployed server's exact layout (docs/legacy.md §2.5), NULL rows and duplicates included.
"""

import sqlite3
from datetime import datetime
from zoneinfo import ZoneInfo

from tsrmon.names import quote_identifier
from tsrmon.stats.sums import PartialSums
from tsrmon.store import schema

MODES = {"VIB": "ABS", "TEMP": "REAL"}


def bucket_start(dt, level):
    if level == "minute":
        return dt.replace(second=0, microsecond=0)
    if level == "hour":
        return dt.replace(minute=0, second=0, microsecond=0)
    if level == "day":
        return dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if level == "month":
        return dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return dt.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)


def create_machine_db(path, sensors):
    """A new database in the current layout; ``sensors`` = [(name, type)]."""
    conn = sqlite3.connect(path)
    for ddl in schema.BASE_DDL:
        conn.execute(ddl)
    conn.execute(f"INSERT INTO {schema.VERSION_TABLE} VALUES (?)", (schema.SCHEMA_VERSION,))
    for order, (name, stype) in enumerate(sensors):
        conn.execute(f"INSERT INTO {schema.SENSORS_TABLE} VALUES (?, ?, ?, ?, ?)",
                     (name, stype, MODES.get(stype, "REAL"), 0.0, order))
        for level in schema.LEVELS:
            for ddl in schema.create_stat_table_sql(name, level):
                conn.execute(ddl)
    conn.commit()
    return conn


def insert_bucket(conn, sensor, level, start_dt, sums, mode):
    table = quote_identifier(schema.stat_table(sensor, level))
    conn.execute(
        f"INSERT INTO {table} (time, data, t0, utc_offset, count, sum, sum_abs, min, max, sum_sq) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (start_dt.strftime("%Y-%m-%d %H:%M:%S"), sums.value(mode), int(start_dt.timestamp()),
         int(start_dt.utcoffset().total_seconds()), sums.count, sums.total, sums.total_abs,
         sums.minimum, sums.maximum, sums.total_sq))


def fill_from_messages(path, messages, t0, zone, fault_times=None):
    """Reduce ``messages`` (one frame per second from epoch ``t0``) into ``path``.

    Returns {"buckets": {(sensor, level, time_text): PartialSums},
    "faults": [(time_text, t, score, threshold)]}.
    """
    tz = ZoneInfo(zone)
    sensors = {}
    buckets = {}
    faults = []
    t = t0
    for event, data in messages:
        if event == "DataUpdate":
            dt = datetime.fromtimestamp(t, tz)
            for name, item in data.items():
                sensors.setdefault(name, item["type"])
                sums = PartialSums.of(item["data"])
                for level in schema.LEVELS:
                    key = (name, level, bucket_start(dt, level))
                    buckets.setdefault(key, PartialSums()).merge(sums)
            t += 1
        elif event == "FaultDetect":
            ft = t - 0.5
            dt = datetime.fromtimestamp(ft, tz)
            faults.append((dt.strftime("%Y-%m-%d %H:%M:%S.%f"), ft, float(data["score"]),
                           float(data["threshold"])))
    conn = create_machine_db(path, list(sensors.items()))
    for (name, level, start), sums in buckets.items():
        insert_bucket(conn, name, level, start, sums, MODES.get(sensors[name], "REAL"))
    for text, ft, score, threshold in faults:
        conn.execute(f"INSERT INTO {schema.FAULTS_TABLE} (time, t, score, threshold) VALUES (?, ?, ?, ?)",
                     (text, ft, score, threshold))
        if score > threshold:
            conn.execute(f"INSERT INTO {schema.ANOMALY_TABLE} (time, threshold, score, t) VALUES (?, ?, ?, ?)",
                         (text, threshold, score, ft))
    conn.commit()
    conn.close()
    return {"sensors": sensors,
            "buckets": {(n, lv, s.strftime("%Y-%m-%d %H:%M:%S")): v for (n, lv, s), v in buckets.items()},
            "faults": faults}


DEPLOYED_STAT_DDL = ("CREATE TABLE {t} (id INTEGER PRIMARY KEY AUTOINCREMENT, time TIMESTAMP, "
                     "data REAL)")
DEPLOYED_ANOMALY_DDL = ("CREATE TABLE anomaly (id INTEGER PRIMARY KEY AUTOINCREMENT, time TIMESTAMP, "
                        "threshold REAL, score REAL)")


def make_deployed_db(path, sensors, rows, anomalies=()):
    """The deployed layout (docs/legacy.md §2.5): ``rows`` = [(sensor, level, time_text, data or None)]
    inserted in order (so later duplicates have higher ids); ``anomalies`` =
    [(time_text, threshold, score)]."""
    conn = sqlite3.connect(path)
    conn.execute(DEPLOYED_ANOMALY_DDL)
    for sensor in sensors:
        for level in schema.LEGACY_LEVELS:
            conn.execute(DEPLOYED_STAT_DDL.format(t=schema.stat_table(sensor, level)))
    for sensor, level, text, data in rows:
        conn.execute(f"INSERT INTO {schema.stat_table(sensor, level)} (time, data) VALUES (?, ?)",
                     (text, data))
    for text, threshold, score in anomalies:
        conn.execute("INSERT INTO anomaly (time, threshold, score) VALUES (?, ?, ?)",
                     (text, threshold, score))
    conn.commit()
    conn.close()


def make_year_db(path, sensors=8, start="2025-11-27", hours=8760, zone="Asia/Seoul", seed=1):
    """A year of hourly rows for ``sensors`` VIB sensors (the benchmark's database)."""
    import random
    rnd = random.Random(seed)
    tz = ZoneInfo(zone)
    names = [f"vib{i + 1}" for i in range(sensors)]
    conn = create_machine_db(path, [(n, "VIB") for n in names])
    first = datetime.fromisoformat(start).replace(tzinfo=tz).timestamp()
    for n in names:
        table = quote_identifier(schema.stat_table(n, "hour"))
        rows = []
        for h in range(hours):
            t = int(first) + 3600 * h
            dt = datetime.fromtimestamp(t, tz)
            count = 3600 * 30
            mean_abs = rnd.uniform(0.1, 1.0)
            rows.append((dt.strftime("%Y-%m-%d %H:00:00"), mean_abs, t,
                         int(dt.utcoffset().total_seconds()), count, mean_abs * count * 0.1,
                         mean_abs * count, -3.0 * mean_abs, 3.0 * mean_abs,
                         (mean_abs * 1.25) ** 2 * count))
        conn.executemany(
            f"INSERT INTO {table} (time, data, t0, utc_offset, count, sum, sum_abs, min, max, sum_sq) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return names
