"""The spectra routes (issue 17): ``/spectrum`` (one stored spectrum with
its peaks and orders), ``/spectrum/waterfall`` and ``/features`` (per-minute
or per-hour features with the ISO 10816-3 zones)."""

import numpy as np
from twisted.internet import defer

from tsrmon.analytics import iso10816, meta as _meta, spectrum as _spectrum
from tsrmon.web import openapi
from tsrmon.web.routes import app
from tsrmon.web.routes.answers import Answers, cell
from tsrmon.web.routes.params import Params

# Issue 17: the bounds of the spectra routes.
SPECTRUM_LEVELS = ("minute", "hour", "envelope")
WATERFALL_HOURS = 6          # default span of /spectrum/waterfall
FEATURES_HOURS = 24          # default span of /features
MAX_ROWS = openapi.MAX_WATERFALL_ROWS
MAX_LINES = openapi.MAX_WATERFALL_LINES
AMPLITUDE_TEXT = ("RMS amplitude per line in the sensor's unit, window energy corrected "
                  "(a sine of peak amplitude A shows A/√2; multiply by √2 for peak scaling)")


class SpectraRoutes(Answers, Params):
    @app.route("/spectrum", methods=["GET"])
    @defer.inlineCallbacks
    def spectrum(self, request):
        machine = self._machine(request)
        sensor = self._sensor(request)
        t = self._instant(request, "time")
        level = self._choice(request, "level", SPECTRUM_LEVELS, "minute")
        fmt = self._format(request)
        spec = yield self.reader.spectrum(machine, sensor, t, level)
        if spec is None:
            return self._error(request, 404, f"no {level} spectrum stored for {machine}/{sensor}"
                                             + ("" if t is None else " at that time"), "sensor")
        meta = self._meta(machine, sensor)
        values = spec.pop("lines")
        if fmt == "csv":
            f0, df = spec["f0"], spec["df"]
            return self._csv(request, f"{machine}_{sensor}_{level}_spectrum_{spec['t0']}",
                             ["frequency_hz", "rms"],
                             [[f0 + k * df, v] for k, v in enumerate(values)])
        peaks, orders = None, None
        if level == "minute":
            rows = yield self.reader.features(machine, sensor, spec["t0"], spec["t0"] + 1)
            if rows:
                peaks = rows[-1]["features"].get("peaks")
                orders = rows[-1]["features"].get("orders")
        line_spec = _spectrum.Spectrum(spec["f0"], spec["df"], np.asarray(values, np.float64),
                                       spec.get("blocks") or 1, spec.get("rate"))
        if peaks is None:
            peaks = [[f, a] for f, a in _spectrum.peaks(line_spec, self.config.spectra.peaks)]
        if orders is None and meta.rpm and level != "envelope":
            orders = {str(k): [f, a] for k, (f, a) in _spectrum.orders(line_spec, meta.rpm).items()}
        out = dict(spec, machine=machine, sensor=sensor, unit=meta.unit, rpm=meta.rpm,
                   amplitude="rms", amplitude_text=AMPLITUDE_TEXT, line_count=len(values),
                   lines=values, peaks=peaks, orders=orders)
        return self._json(request, out)

    @app.route("/spectrum/waterfall", methods=["GET"])
    @defer.inlineCallbacks
    def spectrum_waterfall(self, request):
        machine = self._machine(request)
        sensor = self._sensor(request)
        start, end = self._span(request, WATERFALL_HOURS)
        rows = self._int(request, "rows", 120, 1, MAX_ROWS)
        lines = self._int(request, "lines", 400, 1, MAX_LINES)
        level = self._choice(request, "level", SPECTRUM_LEVELS, "minute")
        fmt = self._format(request)
        wf = yield self.reader.waterfall(machine, sensor, start, end, rows, lines, level)
        meta = self._meta(machine, sensor)
        times = [self._time_text(t0) for t0 in wf["t0"]]
        if fmt == "csv":
            f0, df = wf["f0"], wf["df"]
            width = len(wf["rows"][0]) if wf["rows"] else 0
            return self._csv(request, f"{machine}_{sensor}_waterfall",
                             ["t0", "time"] + [repr(f0 + k * df) for k in range(width)],
                             [[t0, tt] + r for t0, tt, r in zip(wf["t0"], times, wf["rows"])])
        out = dict(wf, machine=machine, sensor=sensor, level=level, unit=meta.unit,
                   amplitude="rms", amplitude_text=AMPLITUDE_TEXT, start=start, end=end,
                   time=times)
        return self._json(request, out)

    @app.route("/features", methods=["GET"])
    @defer.inlineCallbacks
    def features(self, request):
        machine = self._machine(request)
        sensor = self._sensor(request)
        start, end = self._span(request, FEATURES_HOURS)
        level = self._choice(request, "level", ("minute", "hour"), "minute")
        fmt = self._format(request)
        rows = yield self.reader.features(machine, sensor, start, end, level)
        if level == "hour":
            for r in rows:
                r["time"] = self._time_text(r["t0"])
        if fmt == "csv":
            header, table = _features_csv(rows, level)
            return self._csv(request, f"{machine}_{sensor}_features_{level}", header, table)
        meta = self._meta(machine, sensor)
        group, foundation = meta.group or 2, meta.foundation or "rigid"
        iso = {"standard": "ISO 10816-3", "group": group, "foundation": foundation,
               "band_hz": list(iso10816.band_for_rpm(meta.rpm)),
               "boundaries": list(iso10816.boundaries(group, foundation)),
               "zones": [{"zone": z, "meaning": iso10816.MEANING[z]} for z in iso10816.ZONES],
               "refusal": iso10816.velocity_refusal(meta.rate, meta.unit)}
        return self._json(request, {"machine": machine, "sensor": sensor, "level": level,
                                    "unit": meta.unit, "velocity_unit": "mm/s",
                                    "amplitude": "rms", "start": start, "end": end,
                                    "iso10816": iso, "rows": rows})

    def _meta(self, machine, sensor):
        """The sensor's metadata: what the catalog resolved from live data, else
        what the SENSORS config alone says (after a restart, before data)."""
        meta = self.catalog.meta(machine, sensor) if self.catalog is not None else None
        if meta is None:
            meta = _meta.resolve(machine, sensor, None, self.config.sensors)
        return meta


def _features_csv(rows, level):
    """One row per minute (or hour): velocity RMS, zone, bands, orders, peaks, bearing tones."""
    if level == "hour":
        bands = sorted({b for r in rows for b in (r.get("bands") or {})})
        return (["time", "t0", "minutes", "velocity_rms", "velocity_rms_max"] + [f"band:{b}" for b in bands],
                [[r["time"], r["t0"], r["minutes"], cell(r["velocity_rms"]), cell(r["velocity_rms_max"])]
                 + [cell((r.get("bands") or {}).get(b)) for b in bands] for r in rows])
    feats = [r.get("features") or {} for r in rows]
    bands = sorted({b for f in feats for b in (f.get("bands") or {})})
    orders = sorted({o for f in feats for o in (f.get("orders") or {})}, key=lambda o: float(o))
    npeaks = max((len(f.get("peaks") or ()) for f in feats), default=0)
    tones = sorted({(d, h) for f in feats for d, hs in (f.get("bearing") or {}).items() for h, _, _ in hs})
    header = (["time", "t0", "blocks", "velocity_rms", "iso_zone"] + [f"band:{b}" for b in bands]
              + [f"order:{o}" for o in orders]
              + [x for k in range(1, npeaks + 1) for x in (f"peak{k}_hz", f"peak{k}_rms")]
              + [f"bearing:{d}:{h}" for d, h in tones])
    table = []
    for r, f in zip(rows, feats):
        row = [r["time"], r["t0"], r["blocks"], cell(r["velocity_rms"]), cell((f.get("iso") or {}).get("zone"))]
        row += [cell((f.get("bands") or {}).get(b)) for b in bands]
        row += [cell(((f.get("orders") or {}).get(o) or [None, None])[1]) for o in orders]
        peaks = f.get("peaks") or []
        for k in range(npeaks):
            row += [peaks[k][0], peaks[k][1]] if k < len(peaks) else ["", ""]
        bearing = {(d, h): a for d, hs in (f.get("bearing") or {}).items() for h, _, a in hs}
        row += [cell(bearing.get(key)) for key in tones]
        table.append(row)
    return header, table
