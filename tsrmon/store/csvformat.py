"""Turning buffered samples into raw CSV rows (``<time>,<value>\\r\\n``).

This is the known hot spot of the raw log, so it is built around one C call:
``orjson.dumps`` of a list of floats writes the shortest text that parses
back to the same float (like ``repr``) at about 20x the speed of a
``repr``-join (numbers: ``bench/csv_format.py``).  The brackets are cut off
and every ``,`` becomes ``\\r\\n<time>,``: one ``replace`` call per group of
samples that share a time label.

Spelling differs from Python's ``repr`` (what the deployed server wrote)
only for very small magnitudes, and every spelling parses back to the
identical float (tests check bit-exact round trips, -0.0 included).  With
orjson 3.13: numbers in ``[1e-5, 1e-4)`` are written positionally
(``0.00001``, repr ``1e-05``) and negative exponents have no leading zero
(``1e-7``, repr ``1e-07``); ``1.0``, ``0.1`` and ``1e+16`` are as repr.
Vibration data in g rarely reaches those magnitudes.  We keep orjson's
spelling rather than rewriting it: a fix-up pass would cost more than the
formatting, and CSV readers (Python, pandas, Excel) parse both.
"""

import datetime
import math

import numpy as np
import orjson

HEADER = b"time,data\r\n"
TIME_FORMATS = ("hms", "iso")

# One orjson call formats at most this many values, so the writer thread
# never holds the GIL (the reactor) for long in a single C call.
MAX_GROUP = 4096

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


ARRAY_TAG = "<f8"


def pack_array(values):
    """An array of samples for ``marshal`` (to the worker process):
    ``(ARRAY_TAG, little-endian float64 bytes)``, or a list when not numeric."""
    try:
        return (ARRAY_TAG, np.asarray(values, dtype="<f8").tobytes())
    except (TypeError, ValueError):
        return [float(x) for x in values]


def unpack_values(values):
    """The inverse of :func:`pack_array` (in the worker)."""
    if type(values) is tuple and len(values) == 2 and values[0] == ARRAY_TAG:
        return np.frombuffer(values[1], dtype="<f8")
    return values


def format_values(prefix, values, out):
    """Append to ``out`` the rows ``prefix + value + CRLF``; return how many
    values were unusable.

    The rows go into ``out`` as up to three pieces (bytes or a memoryview,
    ready for one ``b"".join``) so the formatted text is copied only once
    more, when the file's rows are joined for the write.

    ``prefix`` is the time label with its comma (``b"12:34:56,"``).  Plain
    finite numbers take the fast path; anything else (NaN and infinities,
    which JSON writes as ``null``, or a non-number) goes the slow way: a
    number is written with ``repr`` (``nan``, ``inf``), a non-number is
    dropped and counted.
    """
    try:
        text = orjson.dumps(values, option=_OPTIONS)
    except TypeError:
        return _format_slowly(prefix, values, out)
    # Only plain numbers may take the fast path.  JSON spells everything else
    # with a byte no number has: null (NaN, infinities), true/false, a
    # string, a nested list or mapping.  Each test is a memchr: next to free.
    if (b"l" in text or b"t" in text or b'"' in text or b"{" in text
            or text.find(b"[", 1) != -1 or len(text) < 3):
        return _format_slowly(prefix, values, out)
    out.append(prefix)
    out.append(memoryview(text.replace(b",", b"\r\n" + prefix))[1:-1])
    out.append(b"\r\n")
    return 0


def _format_slowly(prefix, values, out):
    rows = []
    bad = 0
    dumps = orjson.dumps
    isfinite = math.isfinite
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError, OverflowError):
            bad += 1
            continue
        # The fast path's spelling for numbers, repr's for nan and inf.
        rows.append(prefix + (dumps(f) if isfinite(f) else repr(f).encode("ascii")) + b"\r\n")
    out.append(b"".join(rows))
    return bad


class TimeLabels:
    """Local date and row label for a time, cached for the last second.

    ``hms``: ``HH:MM:SS`` (the deployed layout: local time, whole seconds).
    ``iso``: ``YYYY-MM-DDTHH:MM:SS.mmm+HH:MM`` (local time with milliseconds
    and the UTC offset, so the repeated hour of a DST fall-back is clear).
    """

    def __init__(self, tz, time_format):
        if time_format not in TIME_FORMATS:
            raise ValueError(f"unknown DATA.TIME_FORMAT {time_format!r}")
        self.tz = tz
        self.time_format = time_format
        self._sec = None
        self._day = None
        self._label = None  # hms: b"HH:MM:SS,"; iso: ("YYYY-MM-DDTHH:MM:SS", "+09:00")

    def _second(self, sec):
        if sec != self._sec:
            local = datetime.datetime.fromtimestamp(sec, self.tz)
            self._day = local.strftime("%Y%m%d")
            if self.time_format == "hms":
                self._label = local.strftime("%H:%M:%S,").encode("ascii")
            else:
                text = local.isoformat(timespec="seconds")
                self._label = (text[:19], text[19:])
            self._sec = sec

    def day(self, t):
        """Local ``YYYYMMDD`` of ``t`` (seconds since the epoch)."""
        self._second(math.floor(t))
        return self._day


def render(entries, labels):
    """Format ``[(t, values), ...]`` of one sensor into rows per local day.

    Returns ``({day: [rows, [bytes, ...]]}, rows, bad)``.  Consecutive entries with
    the same time label (the same second for ``hms``, millisecond for
    ``iso``) are joined so one ``orjson`` call covers many frames.
    """
    if labels.time_format == "hms":
        return _render_hms(entries, labels)
    return _render_iso(entries, labels)


def _render_hms(entries, labels):
    by_day = {}
    rows = 0
    bad = 0
    floor = math.floor
    cur = None
    group = []

    def emit():
        nonlocal rows, bad
        labels._second(cur)
        day = by_day.get(labels._day)
        if day is None:
            day = by_day[labels._day] = [0, []]
        b = format_values(labels._label, group, day[1])
        day[0] += len(group) - b
        rows += len(group) - b
        bad += b

    for t, values in entries:
        sec = floor(t)
        if sec != cur or len(group) >= MAX_GROUP:
            if group:
                emit()
            cur = sec
            group = list(values)
        else:
            group.extend(values)
    if group:
        emit()
    return by_day, rows, bad


def _render_iso(entries, labels):
    by_day = {}
    rows = 0
    bad = 0
    floor = math.floor
    cur = None
    group = []

    def emit():
        nonlocal rows, bad
        sec, ms = divmod(cur, 1000)
        labels._second(sec)
        base, offset = labels._label
        day = by_day.get(labels._day)
        if day is None:
            day = by_day[labels._day] = [0, []]
        b = format_values(f"{base}.{ms:03d}{offset},".encode("ascii"), group, day[1])
        day[0] += len(group) - b
        rows += len(group) - b
        bad += b

    for t, values in entries:
        ms = floor(t * 1000.0)
        if ms != cur or len(group) >= MAX_GROUP:
            if group:
                emit()
            cur = ms
            group = list(values)
        else:
            group.extend(values)
    if group:
        emit()
    return by_day, rows, bad
