"""Issue 17 reads on the PostgreSQL store: moments, spectra, features.

A mixin of :class:`~tsrmon.reader.pg_reader.PgReader`: the public methods
(arguments, checks, documentation) are :class:`~tsrmon.reader.analytics.
AnalyticsReads`'s; only the private halves read the shared tables
(``stat_<level>``, ``spectrum``, ``features``) instead of a machine file.
The figures come from the same backend-neutral code.
"""

import json
import math

import numpy as np

from tsrmon.analytics import spectrum as _spectrum
from tsrmon.reader.analytics import AnalyticsReads, _moment_row
from tsrmon.reader.pg_serving import range_sql, text_range
from tsrmon.store.postgres.schema import LEVEL_TABLES

_SPECTRUM_KEYS = ("t0", "utc_offset", "time", "blocks", "rate", "f0", "df", "lines")


class PgAnalyticsReads(AnalyticsReads):

    def _moment_stats(self, machine, level, start, end, sensors):
        lo, hi = text_range(start, end)
        out = {}
        with self._cursor() as cur:
            cur.execute("SELECT name, ref FROM sensor WHERE machine = %s ORDER BY ord, first_seen, name",
                        (machine,))
            refs = dict(cur.fetchall())
            for sensor, ref in refs.items():
                if sensors is not None and sensor not in sensors:
                    continue
                args = [machine, sensor]
                cur.execute(f'SELECT time, t0, count, sum, min, max, sum_sq, mcount, s1, s2, s3, s4 '
                            f'FROM {LEVEL_TABLES[level]} WHERE machine = %s AND sensor = %s AND count > 0'
                            f'{range_sql(lo, hi, args)} ORDER BY time, t0', args)
                out[sensor] = [_moment_row(text, t0, n, total, mn_, mx, sq, ref, mc, s1, s2, s3, s4)
                               for text, t0, n, total, mn_, mx, sq, mc, s1, s2, s3, s4 in cur.fetchall()]
        return out

    def _spectrum_rows(self, machine, sensor, kind, start_t=None, end_t=None, limit=None, latest=False):
        sql = ("SELECT t0, utc_offset, time, blocks, rate, f0, df, lines FROM spectrum "
               "WHERE machine = %s AND sensor = %s AND kind = %s")
        args = [machine, sensor, kind]
        if start_t is not None:
            sql += " AND t0 >= %s"
            args.append(int(start_t))
        if end_t is not None:
            sql += " AND t0 < %s"
            args.append(int(end_t))
        sql += f" ORDER BY t0 {'DESC' if latest else 'ASC'}"
        if limit is not None:
            sql += " LIMIT %d" % int(limit)
        with self._cursor() as cur:
            cur.execute(sql, args)
            rows = [dict(zip(_SPECTRUM_KEYS, r)) for r in cur.fetchall()]
        for r in rows:
            r["lines"] = bytes(r["lines"])
        if latest:
            rows.reverse()
        return rows

    def _spectrum(self, machine, sensor, t, level):
        kind, span = self._spectrum_kind(level)
        if t is None:
            rows = self._spectrum_rows(machine, sensor, kind, limit=1, latest=True)
        else:
            t0 = math.floor(t)
            rows = self._spectrum_rows(machine, sensor, kind, t0 - span + 1, t0 + 1, limit=1, latest=True)
        if not rows:
            return None
        r = rows[0]
        vals = np.frombuffer(r.pop("lines"), dtype="<f4")
        return dict(r, level=level, convention="rms", lines=vals.astype(float).tolist())

    def _waterfall(self, machine, sensor, start_t, end_t, n_rows, n_lines, level):
        kind, _span = self._spectrum_kind(level)
        empty = {"t0": [], "f0": 0.0, "df": 0.0, "convention": "rms", "rows": []}
        got = self._spectrum_rows(machine, sensor, kind, start_t, end_t)
        if not got:
            return empty
        last = got[-1]
        got = [r for r in got if r["f0"] == last["f0"] and r["df"] == last["df"]
               and len(r["lines"]) == len(last["lines"])]
        specs = [_spectrum.unpack(r["lines"], r["f0"], r["df"], r["blocks"] or 1, r["rate"]) for r in got]
        groups, f0, df, rms = _spectrum.waterfall(specs, n_rows, n_lines)
        return {"t0": [got[g[0]]["t0"] for g in groups], "f0": f0, "df": df,
                "convention": "rms", "rows": rms.astype(float).tolist()}

    def _features(self, machine, sensor, start_t, end_t, level):
        sql = ("SELECT t0, utc_offset, time, blocks, velocity_rms, json FROM features "
               "WHERE machine = %s AND sensor = %s")
        args = [machine, sensor]
        if start_t is not None:
            sql += " AND t0 >= %s"
            args.append(int(start_t))
        if end_t is not None:
            sql += " AND t0 < %s"
            args.append(int(end_t))
        with self._cursor() as cur:
            cur.execute(sql + " ORDER BY t0", args)
            raw = cur.fetchall()
        rows = []
        for t0, off, text, blocks, v, doc in raw:
            try:
                feats = json.loads(doc) if doc else {}
            except ValueError:
                feats = {}
            rows.append({"t0": t0, "utc_offset": off, "time": text, "blocks": blocks,
                         "velocity_rms": v, "features": feats})
        if level == "minute":
            return rows
        return self._hours_of_features(rows)

    @staticmethod
    def _hours_of_features(rows):
        hours = {}
        for r in rows:
            off = r["utc_offset"] or 0
            h = (r["t0"] + off) // 3600 * 3600 - off
            hours.setdefault(h, []).append(r)
        out = []
        for h, group in sorted(hours.items()):
            v = [r["velocity_rms"] for r in group if r["velocity_rms"] is not None]
            bands = {}
            for r in group:
                for name, val in (r["features"].get("bands") or {}).items():
                    if isinstance(val, (int, float)):
                        bands.setdefault(name, []).append(val)
            out.append({"t0": h, "minutes": len(group),
                        "velocity_rms": math.sqrt(sum(x * x for x in v) / len(v)) if v else None,
                        "velocity_rms_max": max(v) if v else None,
                        "bands": {k: math.sqrt(sum(x * x for x in vs) / len(vs)) for k, vs in bands.items()}})
        return out
