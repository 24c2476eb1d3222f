"""rebuild-stats rebuilds the higher moments too: every rebuilt level answers
the skewness and kurtosis of its samples, about the sensor's one stored
reference, as the statistics room would have stored them."""

import datetime
import os
import sqlite3

import numpy as np
import pytest

from tests.store.test_tools import BERLIN, write_raw
from tests.stats.helpers import config, epoch
from tsrmon.analytics.moments import Moments
from tsrmon.store import migrate, schema, tools
from tsrmon.store.sqlite_upsert import SensorCatalog


def moments_of(path, sensor, level):
    conn = sqlite3.connect(path)
    try:
        ref = conn.execute(f"SELECT ref FROM {schema.SENSORS_TABLE} WHERE name=?", (sensor,)).fetchone()[0]
        rows = conn.execute(f'SELECT mcount, s1, s2, s3, s4, "min", "max" FROM "{sensor}_{level}_avg" '
                            f'WHERE "count" > 0').fetchall()
    finally:
        conn.close()
    total = Moments()
    for n, s1, s2, s3, s4, lo, hi in rows:
        total.merge(Moments(n, ref, s1, s2, s3, s4, lo, hi))
    return ref, total


def test_rebuilt_rows_carry_moments_matching_numpy(tmp_path):
    cfg = config(tmp_path, BERLIN)
    rng = np.random.default_rng(11)
    # A temperature near 40 with a tiny variance: the case a naive Σx^k fails.
    day1, day2 = datetime.date(2026, 11, 2), datetime.date(2026, 11, 3)
    samples = {}
    for day in (day1, day2):
        start = epoch(BERLIN, f"{day.isoformat()} 00:00:00")
        samples[day] = [(start + 600 * i, (40.0 + 0.01 * rng.standard_t(5, size=7)).tolist())
                        for i in range(144)]
        write_raw(cfg, "M", "temp", day, samples[day])
    os.makedirs(cfg.database.path)
    path = os.path.join(cfg.database.path, "M.db")
    conn = migrate.open_database(path)
    SensorCatalog().ensure(conn, "temp", "TEMP", "REAL", None)
    conn.close()
    tools.rebuild_stats(cfg, "M", day1, day2)
    x = np.array([v for day in (day1, day2) for _, vs in samples[day] for v in vs])
    d = x - x.mean()
    kurt = float(np.mean(d ** 4) / np.mean(d ** 2) ** 2)
    skew = float(np.mean(d ** 3) / np.mean(d ** 2) ** 1.5)
    for level in ("hour", "day", "month", "year"):
        ref, m = moments_of(path, "temp", level)
        assert ref == pytest.approx(40.0, abs=0.01)
        assert m.count == x.size, level
        assert m.kurtosis == pytest.approx(kurt, rel=1e-9), level
        assert m.skewness == pytest.approx(skew, rel=1e-7, abs=1e-9), level
    # A second rebuild of one day replaces, never adds.
    tools.rebuild_stats(cfg, "M", day2, day2)
    _, again = moments_of(path, "temp", "year")
    assert again.count == x.size and again.kurtosis == pytest.approx(kurt, rel=1e-9)
