"""A database built from the deployed DDL (docs/legacy.md §2.5), with
duplicate and NULL rows, is backed up, migrated in place keeping every row,
and served by the rules of docs/storage.md."""

import os
import sqlite3

import pytest
import pytest_twisted

from tests.stats.helpers import epoch
from tests.store.test_sqlite_store import make_rig, stop
from tsrmon.store import migrate, schema, serving

BERLIN = "Europe/Berlin"
SENSORS = ("shot_blast_vib1", "shot_blast_vib2")


def deployed_database(path):
    """The deployed layout, filled the way the deployed server fills it."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE anomaly(id INTEGER PRIMARY KEY AUTOINCREMENT, time TIMESTAMP, "
                 "threshold REAL, score REAL)")
    legacy = {}
    for k, sensor in enumerate(SENSORS):
        for level in ("hour", "day", "month", "year"):
            conn.execute(f"CREATE TABLE {sensor}_{level}_avg (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                         f"time TIMESTAMP, data REAL)")
        base = 0.1 * (k + 1)
        rows = {
            "hour": [(f"2026-11-26 {h:02d}:00:00", base + h / 100) for h in range(10)]
            # a reconnect wrote hour 05 twice; the fall-back 02:00 twice
            + [("2026-11-26 05:00:00", base + 0.5), ("2026-10-25 02:00:00", base),
               ("2026-10-25 02:00:00", base + 0.2)],
            "day": [(f"2026-11-{d:02d} 00:00:00", base + d / 1000) for d in range(1, 26) if d != 20]
            + [("2026-11-20 00:00:00", None),          # empty window: NULL
               ("2026-11-10 00:00:00", base + 0.3)],   # duplicate day
            "month": [(f"2026-{m:02d}-01 00:00:00", base + m / 50) for m in range(1, 11)]
            + [("2026-02-01 00:00:00", None)],
            "year": [("2025-01-01 00:00:00", base), ("2025-01-01 00:00:00", None)],
        }
        for level, items in rows.items():
            conn.executemany(f"INSERT INTO {sensor}_{level}_avg (time, data) VALUES (?, ?)", items)
        legacy[sensor] = rows
    conn.executemany("INSERT INTO anomaly (time, threshold, score) VALUES (?, ?, ?)",
                     [("2026-11-01 08:00:00.123456", 5.0, 7.0), ("2026-11-02 09:00:00", 5.0, 9.0)])
    conn.commit()
    conn.close()
    return legacy


def dump(path):
    conn = sqlite3.connect(path)
    try:
        out = {}
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                    "AND name NOT LIKE 'sqlite_%'"):
            if not (name == "anomaly" or name.endswith(("_hour_avg", "_day_avg", "_month_avg", "_year_avg"))):
                continue
            out[name] = conn.execute(f'SELECT id, time, data FROM "{name}" ORDER BY id').fetchall() \
                if name != "anomaly" else \
                conn.execute("SELECT id, time, threshold, score FROM anomaly ORDER BY id").fetchall()
        return out
    finally:
        conn.close()


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


@pytest_twisted.inlineCallbacks
def test_deployed_database_backed_up_migrated_and_served(tmp_path):
    switch = epoch(BERLIN, "2026-11-26 10:35:00")
    cfg, store, rig = make_rig(tmp_path, switch)
    os.makedirs(cfg.database.path, exist_ok=True)
    path = os.path.join(cfg.database.path, "ShotBlast.db")
    legacy = deployed_database(path)
    before = dump(path)

    # tsrmon takes over: the first write opens, backs up and migrates.
    rig.run(60, sensors=[(s, "VIB") for s in SENSORS])
    yield stop(rig, store)

    backups = os.listdir(os.path.join(cfg.database.path, "backups"))
    assert len(backups) == 1 and backups[0].startswith("ShotBlast.") and backups[0].endswith(".v0.db")
    assert dump(os.path.join(cfg.database.path, "backups", backups[0])) == before
    # "every file containing .db" in db/ still lists only the machine
    assert [n for n in os.listdir(cfg.database.path) if ".db" in n
            and not n.endswith(("-wal", "-shm"))] == ["ShotBlast.db"]

    after = dump(path)
    for table, rows in before.items():
        assert after[table][:len(rows)] == rows, table  # every deployed row kept as it was
    conn = sqlite3.connect(path)
    assert migrate.schema_version(conn) == schema.SCHEMA_VERSION
    assert conn.execute("SELECT COUNT(*) FROM anomaly WHERE t IS NULL").fetchone()[0] == 2
    cols = migrate.columns(conn, "shot_blast_vib1_hour_avg")
    assert cols[:3] == ["id", "time", "data"] and "t0" in cols and "sum_sq" in cols
    # table order (what /stat/<level> walks) is still the deployed order
    assert serving.stat_tables(conn, "hour") == [f"{s}_hour_avg" for s in SENSORS]

    for sensor in SENSORS:
        rows = legacy[sensor]
        ours = [v for (_t, s, _ty, vals) in rig.fed if s == sensor for v in vals]
        our_hour = sum(abs(v) for v in ours) / len(ours)

        def served(level, start, end):
            return {r["time"]: r["data"] for r in serving.served_rows(conn, sensor, level, start, end)}

        # Rule 1 and 2: NULLs never served, one row per time (legacy: plain mean).
        hours = served("hour", "2026-10-25", "2026-10-25")
        assert hours == {"2026-10-25 02:00:00": pytest.approx(mean(d for t, d in rows["hour"]
                                                                   if t == "2026-10-25 02:00:00"))}
        days = served("day", "2026-11-01", "2026-11-25")
        assert "2026-11-20 00:00:00" not in days and len(days) == 24
        assert days["2026-11-10 00:00:00"] == pytest.approx(
            mean(d for t, d in rows["day"] if t == "2026-11-10 00:00:00"))
        assert served("year", "2025-01-01", "2025-12-31") == {"2025-01-01 00:00:00": rows["year"][0][1]}
        assert "2026-02-01 00:00:00" in served("month", "2026-02-01", "2026-02-28")

        # Counted rows: exact.
        hours = served("hour", "2026-11-26", "2026-11-26")
        assert hours["2026-11-26 10:00:00"] == pytest.approx(our_hour, rel=1e-12)
        hour_values = [mean(d for t, d in rows["hour"] if t == f"2026-11-26 {h:02d}:00:00")
                       for h in range(10)] + [our_hour]
        assert list(hours.values()) == pytest.approx(hour_values)

        # Rule 3: switch-over buckets are means of the values below.
        day26 = mean(hour_values)
        assert served("day", "2026-11-26", "2026-11-26") == {"2026-11-26 00:00:00": pytest.approx(day26)}
        day_values = [v for t, v in sorted(days.items())] + [day26]
        november = mean(day_values)
        assert served("month", "2026-11-01", "2026-11-30") == {"2026-11-01 00:00:00": pytest.approx(november)}
        month_values = [mean(d for t, d in rows["month"] if t == f"2026-{m:02d}-01 00:00:00" and d is not None)
                        for m in range(1, 11)] + [november]
        assert served("year", "2026-01-01", "2026-12-31") == {
            "2026-01-01 00:00:00": pytest.approx(mean(month_values))}
    conn.close()


def test_migration_is_idempotent_and_new_files_need_no_backup(tmp_path):
    path = str(tmp_path / "M.db")
    deployed_database(path)
    conn = migrate.open_database(path)
    conn.close()
    conn = migrate.open_database(path)  # already current: nothing more
    conn.close()
    assert len(os.listdir(tmp_path / "backups")) == 1
    fresh = str(tmp_path / "New.db")
    conn = migrate.open_database(fresh)
    assert migrate.schema_version(conn) == schema.SCHEMA_VERSION
    conn.close()
    assert len(os.listdir(tmp_path / "backups")) == 1


def test_newer_schema_is_refused_with_the_file_name(tmp_path):
    path = str(tmp_path / "M.db")
    conn = migrate.open_database(path)
    conn.execute(f"UPDATE {schema.VERSION_TABLE} SET version = 99")
    conn.close()
    with pytest.raises(migrate.DatabaseBroken, match="M.db: schema version 99"):
        migrate.open_database(path)


def test_integrity_failure_names_the_file(tmp_path):
    path = str(tmp_path / "Junk.db")
    with open(path, "wb") as f:
        f.write(b"SQLite format 3\x00" + b"\xff" * 4000)
    with pytest.raises(migrate.DatabaseBroken, match="Junk.db"):
        migrate.open_database(path)


def test_odd_legacy_time_text_is_served_without_error(tmp_path):
    path = str(tmp_path / "M.db")
    deployed_database(path)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO shot_blast_vib1_day_avg (time, data) VALUES ('yesterday', 2.0)")
    conn.commit()
    conn.close()
    conn = migrate.open_database(path)
    rows = serving.served_rows(conn, "shot_blast_vib1", "day")
    assert rows[-1] == {"name": "shot_blast_vib1_day_avg", "time": "yesterday", "data": 2.0,
                        "count": None, "min": None, "max": None, "rms": None, "std": None}
    conn.close()
