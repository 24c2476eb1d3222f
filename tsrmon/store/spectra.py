"""Spectra rows in a machine database: the reads (``tsrmon/reader/``).

The layout is in ``schema.py`` (``spectra_table``); the writes, on the
writer thread, in ``sqlite_spectra.py``.
"""

import json

from tsrmon.names import quote_identifier
from tsrmon.store import schema


def spectra_sensors(conn):
    """``{sensor: [kinds]}`` of the spectra tables in a database."""
    out = {}
    kinds = schema.SPECTRUM_KINDS + (schema.FEATURES_KIND,)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        for k in kinds:
            suffix = "_" + k
            if name.endswith(suffix) and len(name) > len(suffix):
                out.setdefault(name[:-len(suffix)], []).append(k)
    return out


# -- reads (any thread with its own connection) --------------------------------

def _exists(conn, table):
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                        (table,)).fetchone() is not None


def _t0_range(start_t, end_t):
    """WHERE terms and arguments for ``start_t <= t0 < end_t`` (None: open)."""
    where, args = ["1"], []
    if start_t is not None:
        where.append("t0 >= ?")
        args.append(int(start_t))
    if end_t is not None:
        where.append("t0 < ?")
        args.append(int(end_t))
    return where, args


def spectrum_rows(conn, sensor, kind, start_t=None, end_t=None, limit=None, latest=False):
    """Rows ``{t0, utc_offset, time, blocks, rate, f0, df, lines}`` (``lines``
    the raw float32 BLOB) with ``start_t <= t0 < end_t``, ascending (or the
    newest ``limit`` when ``latest``)."""
    table = schema.spectra_table(sensor, kind)
    if not _exists(conn, table):
        return []
    where, args = _t0_range(start_t, end_t)
    order = "DESC" if latest else "ASC"
    sql = (f"SELECT t0, utc_offset, time, blocks, rate, f0, df, lines FROM "
           f"{quote_identifier(table)} WHERE {' AND '.join(where)} ORDER BY t0 {order}")
    if limit is not None:
        sql += " LIMIT %d" % int(limit)
    keys = ("t0", "utc_offset", "time", "blocks", "rate", "f0", "df", "lines")
    rows = [dict(zip(keys, r)) for r in conn.execute(sql, args)]
    if latest:
        rows.reverse()
    return rows


def features_rows(conn, sensor, start_t=None, end_t=None):
    """Rows ``{t0, utc_offset, time, blocks, velocity_rms, features}``
    (``features`` the decoded JSON), ascending."""
    table = schema.spectra_table(sensor, schema.FEATURES_KIND)
    if not _exists(conn, table):
        return []
    where, args = _t0_range(start_t, end_t)
    return [feature_row(*r) for r in conn.execute(
        f"SELECT t0, utc_offset, time, blocks, velocity_rms, json FROM "
        f"{quote_identifier(table)} WHERE {' AND '.join(where)} ORDER BY t0", args)]


def feature_row(t0, off, text, blocks, v, doc):
    """A features row as both backends serve it (``doc`` the stored JSON)."""
    try:
        feats = json.loads(doc) if doc else {}
    except ValueError:
        feats = {}
    return {"t0": t0, "utc_offset": off, "time": text, "blocks": blocks,
            "velocity_rms": v, "features": feats}
