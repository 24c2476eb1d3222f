"""Turning buffered samples into raw CSV rows (``<time>,<value>\\r\\n``).

Samples arrive as columns (:mod:`tsrmon.rawlog.buffers`: frame times, frame
sample counts, all samples as one float64 array); :func:`render_columns`
cuts them where the time label changes and formats each run straight from
the array, so no Python float is made per sample here either.

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

from tsrmon.rawlog.buffers import columns_of_entries

HEADER = b"time,data\r\n"
TIME_FORMATS = ("hms", "iso")

# One orjson call formats at most this many values, so the writer thread
# never holds the GIL (the reactor) for long in a single C call.
MAX_GROUP = 4096

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


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
    """Format ``[(t, values), ...]`` of one sensor into rows per local day
    (values that are not numbers are dropped and counted): see
    :func:`render_columns`."""
    columns, dropped = columns_of_entries(entries)
    by_day, rows, bad = render_columns(*columns, labels)
    return by_day, rows, bad + dropped


def render_columns(times, counts, data, labels):
    """Format one sensor's frames into rows per local day.

    ``times`` (float seconds) and ``counts`` (samples) have one entry per
    frame; ``data`` holds the samples of every frame back to back.  Returns
    ``({day: [rows, [bytes, ...]]}, rows, bad)``.  Consecutive frames with
    the same time label (the same second for ``hms``, millisecond for
    ``iso``) form one run, formatted in pieces of at most :data:`MAX_GROUP`
    values (one ``orjson`` call each), in order.
    """
    by_day = {}
    rows = 0
    bad = 0
    n = len(times)
    if not n:
        return by_day, rows, bad
    times = np.asarray(times, dtype=np.float64)
    data = np.asarray(data, dtype=np.float64)  # slices must be arrays for orjson
    iso = labels.time_format == "iso"
    keys = np.floor(times * 1000.0 if iso else times)
    ends = np.cumsum(np.asarray(counts, dtype=np.int64)).tolist()
    change = (np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist()
    keys = keys.tolist()
    first = 0
    for last in change + [n]:
        lo = ends[first - 1] if first else 0
        hi = ends[last - 1]
        key = int(keys[first])
        first = last
        if hi <= lo:
            continue
        if iso:
            sec, ms = divmod(key, 1000)
            labels._second(sec)
            base, offset = labels._label
            prefix = f"{base}.{ms:03d}{offset},".encode("ascii")
        else:
            labels._second(key)
            prefix = labels._label
        day = by_day.get(labels._day)
        if day is None:
            day = by_day[labels._day] = [0, []]
        for g in range(lo, hi, MAX_GROUP):
            piece = data[g:min(g + MAX_GROUP, hi)]
            b = format_values(prefix, piece, day[1])
            day[0] += len(piece) - b
            rows += len(piece) - b
            bad += b
    return by_day, rows, bad
