"""PostgreSQL dialect of the store's writes (writer thread, inside the
flush transaction): the additive upsert generated from ``deltas.MERGE``,
the sensor catalogue, faults and spectra.  One set of tables for every
machine: ``machine`` and ``sensor`` are columns, the conflict key is
``(machine, sensor, t0)``, so any number of nodes may add to the same
bucket: PostgreSQL serialises the row updates, none is lost.
"""

import json

from tsrmon.store.deltas import MERGE, MOMENT_COLUMNS, SUM_COLUMNS, mean_column, moment_values, sum_values
from tsrmon.store.postgres.schema import LEVEL_TABLES
from tsrmon.store.sqlite_spectra import _merge as merge_spectrum

_PG_MERGE = {
    "add": '"{c}" = t."{c}" + excluded."{c}"',
    "add0": '"{c}" = COALESCE(t."{c}", 0) + excluded."{c}"',
    "min": '"{c}" = LEAST(t."{c}", excluded."{c}")',
    "max": '"{c}" = GREATEST(t."{c}", excluded."{c}")',
}
_SQL = {}


def upsert_sql(level, mode, moments=False):
    """``INSERT … ON CONFLICT (machine, sensor, t0) DO UPDATE`` of one level
    (parameters: machine, sensor, then :data:`deltas.SUM_COLUMNS` [+ moments])."""
    key = (level, mode, moments)
    sql = _SQL.get(key)
    if sql is None:
        cols = SUM_COLUMNS + (MOMENT_COLUMNS if moments else ())
        num = mean_column(mode)
        sets = [_PG_MERGE[MERGE[c]].format(c=c) for c in cols if c in MERGE]
        sets.append(f'data = (t."{num}" + excluded."{num}") / (t."count" + excluded."count")')
        names = ", ".join(f'"{c}"' for c in ("machine", "sensor") + cols)
        sql = _SQL[key] = (
            f"INSERT INTO {LEVEL_TABLES[level]} AS t ({names}) "
            f"VALUES ({', '.join(['%s'] * (len(cols) + 2))}) "
            f"ON CONFLICT (machine, sensor, t0) DO UPDATE SET {', '.join(sets)}")
    return sql


class Catalog:
    """Sensor modes and moment references as this node last saw them
    (writer thread; reloaded after a failed transaction)."""

    def __init__(self):
        self.modes = {}   # (machine, sensor) -> mode
        self.refs = {}    # (machine, sensor) -> ref or None
        self.loaded = False

    def load(self, cur):
        cur.execute("SELECT machine, name, mode, ref FROM sensor")
        self.modes, self.refs = {}, {}
        for m, s, mode, ref in cur.fetchall():
            self.modes[(m, s)] = mode
            self.refs[(m, s)] = ref
        self.loaded = True

    def refs_of(self, machine):
        return {s: r for (m, s), r in self.refs.items() if m == machine and r is not None}

    def ensure(self, cur, machine, sensor, stype, mode, t):
        cur.execute("SELECT mode FROM sensor WHERE machine = %s AND name = %s FOR UPDATE",
                    (machine, sensor))
        row = cur.fetchone()
        if row is None:
            cur.execute(
                "INSERT INTO sensor (machine, name, type, mode, first_seen, ord) VALUES "
                "(%s, %s, %s, %s, %s, (SELECT COALESCE(max(ord), -1) + 1 FROM sensor WHERE machine = %s)) "
                "ON CONFLICT (machine, name) DO NOTHING", (machine, sensor, stype, mode, t, machine))
        else:
            if row[0] != mode:
                # The type's STAT mode changed: ``data`` of counted rows follows.
                num = mean_column(mode)
                for table in LEVEL_TABLES.values():
                    cur.execute(f'UPDATE {table} SET data = "{num}" / "count" '
                                f'WHERE machine = %s AND sensor = %s AND "count" > 0', (machine, sensor))
            cur.execute("UPDATE sensor SET type = COALESCE(%s, type), mode = %s, "
                        "first_seen = COALESCE(first_seen, %s) WHERE machine = %s AND name = %s",
                        (stype, mode, t, machine, sensor))
        self.modes[(machine, sensor)] = mode
        self.refs.setdefault((machine, sensor), None)

    def mode(self, cur, machine, sensor):
        mode = self.modes.get((machine, sensor))
        if mode is None:
            self.ensure(cur, machine, sensor, None, "REAL", None)
            mode = "REAL"
        return mode

    def reference(self, cur, machine, sensor, ref):
        got = self.refs.get((machine, sensor))
        if got is None:
            # Another node may set it first: the row lock orders us after it.
            cur.execute("UPDATE sensor SET ref = %s WHERE machine = %s AND name = %s AND ref IS NULL",
                        (ref, machine, sensor))
            cur.execute("SELECT ref FROM sensor WHERE machine = %s AND name = %s", (machine, sensor))
            got = self.refs[(machine, sensor)] = cur.fetchone()[0]
        return got


def apply_sum_rows(cur, catalog, machine, rows):
    groups = {}
    for r in rows:
        if r[5] <= 0:
            continue
        groups.setdefault((r[0], r[1], len(r) >= 17 and r[11] > 0), []).append(r)
    # One order of row locks on every node (sensor, level, t0), so two nodes
    # adding to the same buckets wait for each other instead of deadlocking.
    for (sensor, level, moments), group in sorted(groups.items(), key=lambda kv: kv[0]):
        group.sort(key=lambda r: r[2])
        mode = catalog.mode(cur, machine, sensor)
        head = (machine, sensor)
        if moments:
            refs = {sensor: catalog.reference(cur, machine, sensor, group[0][12])}
            values = moment_values(group, mode, refs)
        else:
            values = sum_values(group, mode)
        cur.executemany(upsert_sql(level, mode, moments), [head + v for v in values])


def apply_fault(cur, machine, text, t, score, threshold, node=None):
    cur.execute("INSERT INTO fault_detect (machine, time, t, score, threshold, node) "
                "VALUES (%s, %s, %s, %s, %s, %s)", (machine, text, t, score, threshold, node))
    if score > threshold:
        cur.execute("INSERT INTO anomaly (machine, time, t, score, threshold, node) "
                    "VALUES (%s, %s, %s, %s, %s, %s)", (machine, text, t, score, threshold, node))


def apply_spectra(cur, machine, op):
    kind = op[0]
    if kind == "spectrum":
        _, sensor, table_kind, t0, off, text, blocks, rate, f0, df, blob = op
        cur.execute("INSERT INTO spectrum (machine, sensor, kind, t0, utc_offset, time, blocks, rate, "
                    "f0, df, lines) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING RETURNING 1",
                    (machine, sensor, table_kind, t0, off, text, blocks, rate, f0, df, blob))
        if cur.fetchone() is not None:
            return
        key = (machine, sensor, table_kind, t0)
        cur.execute("SELECT blocks, f0, df, lines FROM spectrum WHERE machine = %s AND sensor = %s "
                    "AND kind = %s AND t0 = %s FOR UPDATE", key)
        old = cur.fetchone()
        if old[1] == f0 and old[2] == df and len(old[3]) == len(blob) and old[0]:
            cur.execute("UPDATE spectrum SET blocks = %s, lines = %s WHERE machine = %s AND sensor = %s "
                        "AND kind = %s AND t0 = %s",
                        (old[0] + blocks, merge_spectrum(old[0], bytes(old[3]), blocks, blob)) + key)
        else:
            cur.execute("UPDATE spectrum SET blocks = %s, rate = %s, f0 = %s, df = %s, lines = %s "
                        "WHERE machine = %s AND sensor = %s AND kind = %s AND t0 = %s",
                        (blocks, rate, f0, df, blob) + key)
    elif kind == "features":
        _, sensor, t0, off, text, blocks, vrms, doc = op
        cur.execute("INSERT INTO features AS f (machine, sensor, t0, utc_offset, time, blocks, "
                    "velocity_rms, json) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (machine, sensor, t0) DO UPDATE SET blocks = excluded.blocks, "
                    "velocity_rms = excluded.velocity_rms, json = excluded.json "
                    "WHERE excluded.blocks >= f.blocks",
                    (machine, sensor, t0, off, text, blocks, vrms, doc))
    elif kind == "prune_spectra":
        _, minute_before, hour_before = op
        cur.execute("DELETE FROM spectrum WHERE machine = %s AND ((kind = 'spectrum_hour' AND t0 < %s) "
                    "OR (kind <> 'spectrum_hour' AND t0 < %s))", (machine, hour_before, minute_before))
    else:
        raise ValueError(f"unknown store operation {kind!r}")


# -- change payloads (LISTEN/NOTIFY) --------------------------------------------
MAX_PAYLOAD = 7900   # PostgreSQL's limit is 8000 bytes


def encode_change(change, node):
    """A compact JSON payload of a ``feed.Change`` (its extent dropped, i.e.
    ``everything``, when too long for NOTIFY)."""
    doc = {"n": node, "m": change.machine}
    if change.everything:
        doc["e"] = 1
    else:
        doc["s"] = [[s, k, *span] for (s, k), span in change.spans.items()]
    text = json.dumps(doc, separators=(",", ":"))
    if len(text.encode()) > MAX_PAYLOAD:
        text = json.dumps({"n": node, "m": change.machine, "e": 1}, separators=(",", ":"))
    return text


def decode_change(text):
    """``(node, Change)`` of a payload (ValueError when malformed)."""
    from tsrmon.store.feed import Change

    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("m"), str):
        raise ValueError("not a change payload")
    if doc.get("e"):
        return doc.get("n"), Change(doc["m"], everything=True)
    spans = {(s[0], s[1]): tuple(s[2:6]) for s in doc.get("s", ())}
    return doc.get("n"), Change(doc["m"], spans)
