"""The spool carries issue 17's moment columns and spectra rows, exactly, and
still replays files written before them."""

import math
import sqlite3

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.stats.helpers import config
from tsrmon.analytics.moments import Moments
from tsrmon.store import spool
from tsrmon.store.sqlite import SQLiteStore


def ops_with_analytics():
    x = 40 + np.random.default_rng(5).normal(0, 0.01, 30)
    m = Moments.of(x, 40.0)
    row = ("temp", "hour", 1796025600, 32400, "2026-12-01 10:00:00", 30, float(x.sum()),
           float(np.abs(x).sum()), float(x.min()), float(x.max()), float((x * x).sum()),
           *m.as_columns()[:6])
    blob = np.linspace(0.0, 1.0, 1600, dtype="<f4").tobytes()
    return x, [
        ("sensor", "temp", "TEMP", "REAL", 1796025600.0),
        ("sums", [row]),
        ("spectrum", "vib", "spectrum_minute", 1796025600, 32400, "2026-12-01 10:00:00",
         92, 25600.0, 6.25, 6.25, blob),
        ("features", "vib", 1796025600, 32400, "2026-12-01 10:00:00", 92, 22.07,
         '{"velocity_rms":22.07}'),
    ]


def test_records_round_trip_moments_and_spectra_exactly(tmp_path):
    _x, ops = ops_with_analytics()
    records = spool.records_of("M", ops)
    path = spool.write_records(str(tmp_path), records, 1796025700.0)
    back, bad = spool.read_file(path)
    assert bad == 0
    got = [spool.op_of(r)[1] for r in back]
    assert got[0] == ops[0]
    assert got[1] == ops[1]            # 17 columns, floats exact
    assert got[2] == ops[2] and got[3] == ops[3]


def test_an_old_sums_record_still_reads_as_eleven_columns():
    rec = {"kind": "sums", "machine": "M", "sensor": "vib", "level": "hour", "t0": 1,
           "utc_offset": 0, "time": "t", "count": 30, "sum": 1.5, "sum_abs": 9.0,
           "min": -1.0, "max": 2.0, "sum_sq": 4.25}
    _m, op, _n = spool.op_of(rec)
    assert op == ("sums", [("vib", "hour", 1, 0, "t", 30, 1.5, 9.0, -1.0, 2.0, 4.25)])
    with pytest.raises(spool.SpoolError):
        spool.op_of({"kind": "spectrum", "machine": "M", "sensor": "v", "table": "spectrum_minute",
                     "t0": 1, "utc_offset": 0, "time": "t", "blocks": 1, "rate": 1.0, "f0": 1.0,
                     "df": 1.0, "lines": "not base64!"})


@pytest_twisted.inlineCallbacks
def test_replayed_spool_stores_moments_and_spectra(tmp_path):
    cfg = config(tmp_path, "Asia/Seoul")
    x, ops = ops_with_analytics()
    folder = spool.spool_dir(cfg.database.path)
    spool.write_records(folder, spool.records_of("M", ops), 1796025700.0)
    store = SQLiteStore(cfg, reactor)
    store.startService()
    yield store.replay_done
    yield store.stopService()
    conn = sqlite3.connect(store.path_of("M"))
    try:
        n, mc, s1, s2, s3, s4 = conn.execute(
            'SELECT "count", mcount, s1, s2, s3, s4 FROM "temp_hour_avg"').fetchone()
        (ref,) = conn.execute("SELECT ref FROM tsrmon_sensors WHERE name='temp'").fetchone()
        (blocks, lines) = conn.execute('SELECT blocks, lines FROM "vib_spectrum_minute"').fetchone()
        (v,) = conn.execute('SELECT velocity_rms FROM "vib_features_minute"').fetchone()
    finally:
        conn.close()
    assert n == mc == 30 and ref == 40.0
    m = Moments(mc, ref, s1, s2, s3, s4)
    d = x - x.mean()
    assert m.kurtosis == pytest.approx(np.mean(d ** 4) / np.mean(d ** 2) ** 2, rel=1e-9)
    assert blocks == 92 and lines == ops[2][-1] and math.isclose(v, 22.07)
