"""The REST API: the deployed app's eight endpoints (fixed) and the additions.

:class:`RestAPI` holds its dependencies; its Klein routes are methods.
:meth:`RestAPI.resource` is the root resource of the one HTTP site on
SERVER.PORT (REST, ``/socket.io/``), wrapped by :class:`tsrmon.web.gate.Gate`
for CORS and API tokens.  See ``docs/api.md`` for every route.
"""

import csv
import io
import math
import re
import urllib.parse
from datetime import date, datetime, time as dtime, timedelta
from zoneinfo import ZoneInfo

import orjson
from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

import numpy as np

from tsrmon.analytics import iso10816, meta as _meta, spectrum as _spectrum
from tsrmon.names import name_problem
from tsrmon.peerlog import PeerLog, peer_text
from tsrmon.store import schema
from tsrmon.store.reader import align_series, legacy_item
from tsrmon.web import openapi
from tsrmon.web.gate import Gate, allowed_methods, error_body
from tsrmon.web.policy import HttpPolicy
from tsrmon.web.metrics import CONTENT_TYPE as METRICS_TYPE, RestMetrics

JSON = b"application/json"
CSV = b"text/csv; charset=utf-8"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}$")
MAX_MINUTES = 7 * 24 * 60  # minute rows are kept 7 days (docs/storage.md)
DEFAULT_NOTIFICATION_DAYS = 30
MAX_BY = 200  # who acknowledges an alarm (openapi: maxLength 200)
# Issue 17: the opt-in statistics of /stat/<level>?fields=… (the reader's
# moment_stats row keys), and the bounds of the spectra routes.
STAT_FIELDS = openapi.STAT_FIELDS
SPECTRUM_LEVELS = ("minute", "hour", "envelope")
WATERFALL_HOURS = 6          # default span of /spectrum/waterfall
FEATURES_HOURS = 24          # default span of /features
MAX_ROWS = openapi.MAX_WATERFALL_ROWS
MAX_LINES = openapi.MAX_WATERFALL_LINES
AMPLITUDE_TEXT = ("RMS amplitude per line in the sensor's unit, window energy corrected "
                  "(a sine of peak amplitude A shows A/√2; multiply by √2 for peak scaling)")
# The dates a query may name.  Below the epoch, local midnights of some
# zones are negative or overflow; above it, "the day after" and "the year
# after" (bucket bounds, next-month texts) leave the calendar (year 10000).
MIN_DATE = date.fromisoformat(openapi.MIN_DATE)  # 1970-01-01
MAX_DATE = date.fromisoformat(openapi.MAX_DATE)  # 9998-12-31
DATE_RANGE_TEXT = f"{MIN_DATE.isoformat()} … {MAX_DATE.isoformat()}"


class BadParameter(Exception):
    """A 400 answer: ``{"error": message, "parameter": name}``."""

    def __init__(self, parameter, message):
        super().__init__(message)
        self.parameter = parameter
        self.message = message


def parse_date(text):
    """``YYYY-MM-DD``, or a datetime text at exactly midnight (as FastAPI accepted)."""
    text = text.strip()
    if _ISO_DATE.match(text):
        return date.fromisoformat(text)
    dt = datetime.fromisoformat(text)
    if (dt.hour, dt.minute, dt.second, dt.microsecond) != (0, 0, 0, 0):
        raise ValueError("a datetime must be exactly midnight")
    return dt.date()


def _csv_bytes(header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _content_disposition(stem):
    ascii_name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem) + ".csv"
    utf8 = urllib.parse.quote(stem + ".csv", safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{utf8}".encode("ascii")


def _client(request):
    """The client's address for log lines (a UNIX socket has no host)."""
    return str(getattr(request.getClientAddress(), "host", None) or "local")


def _route_label(path):
    """A bounded label for request metrics."""
    if path.startswith(b"/socket.io"):
        return "/socket.io/"
    p = path.decode("utf-8", "replace")
    if p in openapi.STATIC_PATHS:
        return p
    if p.startswith("/stat/"):
        return "/stat/{level}"
    return "other"


class RestAPI:
    """The HTTP routes.  Construct once; :meth:`resource` for the Site."""

    app = Klein()
    log = Logger()

    def __init__(self, config, clock, hub, reader, live=None, notifier=None, health=None,
                 counters=None, alarms=None, policy=None, catalog=None):
        self.config = config
        self.catalog = catalog  # tsrmon.spectra.catalog.SensorCatalog (sensor metadata), or None
        # CORS and tokens: the daemon's one HttpPolicy (shared with the live
        # layer and reloaded by SIGHUP as a room of its own), or our own.
        if policy is None and live is not None:
            policy = getattr(live, "policy", None)  # the live layer's: one policy for the whole site
            self._own_policy = False
        else:
            self._own_policy = policy is None
        self.policy = HttpPolicy.from_config(config) if policy is None else policy
        self.alarms = alarms
        self.clock = clock
        self.hub = hub
        self.reader = reader
        self.live = live
        self.notifier = notifier
        self.health = {} if health is None else health  # name -> check (tsrmon.rooms.health_checks)
        self.metrics = RestMetrics(hub, counters)
        self._rates = {}  # machine -> (t, frames, frames_per_second)
        self._gates = []
        # Bad input: a few lines per client and reason a minute.  A real
        # internal error: its traceback once per route and exception type a
        # minute (a flood of failing requests cannot flood the log).
        self.peerlog = PeerLog(self.log, clock)
        self.failures = PeerLog(self.log, clock, burst=1, global_burst=20)

    def reconfigure(self, config):
        """SIGHUP: aliases, CORS origins and tokens take effect for new requests
        (a shared policy is reloaded by its owner, not here)."""
        self.config = config
        if self._own_policy:
            self.policy.reconfigure(config)

    def resource(self):
        """The root resource of the HTTP site (REST and ``/socket.io/``)."""
        gate = Gate(self.app.resource(), self.policy, self.clock, self._observe,
                    live=self.live is not None)
        self._gates.append(gate)
        return gate

    def _observe(self, request, seconds):
        self.metrics.observe(_route_label(request.path), request.code, seconds)

    # -- helpers ---------------------------------------------------------
    @staticmethod
    def _json(request, obj, code=200):
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", JSON)
        # default=str: a room's health or history detail that is not JSON
        # (an exception, a path object) is shown as text rather than a 500.
        return orjson.dumps(obj, default=str)

    @staticmethod
    def _error(request, code, message, parameter):
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", JSON)
        return error_body(message, parameter)

    @staticmethod
    def _arg(request, name):
        values = request.args.get(name.encode("ascii"))
        if not values:
            return None
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise BadParameter(name, f"{name} is not valid UTF-8") from None

    def _date(self, request, name, required=True, default=None):
        text = self._arg(request, name)
        if text is None:
            if required:
                raise BadParameter(name, f"missing {name} (a date, YYYY-MM-DD)")
            return default
        try:
            day = parse_date(text)
        except (ValueError, OverflowError):
            raise BadParameter(name, f"{name} is not a date (YYYY-MM-DD, supported {DATE_RANGE_TEXT}): "
                                     f"'{peer_text(text)}'") from None
        if not MIN_DATE <= day <= MAX_DATE:
            raise BadParameter(name, f"{name} {day.isoformat()} is outside the supported dates "
                                     f"{DATE_RANGE_TEXT}")
        return day

    def _range(self, request, required=True):
        start = self._date(request, "start", required)
        end = self._date(request, "end", required)
        if start is not None and end is not None and start > end:
            raise BadParameter("start", f"start ({start}) is after end ({end})")
        return (start.isoformat() if start else None), (end.isoformat() if end else None)

    def _recent_range(self, request):
        """Optional start/end dates; by default the last 30 days up to today."""
        end = self._date(request, "end", required=False, default=self._today())
        start = self._date(request, "start", required=False,
                           default=max(MIN_DATE, end - timedelta(days=DEFAULT_NOTIFICATION_DAYS - 1)))
        if start > end:
            raise BadParameter("start", f"start ({start}) is after end ({end})")
        return start, end

    def _machine(self, request):
        name = self._arg(request, "machine")
        if name is None or name == "":
            raise BadParameter("machine", "missing machine")
        name = self.config["APP"]["MACHINE_ALIASES"].get(name, name)
        problem = name_problem(name)
        if problem is not None:
            raise BadParameter("machine", f"invalid machine name: {problem}")
        return name

    def _bool(self, request, name, default):
        text = self._arg(request, name)
        if text is None:
            return default
        if text == "true":
            return True
        if text == "false":
            return False
        raise BadParameter(name, f"{name} must be true or false, got {text!r}")

    def _format(self, request):
        fmt = self._arg(request, "format")
        if fmt is None:
            return "json"
        if fmt not in ("json", "csv"):
            raise BadParameter("format", f"format must be json or csv, got {fmt!r}")
        return fmt

    def _csv(self, request, stem, header, rows):
        request.setHeader(b"Content-Type", CSV)
        request.setHeader(b"Content-Disposition", _content_disposition(stem))
        return _csv_bytes(header, rows)

    def _zone(self):
        return ZoneInfo(self.config["TIME"]["ZONE"])

    def _today(self):
        return datetime.fromtimestamp(self.clock.seconds(), self._zone()).date()

    def _epoch(self, day):
        """Local midnight of ``day`` as epoch seconds."""
        return datetime.combine(day, dtime(0), self._zone()).timestamp()

    # -- issue 17 helpers ---------------------------------------------------
    def _sensor(self, request):
        name = self._arg(request, "sensor")
        if name is None or name == "":
            raise BadParameter("sensor", "missing sensor")
        problem = name_problem(name)
        if problem is not None:
            raise BadParameter("sensor", f"invalid sensor name: {problem}")
        return name

    def _choice(self, request, name, choices, default):
        text = self._arg(request, name)
        if text is None:
            return default
        if text not in choices:
            raise BadParameter(name, f"{name} must be one of {', '.join(choices)}, got "
                                     f"'{peer_text(text, 40)}'")
        return text

    def _int(self, request, name, default, lo, hi):
        text = self._arg(request, name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise BadParameter(name, f"{name} must be an integer, got '{peer_text(text, 40)}'") from None
        if not lo <= value <= hi:
            raise BadParameter(name, f"{name} must be between {lo} and {hi}")
        return value

    def _instant(self, request, name, default=None, end=False):
        """An instant as epoch seconds: epoch seconds, an ISO date-time (local
        TIME.ZONE unless it has an offset) or a date (its local midnight; for
        ``end``, the next one, so the day is included).  The local date must
        lie in the supported dates, like every other route's."""
        text = self._arg(request, name)
        if text is None:
            return default
        text = text.strip()
        zone = self._zone()
        bad = BadParameter(name, f"{name} is not an instant (epoch seconds, YYYY-MM-DD or "
                                 f"YYYY-MM-DDTHH:MM[:SS], supported {DATE_RANGE_TEXT}): "
                                 f"'{peer_text(text, 40)}'")
        try:
            if _ISO_DATE.match(text):
                day = date.fromisoformat(text)
                self._check_day(name, day)
                return self._epoch(day + timedelta(days=1) if end else day)
            try:
                t = float(text)
            except ValueError:
                t = None
            if t is not None:
                if not math.isfinite(t):
                    raise bad
                day = datetime.fromtimestamp(t, zone).date()
            else:
                dt = datetime.fromisoformat(text)
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=zone)
                t = dt.timestamp()
                day = datetime.fromtimestamp(t, zone).date()
        except (ValueError, OverflowError, OSError):
            raise bad from None
        self._check_day(name, day)
        return t

    @staticmethod
    def _check_day(name, day):
        if not MIN_DATE <= day <= MAX_DATE:
            raise BadParameter(name, f"{name} {day.isoformat()} is outside the supported dates "
                                     f"{DATE_RANGE_TEXT}")

    def _span(self, request, hours):
        """``start``/``end`` instants; by default the last ``hours`` up to now."""
        end = self._instant(request, "end", default=self.clock.seconds(), end=True)
        start = self._instant(request, "start", default=end - hours * 3600.0)
        if start > end:
            raise BadParameter("start", "start is after end")
        return start, end

    def _fields(self, request):
        text = self._arg(request, "fields")
        if text is None:
            return None
        fields = [f.strip() for f in text.split(",") if f.strip()]
        if not fields:
            raise BadParameter("fields", f"fields is empty (any of {', '.join(STAT_FIELDS)})")
        unknown = [f for f in fields if f not in STAT_FIELDS]
        if unknown:
            raise BadParameter("fields", f"unknown field '{peer_text(unknown[0], 40)}' "
                                         f"(any of {', '.join(STAT_FIELDS)})")
        return list(dict.fromkeys(fields))

    def _meta(self, machine, sensor):
        """The sensor's metadata: what the catalog resolved from live data, else
        what the SENSORS config alone says (after a restart, before data)."""
        meta = self.catalog.meta(machine, sensor) if self.catalog is not None else None
        if meta is None:
            meta = _meta.resolve(machine, sensor, None, self.config["SENSORS"])
        return meta

    def _time_text(self, t):
        return datetime.fromtimestamp(t, self._zone()).strftime("%Y-%m-%d %H:%M:%S")

    # -- errors ----------------------------------------------------------
    @app.handle_errors(BadParameter)
    def _bad_parameter(self, request, failure):
        e = failure.value
        self.peerlog.info(_client(request), f"bad {e.parameter}",
                          "{method} {path} from {client}: 400 {error}",
                          method=peer_text(request.method, 8), path=peer_text(request.path),
                          client=_client(request), error=peer_text(e.message, 160))
        request.setResponseCode(400)
        request.setHeader(b"Content-Type", JSON)
        return error_body(e.message, e.parameter)

    @app.handle_errors(NotFound)
    def _not_found(self, request, failure):
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", JSON)
        return error_body(f"no such route: {request.path.decode('utf-8', 'replace')}", None)

    @app.handle_errors(MethodNotAllowed)
    def _not_allowed(self, request, failure):
        request.setResponseCode(405)
        request.setHeader(b"Content-Type", JSON)
        request.setHeader(b"Allow", allowed_methods(request.path))
        return error_body(f"method {request.method.decode('ascii', 'replace')} not allowed", None)

    @app.handle_errors
    def _internal(self, request, failure):
        if failure.check(HTTPException):  # e.g. a redirect to add a trailing slash
            he = failure.value
            request.setResponseCode(he.code)
            for header, value in he.get_response({}).headers:
                if header.lower() == "location":
                    request.setHeader(b"Location", value.encode("utf-8"))
            request.setHeader(b"Content-Type", JSON)
            return error_body(he.description or he.name, None)
        self.failures.error(_route_label(request.path), type(failure.value).__name__,
                            "{method} {uri} from {client} failed (more such failures of this "
                            "route are counted, not logged, for a minute)",
                            log_failure=failure, method=peer_text(request.method, 8),
                            uri=peer_text(request.uri, 200), client=_client(request))
        request.setResponseCode(500)
        request.setHeader(b"Content-Type", JSON)
        return error_body("internal error (logged)", None)

    # -- index, live mount -----------------------------------------------
    @app.route("/", methods=["GET"])
    def index(self, request):
        return self._json(request, {
            "name": "tsrmon",
            "openapi": "/openapi.json",
            "routes": sorted(openapi.STATIC_PATHS | {"/stat/{level}"}),
        })

    @app.route("/socket.io/", branch=True)
    def socketio(self, request):
        if self.live is None:
            raise NotFound()
        return self.live.resource()

    # -- deployed endpoints ----------------------------------------------
    @app.route("/sio/machineList", methods=["GET"])
    def sio_machine_list(self, request):
        names = sorted(m.name for m in self.hub.machines.values() if m.connected)
        return self._json(request, {"machine_list": ["/" + n for n in names]})

    @app.route("/stat/machineList", methods=["GET"])
    @defer.inlineCallbacks
    def stat_machine_list(self, request):
        fmt = self._format(request)
        names = yield self.reader.machines()
        if fmt == "csv":
            return self._csv(request, "machines", ["machine"], [[n] for n in names])
        return self._json(request, {"machine_list": names})

    @app.route("/stat/anomaly", methods=["GET"])
    @defer.inlineCallbacks
    def stat_anomaly(self, request):
        machine = self._machine(request)
        start, end = self._range(request)
        fmt = self._format(request)
        rows = yield self.reader.anomalies(machine, start, end)
        return self._anomaly_answer(request, rows, fmt, f"{machine}_anomaly_{start}_{end}")

    @app.route("/stat/anomaly/all", methods=["GET"])
    @defer.inlineCallbacks
    def stat_anomaly_all(self, request):
        start, end = self._range(request)
        fmt = self._format(request)
        rows = yield self.reader.all_anomalies(start, end)
        return self._anomaly_answer(request, rows, fmt, f"anomaly_{start}_{end}")

    def _anomaly_answer(self, request, rows, fmt, stem):
        # The deployed server swapped these two; here score is the score.
        if fmt == "csv":
            return self._csv(request, stem, ["name", "time", "score", "threshold"],
                             [list(r) for r in rows])
        return self._json(request, [{"name": m, "time": t, "score": s, "threshold": th}
                                    for m, t, s, th in rows])

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
                              _content_disposition(f"{machine}_{level}_{start}_{end}"))
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
                                  _content_disposition(f"{machine}_minute_last{minutes}"))
            request.setHeader(b"Content-Type", CSV if fmt == "csv" else JSON)
            return _stat_fields(series, moments, fields, fmt)

        def render(series):
            if align:
                series = align_series(series, "minute")
            return (_stat_csv if fmt == "csv" else _stat_json)(series)

        body = yield self.reader.minutes(machine, since, None, then=render)
        if fmt == "csv":
            request.setHeader(b"Content-Disposition", _content_disposition(f"{machine}_minute_last{minutes}"))
        request.setHeader(b"Content-Type", CSV if fmt == "csv" else JSON)
        return body

    @app.route("/stat/faults", methods=["GET"])
    @defer.inlineCallbacks
    def stat_faults(self, request):
        machine = self._machine(request)
        start, end = self._range(request)
        fmt = self._format(request)
        rows = yield self.reader.faults(machine, start, end)
        if fmt == "csv":
            return self._csv(request, f"{machine}_faults_{start}_{end}",
                             ["name", "time", "t", "score", "threshold", "over"],
                             [[machine, t, ep, s, th, int(s > th)] for t, ep, s, th in rows])
        out = []
        for t, ep, s, th in rows:
            item = {"name": machine, "time": t, "score": s, "threshold": th, "over": s > th}
            if ep is not None:
                item["t"] = ep
            out.append(item)
        return self._json(request, out)

    # -- additions ---------------------------------------------------------
    @app.route("/machines", methods=["GET"])
    def machines(self, request):
        now = self.clock.seconds()
        out = []
        for m in sorted(self.hub.machines.values(), key=lambda m: m.name):
            st = m.status()
            st["sensors"] = [{"name": n, "type": t} for n, t in st["sensors"].items()]
            if self.catalog is not None:
                for s in st["sensors"]:
                    s["meta"] = self._sensor_meta(m.name, s["name"])
            st["frames_per_second"] = self._rate(m, now)
            out.append(st)
        return self._json(request, {"machines": out, "time": float(now)})

    def _sensor_meta(self, machine, sensor):
        """Issue 17: rate, unit, rpm … and where each came from (None: not seen yet)."""
        meta = self.catalog.meta(machine, sensor)
        return None if meta is None else meta.as_dict()

    # -- issue 17: spectra and features --------------------------------------
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
            peaks = [[f, a] for f, a in _spectrum.peaks(line_spec, self.config["SPECTRA"]["PEAKS"])]
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

    def _rate(self, machine, now):
        """Frames per second since the previous look (at least 1 s apart)."""
        prev = self._rates.get(machine.name)
        if prev is None:
            since = machine.connected_since
            rate = machine.frames / (now - since) if since is not None and now - since >= 1 else 0.0
            self._rates[machine.name] = (now, machine.frames, float(rate))
            return float(rate)
        t, frames, rate = prev
        if now - t >= 1:
            rate = max(machine.frames - frames, 0) / (now - t)
            self._rates[machine.name] = (now, machine.frames, float(rate))
        return float(rate) if machine.connected else 0.0

    @app.route("/notifications", methods=["GET"])
    @defer.inlineCallbacks
    def notifications(self, request):
        start, end = self._recent_range(request)
        if self.notifier is None:
            return self._json(request, {"enabled": False, "notifications": []})
        items = yield self.notifier.history(self._epoch(start), self._epoch(end + timedelta(days=1)))
        # The same answer as the notifier's /healthz check: a notifier with no
        # channel configured is not enabled (its history may still hold rows).
        enabled = bool(getattr(self.notifier, "enabled", True))
        return self._json(request, {"enabled": enabled, "notifications": list(items or [])})

    # -- alarm rules (tsrmon.alarms) ----------------------------------------
    def _opt_machine(self, request):
        return None if self._arg(request, "machine") is None else self._machine(request)

    @app.route("/alarms", methods=["GET"])
    def alarms_active(self, request):
        machine = self._opt_machine(request)
        items = self.alarms.active(machine=machine) if self.alarms is not None else []
        return self._json(request, {"enabled": self.alarms is not None, "alarms": list(items)})

    @app.route("/alarms/history", methods=["GET"])
    @defer.inlineCallbacks
    def alarms_history(self, request):
        machine = self._opt_machine(request)
        start, end = self._recent_range(request)
        if self.alarms is None:
            return self._json(request, {"enabled": False, "alarms": []})
        try:
            items = yield self.alarms.history(self._epoch(start), self._epoch(end + timedelta(days=1)),
                                              machine=machine)
        except RuntimeError as e:
            return self._error(request, 503, str(e), None)
        return self._json(request, {"enabled": True, "alarms": list(items or [])})

    @app.route("/alarms/<string:alarm_id>/ack", methods=["POST"])
    @defer.inlineCallbacks
    def alarms_ack(self, request, alarm_id):
        by = self._arg(request, "by")
        if by is not None and len(by) > MAX_BY:
            raise BadParameter("by", f"by is longer than {MAX_BY} characters")
        if by is None:
            # A proxy's user header (kept short), else the client address (a
            # UNIX-socket endpoint has no host).
            by = (request.getHeader("X-Forwarded-User") or "")[:MAX_BY] or _client(request)
        if self.alarms is None:
            return self._error(request, 404, "alarm rules are not running", None)
        try:
            item = yield self.alarms.ack(alarm_id, by=by)
        except KeyError:
            return self._error(request, 404, f"no active alarm {alarm_id!r}", "alarm_id")
        return self._json(request, item)

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request):
        checks = {}
        ok = True
        for name, check in sorted(self.health.items()):
            try:
                result = check()
                if not isinstance(result, dict):
                    result = {"ok": bool(result)}
            except Exception as e:
                self.log.failure("health check {name} raised", name=name)
                result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            result = dict(result)
            result["ok"] = bool(result.get("ok"))
            ok = ok and result["ok"]
            checks[name] = result
        return self._json(request, {"ok": ok, "time": float(self.clock.seconds()), "checks": checks},
                          200 if ok else 503)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request):
        request.setHeader(b"Content-Type", METRICS_TYPE)
        return self.metrics.render()

    @app.route("/openapi.json", methods=["GET"])
    def openapi_json(self, request):
        return self._json(request, openapi.spec(self.config))


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
    return _csv_bytes(["name", "time", "data", "min", "max", "rms", "count"], rows)


def _fmt(v):
    return "" if v is None else v


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
        return _csv_bytes(["name", "time", "data", "min", "max", "rms", "count"] + fields,
                          [[n, t, d, _fmt(mn), _fmt(mx), _fmt(rms), _fmt(c)] + [_fmt(v) for v in extra]
                           for n, t, d, mn, mx, rms, c, extra in rows])
    out = []
    for n, t, d, mn, mx, rms, c, extra in rows:
        item = legacy_item(n, t, d, mn, mx, rms, c)
        item.update(zip(fields, extra))
        out.append(item)
    return orjson.dumps(out)


def _features_csv(rows, level):
    """One row per minute (or hour): velocity RMS, zone, bands, orders, peaks, bearing tones."""
    if level == "hour":
        bands = sorted({b for r in rows for b in (r.get("bands") or {})})
        return (["time", "t0", "minutes", "velocity_rms", "velocity_rms_max"] + [f"band:{b}" for b in bands],
                [[r["time"], r["t0"], r["minutes"], _fmt(r["velocity_rms"]), _fmt(r["velocity_rms_max"])]
                 + [_fmt((r.get("bands") or {}).get(b)) for b in bands] for r in rows])
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
        row = [r["time"], r["t0"], r["blocks"], _fmt(r["velocity_rms"]), _fmt((f.get("iso") or {}).get("zone"))]
        row += [_fmt((f.get("bands") or {}).get(b)) for b in bands]
        row += [_fmt(((f.get("orders") or {}).get(o) or [None, None])[1]) for o in orders]
        peaks = f.get("peaks") or []
        for k in range(npeaks):
            row += [peaks[k][0], peaks[k][1]] if k < len(peaks) else ["", ""]
        bearing = {(d, h): a for d, hs in (f.get("bearing") or {}).items() for h, _, a in hs}
        row += [_fmt(bearing.get(key)) for key in tones]
        table.append(row)
    return header, table
