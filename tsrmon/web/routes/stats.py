"""The statistics routes: ``/stat/machineList``, ``/stat/<level>`` (hour, day,
month, year; ``fields=`` adds higher moments, issue 17) and ``/stat/minute``.
The default answers keep the deployed server's bytes
(tests/web/test_stat_bytes_unchanged.py)."""

import math
from datetime import datetime

import orjson
from twisted.internet import defer

from tsrmon.store import schema
from tsrmon.reader.series import align_series, legacy_item
from tsrmon.web.routes import app
from tsrmon.web.routes.answers import CSV, JSON, Answers, cell, content_disposition, csv_bytes
from tsrmon.web.routes.params import MAX_DATE, BadParameter, Params

MAX_MINUTES = 7 * 24 * 60  # minute rows are kept 7 days (docs/storage.md)


class StatRoutes(Answers, Params):
    @app.route("/stat/machineList", methods=["GET"])
    @defer.inlineCallbacks
    def stat_machine_list(self, request):
        fmt = self._format(request)
        names = yield self.reader.machines()
        if fmt == "csv":
            return self._csv(request, "machines", ["machine"], [[n] for n in names])
        return self._json(request, {"machine_list": names})

    @app.route("/stat/<string:level>", methods=["GET"])
    @defer.inlineCallbacks
    def stat_level(self, request, level):
        if level not in schema.LEGACY_LEVELS:
            raise BadParameter("level", f"unknown level {level!r} (one of {', '.join(schema.LEGACY_LEVELS)}, "
                                        "or /stat/minute)")
        machine = self._machine(request)
        start, end = self._range(request)
        align = self._bool(request, "align", True)
        fmt = self._format(request)
        fields = self._fields(request)
        render = _stat_csv if fmt == "csv" else _stat_json
        # The last supported date has no "year after" for the serving rules'
        # bounds (year 10000); up to it is the same as no upper bound.
        bound = None if end == MAX_DATE.isoformat() else end
        if fields is None:
            body = yield self.reader.stats(machine, level, start, bound, align, then=render)
        else:
            # Opt-in (issue 17): the same rows, each with the asked figures
            # (None where its bucket has no moment sums).
            series = yield self.reader.stats(machine, level, start, bound, align)
            moments = yield self.reader.moment_stats(machine, level, start, bound,
                                                     sensors=[s.sensor for s in series])
            body = _stat_fields(series, moments, fields, fmt)
        if fmt == "csv":
            request.setHeader(b"Content-Disposition",
                              content_disposition(f"{machine}_{level}_{start}_{end}"))
        request.setHeader(b"Content-Type", CSV if fmt == "csv" else JSON)
        return body

    @app.route("/stat/minute", methods=["GET"])
    @defer.inlineCallbacks
    def stat_minute(self, request):
        machine = self._machine(request)
        text = self._arg(request, "minutes")
        minutes = 60
        if text is not None:
            try:
                minutes = int(text)
            except ValueError:
                raise BadParameter("minutes", f"minutes must be an integer, got {text!r}") from None
            if not 1 <= minutes <= MAX_MINUTES:
                raise BadParameter("minutes", f"minutes must be between 1 and {MAX_MINUTES}")
        align = self._bool(request, "align", False)
        fmt = self._format(request)
        fields = self._fields(request)
        now = self.clock.seconds()
        # The current minute is included (its row grows until it closes).
        since = (math.floor(now / 60) - minutes + 1) * 60
        if fields is not None:
            series = yield self.reader.minutes(machine, since, None)
            if align:
                series = align_series(series, "minute")
            zone = self._zone()
            moments = yield self.reader.moment_stats(
                machine, "minute", datetime.fromtimestamp(since, zone).date().isoformat(), None,
                sensors=[s.sensor for s in series])
            if fmt == "csv":
                request.setHeader(b"Content-Disposition",
                                  content_disposition(f"{machine}_minute_last{minutes}"))
            request.setHeader(b"Content-Type", CSV if fmt == "csv" else JSON)
            return _stat_fields(series, moments, fields, fmt)

        def render(series):
            if align:
                series = align_series(series, "minute")
            return (_stat_csv if fmt == "csv" else _stat_json)(series)

        body = yield self.reader.minutes(machine, since, None, then=render)
        if fmt == "csv":
            request.setHeader(b"Content-Disposition", content_disposition(f"{machine}_minute_last{minutes}"))
        request.setHeader(b"Content-Type", CSV if fmt == "csv" else JSON)
        return body


def _stat_json(series):
    # One join, one copy of a body that can be 10 MB.
    parts = [b"["]
    for s in series:
        for f in s.json_fragments():
            if f:
                parts.append(f)
                parts.append(b",")
    parts[-1] = b"]" if len(parts) > 1 else b"[]"
    return b"".join(parts)


def _stat_csv(series):
    rows = []
    for s in series:
        for t, data, mn, mx, rms, count in s.items():
            rows.append([s.name, t, data, "" if mn is None else mn, "" if mx is None else mx,
                         "" if rms is None else rms, "" if count is None else count])
    return csv_bytes(["name", "time", "data", "min", "max", "rms", "count"], rows)


def _stat_fields(series, moments, fields, fmt):
    """/stat/<level>?fields=…: each served row with the asked figures."""
    rows = []
    for s in series:
        by_time = {}
        for r in moments.get(s.sensor, ()):
            by_time.setdefault(r["time"], r)
        for t, data, mn, mx, rms, count in s.items():
            m = by_time.get(t) or {}
            rows.append((s.name, t, data, mn, mx, rms, count, [m.get(f) for f in fields]))
    if fmt == "csv":
        return csv_bytes(["name", "time", "data", "min", "max", "rms", "count"] + fields,
                          [[n, t, d, cell(mn), cell(mx), cell(rms), cell(c)] + [cell(v) for v in extra]
                           for n, t, d, mn, mx, rms, c, extra in rows])
    out = []
    for n, t, d, mn, mx, rms, c, extra in rows:
        item = legacy_item(n, t, d, mn, mx, rms, c)
        item.update(zip(fields, extra))
        out.append(item)
    return orjson.dumps(out)
