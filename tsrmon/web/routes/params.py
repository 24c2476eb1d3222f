"""Request parsing and validation shared by every REST route: one reading of
a machine, a sensor, a date, an instant, a range, a format…, and one 400
answer (:class:`BadParameter`) when a parameter is wrong."""

import math
import re
from datetime import date, datetime, time as dtime, timedelta
from zoneinfo import ZoneInfo

from tsrmon.names import name_problem
from tsrmon.peerlog import peer_text
from tsrmon.web import openapi

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}$")
DEFAULT_NOTIFICATION_DAYS = 30
# Issue 17: the opt-in statistics of /stat/<level>?fields=… (the reader's
# moment_stats row keys).
STAT_FIELDS = openapi.STAT_FIELDS
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


class Params:
    """Parameter readers of the route classes (mixed into ``RestAPI``, which
    has ``config`` and ``clock``); each raises :class:`BadParameter`."""

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
        name = self.config.app.machine_aliases.get(name, name)
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

    def _zone(self):
        return ZoneInfo(self.config.time.zone)

    def _today(self):
        return datetime.fromtimestamp(self.clock.seconds(), self._zone()).date()

    def _epoch(self, day):
        """Local midnight of ``day`` as epoch seconds."""
        return datetime.combine(day, dtime(0), self._zone()).timestamp()

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

    def _time_text(self, t):
        return datetime.fromtimestamp(t, self._zone()).strftime("%Y-%m-%d %H:%M:%S")

    def _opt_machine(self, request):
        """A machine, or None when the parameter is absent."""
        return None if self._arg(request, "machine") is None else self._machine(request)
