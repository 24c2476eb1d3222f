"""Issue 17 reads: moments, spectra, features.

A mixin of :class:`~tsrmon.reader.sqlite_reader.SQLiteReader` (it uses the
reader's threads and connections); the figures come from the
backend-neutral ``analytics`` package.  The public methods (arguments,
checks, figures) serve the PostgreSQL reader too:
:class:`~tsrmon.reader.pg_analytics.PgAnalyticsReads` subclasses this and
replaces only the private row reads.
"""

import math
import sqlite3

import numpy as np

from tsrmon.analytics import spectrum as _spectrum
from tsrmon.analytics.moments import Moments, peak_figures
from tsrmon.names import quote_identifier
from tsrmon.store import schema
from tsrmon.store import spectra as _spectra


class AnalyticsReads:
    """``IAnalyticsReader`` (``store/contract.py``): each method returns a Deferred."""

    MOMENT_FIELDS = ("mean", "std", "rms", "skewness", "kurtosis", "peak", "peak_to_peak",
                     "crest", "moments_count")

    def moment_stats(self, machine, level, start=None, end=None, sensors=None):
        """Deferred ``{sensor: [row, ...]}`` of the counted rows of a level
        (``minute`` … ``year``) in a local date range (``start``/``end``
        ``YYYY-MM-DD``, inclusive, as :meth:`stats`), ascending by time.

        A row is ``{"time", "t0", "count", "moments_count", "mean", "std",
        "rms", "skewness", "kurtosis", "peak", "peak_to_peak", "crest"}``.
        ``rms``, ``peak``, ``peak_to_peak`` and ``crest`` come from the
        deployed sums (every counted row has them); ``std``, ``skewness``
        (Fisher–Pearson) and ``kurtosis`` (Pearson, normal = 3) from the
        moment sums, over ``moments_count`` samples (rows written before the
        version-2 migration have fewer or none: then None).  Undefined
        figures are None, never NaN.  Legacy rows (no counts) are left out.
        """
        if level not in schema.LEVELS:
            raise ValueError(f"unknown level {level!r}")
        return self._run(self._moment_stats, machine, level, start, end,
                         None if sensors is None else tuple(sensors))

    def _moment_stats(self, machine, level, start, end, sensors):
        conn, _path = self._connect(machine)
        if conn is None:
            return {}
        refs = {}
        if schema.SENSORS_TABLE in self._tables(conn) and \
                "ref" in self._columns(conn, schema.SENSORS_TABLE):
            refs = dict(conn.execute(f"SELECT name, ref FROM {schema.SENSORS_TABLE}"))
        out = {}
        for sensor, table in self._sensor_tables(conn, level):
            if sensors is not None and sensor not in sensors:
                continue
            cols = self._columns(conn, table)
            if "count" not in cols:
                continue
            mcols = ('"mcount", "s1", "s2", "s3", "s4"' if "mcount" in cols
                     else "NULL, NULL, NULL, NULL, NULL")
            where, args = self._date_where(start, end)
            where.append('"count" > 0')
            sql = (f'SELECT time, t0, "count", "sum", "min", "max", "sum_sq", {mcols} '
                   f"FROM {quote_identifier(table)} WHERE {' AND '.join(where)} ORDER BY time, id")
            rows = []
            try:
                cursor = conn.execute(sql, args)
                for text, t0, n, total, lo, hi, sq, mn, s1, s2, s3, s4 in cursor:
                    rows.append(_moment_row(text, t0, n, total, lo, hi, sq, refs.get(sensor),
                                            mn, s1, s2, s3, s4))
            except sqlite3.DatabaseError as e:
                self._warn_once((table, str(e)), "cannot read table {table}: {error}",
                                table=table, error=e)
                continue
            out[sensor] = rows
        return out

    def spectrum(self, machine, sensor, t=None, level="minute"):
        """Deferred dict of the stored spectrum of the minute (or hour) that
        holds epoch ``t`` (the newest when ``t`` is None), or None.

        ``{"t0", "utc_offset", "time", "level", "blocks", "rate", "f0", "df",
        "convention": "rms", "lines": [float, ...]}``: line k (0-based) is at
        ``f0 + k·df`` Hz; each value is an **RMS amplitude per line** in the
        sensor's unit (a sine of amplitude A shows A/√2; window energy
        corrected).  ``level`` ``minute``, ``hour`` or ``envelope`` (the
        minute's envelope spectrum)."""
        return self._run(self._spectrum, machine, sensor, t, level)

    _KINDS = {"minute": ("spectrum_minute", 60), "hour": ("spectrum_hour", 3600),
              "envelope": ("envelope_minute", 60)}

    def _spectrum_kind(self, level):
        try:
            return self._KINDS[level]
        except KeyError:
            raise ValueError(f"unknown spectrum level {level!r} "
                             f"(minute, hour or envelope)") from None

    def _spectrum_rows(self, machine, sensor, kind, start_t=None, end_t=None, limit=None,
                       latest=False):
        """The backend's spectrum rows (``store.spectra.spectrum_rows``); [] without a file."""
        conn, _path = self._connect(machine)
        if conn is None:
            return []
        return _spectra.spectrum_rows(conn, sensor, kind, start_t, end_t, limit=limit, latest=latest)

    def _spectrum(self, machine, sensor, t, level):
        kind, span = self._spectrum_kind(level)
        if t is None:
            rows = self._spectrum_rows(machine, sensor, kind, limit=1, latest=True)
        else:
            t0 = math.floor(t)
            rows = self._spectrum_rows(machine, sensor, kind, t0 - span + 1, t0 + 1,
                                       limit=1, latest=True)
        if not rows:
            return None
        r = rows[0]
        vals = np.frombuffer(r.pop("lines"), dtype="<f4")
        return dict(r, level=level, convention="rms", lines=vals.astype(float).tolist())

    def waterfall(self, machine, sensor, start_t, end_t, rows=None, lines=None, level="minute"):
        """Deferred dict: the stored spectra with ``start_t <= t0 < end_t``
        decimated to at most ``rows`` × ``lines`` (``analytics.spectrum.
        waterfall``: rows power-averaged by blocks, lines grouped with power
        summed, so the total RMS is kept).  ``{"t0": [row start t0, ...],
        "f0", "df", "convention": "rms", "rows": [[float, ...], ...]}``;
        spectra on other lines than the newest (LINES changed) are left out."""
        return self._run(self._waterfall, machine, sensor, start_t, end_t, rows, lines, level)

    def _waterfall(self, machine, sensor, start_t, end_t, n_rows, n_lines, level):
        kind, _span = self._spectrum_kind(level)
        empty = {"t0": [], "f0": 0.0, "df": 0.0, "convention": "rms", "rows": []}
        got = self._spectrum_rows(machine, sensor, kind, start_t, end_t)
        if not got:
            return empty
        last = got[-1]
        got = [r for r in got if r["f0"] == last["f0"] and r["df"] == last["df"]
               and len(r["lines"]) == len(last["lines"])]
        specs = [_spectrum.unpack(r["lines"], r["f0"], r["df"], r["blocks"] or 1, r["rate"])
                 for r in got]
        groups, f0, df, rms = _spectrum.waterfall(specs, n_rows, n_lines)
        return {"t0": [got[g[0]]["t0"] for g in groups], "f0": f0, "df": df,
                "convention": "rms", "rows": rms.astype(float).tolist()}

    def features(self, machine, sensor, start_t=None, end_t=None, level="minute"):
        """Deferred list of a sensor's stored features, ascending.

        ``minute``: ``{"t0", "utc_offset", "time", "blocks", "velocity_rms",
        "features"}`` with ``features`` as ``analytics.features.features``
        made it (bands, peaks, orders, bearing tones, iso judgement, notes).
        ``hour``: per hour ``{"t0", "minutes", "velocity_rms",
        "velocity_rms_max", "bands"}``, RMS averages of its minutes."""
        if level not in ("minute", "hour"):
            raise ValueError(f"unknown features level {level!r} (minute or hour)")
        return self._run(self._features, machine, sensor, start_t, end_t, level)

    def _features(self, machine, sensor, start_t, end_t, level):
        rows = self._features_rows(machine, sensor, start_t, end_t)
        if level == "minute":
            return rows
        return _hours_of_features(rows)

    def _features_rows(self, machine, sensor, start_t, end_t):
        """The backend's feature rows (``store.spectra.features_rows``); [] without a file."""
        conn, _path = self._connect(machine)
        if conn is None:
            return []
        return _spectra.features_rows(conn, sensor, start_t, end_t)


def _hours_of_features(rows):
    """Per hour of the rows' local clock: their count, RMS velocity and bands."""
    hours = {}
    for r in rows:
        # The hour of the row's local clock (utc_offset is whole minutes).
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
                    "bands": {k: math.sqrt(sum(x * x for x in vs) / len(vs))
                              for k, vs in bands.items()}})
    return out


def _fin(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _moment_row(text, t0, n, total, lo, hi, sq, ref, mn, s1, s2, s3, s4):
    out = {"time": text, "t0": t0, "count": n, "moments_count": mn or 0,
           "mean": _fin(total / n) if _fin(total) is not None else None}
    if _fin(sq) is not None and _fin(lo) is not None and _fin(hi) is not None:
        out.update({k: _fin(v) for k, v in peak_figures(n, sq, lo, hi).items()})
    else:
        out.update(rms=None, peak=None, peak_to_peak=None, crest=None)
    m = None
    if mn and ref is not None and all(_fin(v) is not None for v in (s1, s2, s3, s4)):
        m = Moments(mn, ref, s1, s2, s3, s4)
    out["std"] = _fin(m.std) if m is not None else None
    out["skewness"] = _fin(m.skewness) if m is not None else None
    out["kurtosis"] = _fin(m.kurtosis) if m is not None else None
    return out
