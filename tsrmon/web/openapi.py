"""The OpenAPI 3.0 description of every REST route (served at ``/openapi.json``).

Every 200 response has a schema with required keys and concrete types, so
a client generator (and schemathesis) can trust it.  ``tests/web`` fails
when a Klein route of :class:`tsrmon.web.rest.RestAPI` (its routes are in
``tsrmon/web/routes/``) is missing here.
"""

import copy

from tsrmon.store.schema import LEGACY_LEVELS

MAX_MINUTES = 7 * 24 * 60
# Issue 17: the opt-in statistics of /stat/{level}?fields= (tsrmon.reader.analytics
# moment_stats), and the size bounds of /spectrum/waterfall.
STAT_FIELDS = ("mean", "std", "rms", "skewness", "kurtosis", "peak", "peak_to_peak", "crest",
               "moments_count")
MAX_WATERFALL_ROWS = 1000
MAX_WATERFALL_LINES = 1600
_INSTANT = ("Epoch seconds, YYYY-MM-DDTHH:MM[:SS] (local TIME.ZONE unless it carries an offset) "
            "or YYYY-MM-DD (local midnight; for `end` the next one, so the day is included). ")
_AMPLITUDE = ("Amplitude convention: `amplitude` is \"rms\": every value is the RMS amplitude per "
              "line in the sensor's unit, window energy corrected; a sine of peak amplitude A "
              "shows A/√2 (its energy may split over two adjacent lines). Line k is at f0 + k·df Hz.")
# The dates a query may name (tsrmon.web.routes.params.MIN_DATE / MAX_DATE); any other
# date is answered 400 naming this range.
MIN_DATE = "1970-01-01"
MAX_DATE = "9998-12-31"
_DATES = f"Supported dates: {MIN_DATE} … {MAX_DATE}; any other date is a 400."
# tsrmon.names: Unicode letters and digits, _ . -, 1-64 characters, not
# starting with . or - (Python's \w is exactly "isalnum() or _").  OpenAPI
# patterns are ECMA-262, whose \w is ASCII only: any non-ASCII character of
# the BMP is let through here (a superset: the server still answers 400 for a
# name it refuses), so no accepted name ever "violates" the schema.
NAME_PATTERN = r"^[\w\u0080-\uffff][\w.\u0080-\uffff-]{0,63}$"

# Klein routes that are not REST (documented in docs/socketio.md instead).
NOT_REST = frozenset({"/socket.io/", "/socket.io/{__rest__}"})


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema, description="OK"):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json_or_csv(schema):
    return {"description": "OK (JSON, or CSV with `format=csv`)",
            "content": {"application/json": {"schema": schema},
                        "text/csv": {"schema": {"type": "string"}}}}


_ERROR = _json(_ref("Error"), "Bad request: a missing or invalid parameter, start after end, "
                               f"or a date outside {MIN_DATE} … {MAX_DATE}")
_UNAUTHORIZED = _json(_ref("Error"), "Missing or invalid API token (only when AUTH.API_TOKENS is set)")

_P = {
    "machine": {"name": "machine", "in": "query", "required": True,
                "description": "Machine name (APP.MACHINE_ALIASES apply, e.g. VacuumPump).",
                "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 64}},
    "start": {"name": "start", "in": "query", "required": True,
              "description": "First local date, inclusive (compared with DATE(time)). " + _DATES,
              "schema": {"type": "string", "format": "date"}},
    "end": {"name": "end", "in": "query", "required": True,
            "description": "Last local date, inclusive. " + _DATES,
            "schema": {"type": "string", "format": "date"}},
    "opt_start": {"name": "start", "in": "query", "required": False,
                  "description": "First local date (default: end minus 29 days, not before "
                                 f"{MIN_DATE}). " + _DATES,
                  "schema": {"type": "string", "format": "date"}},
    "opt_end": {"name": "end", "in": "query", "required": False,
                "description": "Last local date (default: today). " + _DATES,
                "schema": {"type": "string", "format": "date"}},
    "align": {"name": "align", "in": "query", "required": False,
              "description": "Only bucket times that every sensor with data in the range has "
                             "(the app pairs channels by index). Default true; false on /stat/minute.",
              "schema": {"type": "string", "enum": ["true", "false"]}},
    "format": {"name": "format", "in": "query", "required": False,
               "description": "json (default) or csv (with Content-Disposition).",
               "schema": {"type": "string", "enum": ["json", "csv"]}},
    "opt_machine": {"name": "machine", "in": "query", "required": False,
                    "description": "Only this machine (APP.MACHINE_ALIASES apply).",
                    "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 64}},
    "alarm_id": {"name": "alarm_id", "in": "path", "required": True,
                 "schema": {"type": "string", "maxLength": 64}},
    "by": {"name": "by", "in": "query", "required": False,
           "description": "Who acknowledges (default: the client address).",
           "schema": {"type": "string", "maxLength": 200}},
    "level": {"name": "level", "in": "path", "required": True,
              "schema": {"type": "string", "enum": list(LEGACY_LEVELS)}},
    "fields": {"name": "fields", "in": "query", "required": False,
               "description": "Opt-in extra statistics per row, comma-separated (issue 17): "
                              + ", ".join(STAT_FIELDS) + ". Kurtosis is Pearson (normal 3, sine "
                              "1.5); std population; crest = peak / rms; moments_count the samples "
                              "the moment sums hold (rows older than the version-2 migration have "
                              "fewer; their skewness/kurtosis are then null). Without `fields` the "
                              "answer is byte-identical to the deployed shape.",
               "schema": {"type": "string", "maxLength": 200}},
    "sensor": {"name": "sensor", "in": "query", "required": True, "description": "Sensor name.",
               "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 64}},
    "time": {"name": "time", "in": "query", "required": False,
             "description": "The minute (or hour) holding this instant; default the newest. "
                            + _INSTANT + _DATES, "schema": {"type": "string", "maxLength": 40}},
    "inst_start": {"name": "start", "in": "query", "required": False,
                   "description": "From this instant (default: end minus 6 h for the waterfall, "
                                  "24 h for features). " + _INSTANT + _DATES,
                   "schema": {"type": "string", "maxLength": 40}},
    "inst_end": {"name": "end", "in": "query", "required": False,
                 "description": "Up to this instant, exclusive (default: now). " + _INSTANT + _DATES,
                 "schema": {"type": "string", "maxLength": 40}},
    "spectrum_level": {"name": "level", "in": "query", "required": False,
                       "description": "minute (default), hour (the Welch average of the hour) "
                                      "or envelope (the minute's envelope spectrum).",
                       "schema": {"type": "string", "enum": ["minute", "hour", "envelope"]}},
    "features_level": {"name": "level", "in": "query", "required": False,
                       "description": "minute (default) or hour (RMS averages of its minutes).",
                       "schema": {"type": "string", "enum": ["minute", "hour"]}},
    "rows": {"name": "rows", "in": "query", "required": False,
             "description": "At most this many rows (spectra power-averaged by blocks; default 120).",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_WATERFALL_ROWS}},
    "lines": {"name": "lines", "in": "query", "required": False,
              "description": "At most this many columns (adjacent lines' power summed, so each is "
                             "the RMS of its band; default 400).",
              "schema": {"type": "integer", "minimum": 1, "maximum": MAX_WATERFALL_LINES}},
    "minutes": {"name": "minutes", "in": "query", "required": False,
                "description": "How many recent minutes (default 60; minute rows are kept 7 days).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_MINUTES}},
}

# The boundary dates as examples: client generators show them, and
# schemathesis' examples phase sends them to every route that takes a date.
for _key in ("start", "end", "opt_start", "opt_end"):
    _P[_key]["examples"] = {"first supported date": {"value": MIN_DATE},
                            "last supported date": {"value": MAX_DATE}}

_NULLABLE_NUMBER = {"type": "number", "nullable": True}

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error", "parameter"], "additionalProperties": False,
        "properties": {"error": {"type": "string"},
                       "parameter": {"type": "string", "nullable": True}},
    },
    "MachineList": {
        "type": "object", "required": ["machine_list"], "additionalProperties": False,
        "properties": {"machine_list": {"type": "array", "items": {"type": "string"}}},
    },
    "StatItem": {
        "type": "object", "required": ["name", "time", "data"], "additionalProperties": False,
        "description": "One bucket of one sensor. `min`, `max`, `rms`, `count` are absent for "
                       "rows written by the deployed server.",
        "properties": {
            "name": {"type": "string", "description": "<sensor>_<level>_avg"},
            "time": {"type": "string", "description": "Local bucket start as stored"},
            "data": {"type": "number", "description": "Mean (of |x| for ABS sensor types)"},
            "min": {"type": "number"}, "max": {"type": "number"}, "rms": {"type": "number"},
            "count": {"type": "integer", "minimum": 1},
            **{f: {"type": "integer" if f == "moments_count" else "number", "nullable": True,
                   "description": "Only with fields= (issue 17)"} for f in STAT_FIELDS},
        },
    },
    "AnomalyItem": {
        "type": "object", "required": ["name", "time", "score", "threshold"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "time": {"type": "string"},
                       "score": {"type": "number"}, "threshold": {"type": "number"}},
    },
    "FaultItem": {
        "type": "object", "required": ["name", "time", "score", "threshold", "over"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "time": {"type": "string"},
                       "t": {"type": "number"}, "score": {"type": "number"},
                       "threshold": {"type": "number"}, "over": {"type": "boolean"}},
    },
    "Sensor": {
        "type": "object", "required": ["name", "type"], "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "type": {"type": "string"},
                       "meta": {"type": "object", "nullable": True,
                                "description": "Issue 17: the sensor's effective metadata (rate "
                                               "samples/s, unit, rpm, bearing, bands, group, "
                                               "foundation; only the known ones) and `sources` "
                                               "(config, daq, inferred or type per field); null "
                                               "before its first data.",
                                "properties": {"rate": {"type": "number"}, "unit": {"type": "string"},
                                               "rpm": {"type": "number"},
                                               "sources": {"type": "object"}}}},
    },
    "Spectrum": {
        "type": "object", "description": _AMPLITUDE,
        "required": ["machine", "sensor", "level", "t0", "time", "blocks", "f0", "df", "unit",
                     "amplitude", "convention", "line_count", "lines", "peaks"],
        "properties": {
            "machine": {"type": "string"}, "sensor": {"type": "string"},
            "level": {"type": "string", "enum": ["minute", "hour", "envelope"]},
            "t0": {"type": "integer", "description": "Epoch start of the minute or hour"},
            "utc_offset": {"type": "integer", "nullable": True},
            "time": {"type": "string"}, "blocks": {"type": "integer", "nullable": True},
            "rate": {"type": "number", "nullable": True},
            "f0": {"type": "number"}, "df": {"type": "number"},
            "unit": {"type": "string", "nullable": True},
            "rpm": {"type": "number", "nullable": True},
            "amplitude": {"type": "string", "enum": ["rms"]},
            "convention": {"type": "string", "enum": ["rms"]},
            "amplitude_text": {"type": "string"},
            "line_count": {"type": "integer"},
            "lines": {"type": "array", "items": {"type": "number"}},
            "peaks": {"type": "array", "items": {"type": "array", "items": {"type": "number"}},
                      "description": "[[Hz, rms], …] highest first (tone energy)"},
            "orders": {"type": "object", "nullable": True,
                       "description": "{\"1\": [Hz, rms], …} when the rpm is known"},
        },
    },
    "Waterfall": {
        "type": "object", "description": _AMPLITUDE + " Rows are ascending in time.",
        "required": ["machine", "sensor", "level", "t0", "time", "f0", "df", "unit", "amplitude",
                     "rows"],
        "properties": {
            "machine": {"type": "string"}, "sensor": {"type": "string"},
            "level": {"type": "string"},
            "t0": {"type": "array", "items": {"type": "integer"}},
            "time": {"type": "array", "items": {"type": "string"}},
            "f0": {"type": "number"}, "df": {"type": "number"},
            "unit": {"type": "string", "nullable": True},
            "amplitude": {"type": "string", "enum": ["rms"]},
            "convention": {"type": "string"}, "amplitude_text": {"type": "string"},
            "start": {"type": "number"}, "end": {"type": "number"},
            "rows": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        },
    },
    "Features": {
        "type": "object",
        "required": ["machine", "sensor", "level", "unit", "velocity_unit", "iso10816", "rows"],
        "properties": {
            "machine": {"type": "string"}, "sensor": {"type": "string"},
            "level": {"type": "string"}, "unit": {"type": "string", "nullable": True},
            "velocity_unit": {"type": "string", "enum": ["mm/s"]},
            "amplitude": {"type": "string", "enum": ["rms"]},
            "start": {"type": "number"}, "end": {"type": "number"},
            "iso10816": {"type": "object",
                         "required": ["group", "foundation", "boundaries", "zones", "refusal"],
                         "properties": {
                             "group": {"type": "integer"}, "foundation": {"type": "string"},
                             "band_hz": {"type": "array", "items": {"type": "number"}},
                             "boundaries": {"type": "array", "items": {"type": "number"},
                                            "description": "A/B, B/C, C/D in mm/s RMS"},
                             "zones": {"type": "array", "items": {"type": "object"}},
                             "refusal": {"type": "string", "nullable": True,
                                         "description": "Why this sensor cannot give true "
                                                        "velocity RMS (null when it can)"}}},
            "rows": {"type": "array", "items": {
                "type": "object", "required": ["t0", "velocity_rms"],
                "properties": {"t0": {"type": "integer"}, "time": {"type": "string"},
                               "velocity_rms": {"type": "number", "nullable": True},
                               "features": {"type": "object",
                                            "description": "minute: velocity_rms, bands, peaks, "
                                                           "orders, bearing, iso, notes"}}}},
        },
    },
    "MachineStatus": {
        "type": "object",
        "required": ["machine", "connected", "peer", "connected_since", "disconnected_at",
                     "last_frame", "sensors", "frames", "samples", "faults", "bytes",
                     "refused_frames", "dropped_nonfinite", "dropped_sensors", "dropped_bytes",
                     "paused_seconds", "connects", "takeovers", "frames_per_second"],
        "properties": {
            "machine": {"type": "string"}, "connected": {"type": "boolean"},
            "peer": {"type": "string", "nullable": True},
            "connected_since": _NULLABLE_NUMBER, "disconnected_at": _NULLABLE_NUMBER,
            "last_frame": _NULLABLE_NUMBER,
            "sensors": {"type": "array", "items": _ref("Sensor")},
            "frames": {"type": "integer"}, "samples": {"type": "integer"},
            "faults": {"type": "integer"}, "bytes": {"type": "integer"},
            "refused_frames": {"type": "integer"}, "dropped_nonfinite": {"type": "integer"},
            "dropped_sensors": {"type": "integer"}, "dropped_bytes": {"type": "integer"},
            "paused_seconds": {"type": "number"}, "connects": {"type": "integer"},
            "takeovers": {"type": "integer"}, "frames_per_second": {"type": "number"},
        },
    },
    "Machines": {
        "type": "object", "required": ["machines", "time"], "additionalProperties": False,
        "properties": {"machines": {"type": "array", "items": _ref("MachineStatus")},
                       "time": {"type": "number"}},
    },
    "Notifications": {
        "type": "object", "required": ["enabled", "notifications"], "additionalProperties": False,
        "properties": {"enabled": {"type": "boolean"},
                       "notifications": {"type": "array", "items": {"type": "object"}}},
    },
    "Health": {
        "type": "object", "required": ["ok", "time", "checks"], "additionalProperties": False,
        "properties": {
            "ok": {"type": "boolean"}, "time": {"type": "number"},
            "checks": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}},
        },
    },
    "Alarms": {
        "type": "object", "required": ["enabled", "alarms"], "additionalProperties": False,
        "properties": {"enabled": {"type": "boolean"},
                       "alarms": {"type": "array", "items": {"type": "object"}}},
    },
    "Alarm": {"type": "object", "required": ["id", "rule", "machine", "state"],
              "properties": {"id": {"type": "string"}, "rule": {"type": "string"},
                             "machine": {"type": "string"}, "state": {"type": "string"}}},
    "Index": {
        "type": "object", "required": ["name", "openapi", "routes"], "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "openapi": {"type": "string"},
                       "routes": {"type": "array", "items": {"type": "string"}}},
    },
}


def _get(summary, parameters, ok, description=None, extra=None):
    op = {"summary": summary, "parameters": [copy.deepcopy(_P[p]) for p in parameters],
          "responses": {"200": ok, "401": _UNAUTHORIZED}}
    if parameters:
        op["responses"]["400"] = _ERROR
    if description:
        op["description"] = description
    if extra:
        op["responses"].update(extra)
    return {"get": op}


def _array(name):
    return {"type": "array", "items": _ref(name)}


PATHS = {
    "/": _get("Index of the routes", [], _json(_ref("Index"))),
    "/sio/machineList": _get(
        "Machines whose DAQ is connected now (deployed shape, leading '/')", [],
        _json(_ref("MachineList"))),
    "/stat/machineList": _get(
        "Machines that have a database file", ["format"], _json_or_csv(_ref("MachineList"))),
    "/stat/{level}": _get(
        "Hour, day, month or year statistics of a machine (deployed shape plus extras)",
        ["level", "machine", "start", "end", "align", "fields", "format"],
        _json_or_csv(_array("StatItem")),
        "Every sensor table in creation order, each table's rows by time. NULL rows are never "
        "served; duplicate times are served once (docs/storage.md)."),
    "/stat/minute": _get(
        "Recent minute statistics of a machine", ["machine", "minutes", "align", "fields", "format"],
        _json_or_csv(_array("StatItem"))),
    "/stat/anomaly": _get(
        "Anomalies (score > threshold) of a machine, oldest first",
        ["machine", "start", "end", "format"], _json_or_csv(_array("AnomalyItem"))),
    "/stat/anomaly/all": _get(
        "Anomalies of every machine, newest first", ["start", "end", "format"],
        _json_or_csv(_array("AnomalyItem"))),
    "/stat/faults": _get(
        "Every FaultDetect of a machine (over threshold or not), oldest first",
        ["machine", "start", "end", "format"], _json_or_csv(_array("FaultItem"))),
    "/spectrum": _get(
        "The stored spectrum of a sensor's minute or hour (RMS per line)",
        ["machine", "sensor", "time", "spectrum_level", "format"], _json_or_csv(_ref("Spectrum")),
        _AMPLITUDE + " Minute spectra are kept SPECTRA.MINUTE_DAYS, hours SPECTRA.HOUR_DAYS. "
        "`peaks` and `orders` come from the minute's stored features (the fine spectrum), else "
        "from the lines. CSV: one row per line (frequency_hz, rms).",
        extra={"404": _json(_ref("Error"), "No spectrum stored for this sensor (and time)")}),
    "/spectrum/waterfall": _get(
        "Stored spectra over time, decimated to at most rows × lines",
        ["machine", "sensor", "inst_start", "inst_end", "rows", "lines", "spectrum_level", "format"],
        _json_or_csv(_ref("Waterfall")),
        _AMPLITUDE + " Rows are averaged over power weighted by blocks; adjacent lines' power "
        "is summed, so each column is the RMS of its band and the total RMS is kept."),
    "/features": _get(
        "Velocity RMS (mm/s, ISO 10816-3), band RMS, peaks, orders and bearing tones over time",
        ["machine", "sensor", "inst_start", "inst_end", "features_level", "format"],
        _json_or_csv(_ref("Features")),
        "`iso10816` carries the zone boundaries for the sensor's group and foundation (for "
        "shading) and `refusal`, why the sensor cannot give true velocity RMS (null when it can)."),
    "/machines": _get("Live status of every machine the hub knows", [], _json(_ref("Machines"))),
    "/notifications": _get(
        "Notification history (empty and enabled=false without a notifier)",
        ["opt_start", "opt_end"], _json(_ref("Notifications"))),
    "/alarms": _get("Active server-side alarms", ["opt_machine"], _json(_ref("Alarms"))),
    "/alarms/history": _get(
        "Alarms raised in a local date range (default: the last 30 days)",
        ["opt_machine", "opt_start", "opt_end"], _json(_ref("Alarms")),
        extra={"503": _json(_ref("Error"), "Alarm history unavailable")}),
    "/alarms/{alarm_id}/ack": {"post": {
        "summary": "Acknowledge an active alarm (needs a token when AUTH.API_TOKENS is set)",
        "parameters": [copy.deepcopy(_P["alarm_id"]), copy.deepcopy(_P["by"])],
        "responses": {"200": _json(_ref("Alarm")), "400": _ERROR, "401": _UNAUTHORIZED,
                      "404": _json(_ref("Error"), "No such active alarm")}}},
    "/healthz": _get(
        "Health of the DAQ listener, the database writer and the notifier (no token needed)", [],
        _json(_ref("Health")), extra={"503": _json(_ref("Health"), "Unhealthy")}),
    "/metrics": _get(
        "Prometheus metrics", [],
        {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}),
    "/openapi.json": _get("This document", [], _json({"type": "object", "required": ["openapi", "paths"]})),
}
PATHS["/healthz"]["get"]["security"] = []
del PATHS["/healthz"]["get"]["responses"]["401"]

STATIC_PATHS = frozenset(p for p in PATHS if "{" not in p)


def spec(config=None):
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "tsrmon REST API", "version": "1",
                 "description": "Drop-in replacement of the deployed TSR monitoring server's REST "
                                "API, with fixes and additions (docs/api.md). Input outside what "
                                "is supported (a date outside " + f"{MIN_DATE} … {MAX_DATE}, a "
                                "malformed parameter) is answered 400 with an Error body naming "
                                "the parameter, never 500."},
        "paths": copy.deepcopy(PATHS),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "token": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
        # Tokens are optional (AUTH.API_TOKENS); the empty requirement says so.
        "security": [{}, {"bearer": []}, {"token": []}],
    }
    return doc


def klein_path(rule):
    """A werkzeug rule text → its OpenAPI path (``/stat/<string:level>`` → ``/stat/{level}``)."""
    import re
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)
