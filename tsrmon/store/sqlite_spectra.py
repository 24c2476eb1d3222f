"""Spectra rows in a machine database: the writes (writer thread, SQLite).

Store operations queued by ``tsrmon/spectra/service.py`` through
:meth:`SQLiteStore.upsert_spectrum` and friends, applied in the machine's
flush transaction by :func:`apply`:

* ``("spectrum", sensor, kind, t0, utc_offset, time, blocks, rate, f0, df, blob)``:
  ``kind`` is ``spectrum_minute``, ``spectrum_hour`` or ``envelope_minute``;
  ``blob`` float32 little-endian RMS per line (``analytics.spectrum.pack``).
  A row that exists merges: both power-averaged, weighted by ``blocks``, and
  the blocks added (``analytics.spectrum.average``).  This is how an hour
  row is written (every minute merges into its hour), and how a minute
  returned twice (late data) ends up whole.  Rows on other lines (LINES
  changed) are replaced.
* ``("features", sensor, t0, utc_offset, time, blocks, velocity_rms, json)``:
  a minute's features; a row that exists is replaced only by a result of at
  least as many blocks (the larger part of a split minute wins).
* ``("prune_spectra", minute_before_t0, hour_before_t0)``: retention.
"""

import numpy as np

from tsrmon.names import quote_identifier
from tsrmon.store import schema
from tsrmon.store.spectra import spectra_sensors

OP_KINDS = ("spectrum", "features", "prune_spectra")


def _merge(old_blocks, old_blob, new_blocks, new_blob):
    a = np.frombuffer(old_blob, dtype="<f4").astype(np.float64)
    b = np.frombuffer(new_blob, dtype="<f4").astype(np.float64)
    p = (old_blocks * a * a + new_blocks * b * b) / (old_blocks + new_blocks)
    return np.sqrt(p).astype("<f4").tobytes()


def apply(conn, catalog, op):
    """Apply one spectra operation inside the caller's transaction."""
    kind = op[0]
    if kind == "spectrum":
        _, sensor, table_kind, t0, off, text, blocks, rate, f0, df, blob = op
        catalog.ensure_spectra(conn, sensor)
        q = quote_identifier(schema.spectra_table(sensor, table_kind))
        old = conn.execute(f"SELECT blocks, f0, df, lines FROM {q} WHERE t0=?", (t0,)).fetchone()
        if old is None:
            conn.execute(f"INSERT INTO {q} (t0, utc_offset, time, blocks, rate, f0, df, lines) "
                         f"VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (t0, off, text, blocks, rate, f0, df, blob))
        elif old[1] == f0 and old[2] == df and len(old[3]) == len(blob) and old[0]:
            conn.execute(f"UPDATE {q} SET blocks=?, lines=? WHERE t0=?",
                         (old[0] + blocks, _merge(old[0], old[3], blocks, blob), t0))
        else:
            conn.execute(f"UPDATE {q} SET blocks=?, rate=?, f0=?, df=?, lines=? WHERE t0=?",
                         (blocks, rate, f0, df, blob, t0))
    elif kind == "features":
        _, sensor, t0, off, text, blocks, vrms, doc = op
        catalog.ensure_spectra(conn, sensor)
        q = quote_identifier(schema.spectra_table(sensor, schema.FEATURES_KIND))
        conn.execute(f"INSERT INTO {q} (t0, utc_offset, time, blocks, velocity_rms, json) "
                     f"VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(t0) DO UPDATE SET "
                     f"blocks=excluded.blocks, velocity_rms=excluded.velocity_rms, "
                     f"json=excluded.json WHERE excluded.blocks >= blocks",
                     (t0, off, text, blocks, vrms, doc))
    elif kind == "prune_spectra":
        _, minute_before, hour_before = op
        for sensor, kinds in spectra_sensors(conn).items():
            for k in kinds:
                before = hour_before if k == "spectrum_hour" else minute_before
                q = quote_identifier(schema.spectra_table(sensor, k))
                conn.execute(f"DELETE FROM {q} WHERE t0 < ?", (before,))
    else:
        raise ValueError(f"unknown store operation {kind!r}")
