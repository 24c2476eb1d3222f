"""Calendar buckets (minute, hour, day, month, year) in one IANA zone.

A bucket is named by its start: ``t0`` (epoch seconds), the zone's UTC
offset at ``t0`` and the deployed local ``time`` text.  Days start at local
midnight, so a DST day is 23 or 25 hours long; the repeated hour of a
fall-back gives two hour buckets with the same text and different ``t0`` /
``utc_offset``.  Minutes nest in hours, hours in days and so on (zones have
offsets in whole quarter hours), so a minute bucket decides all the others:
:meth:`Calendar.levels_of_minute` maps a minute start to its five buckets.
"""

import datetime
import zoneinfo

LEVELS = ("minute", "hour", "day", "month", "year")


class Bucket(tuple):
    """``(level, t0, utc_offset, time_text)``."""

    __slots__ = ()

    def __new__(cls, level, t0, utc_offset, time_text):
        return tuple.__new__(cls, (level, t0, utc_offset, time_text))

    level = property(lambda self: self[0])
    t0 = property(lambda self: self[1])
    utc_offset = property(lambda self: self[2])
    time = property(lambda self: self[3])


def _offset(local):
    return int(local.utcoffset().total_seconds())


class Calendar:
    """Bucket arithmetic for one zone, with a small cache per minute."""

    def __init__(self, zone):
        self.zone_name = zone
        self.tz = zoneinfo.ZoneInfo(zone)
        self._by_minute = {}

    def local(self, t):
        return datetime.datetime.fromtimestamp(t, self.tz)

    def _start(self, naive, fold=0):
        """The first instant of the bucket that starts at local ``naive``.

        ``fold`` picks the occurrence of an ambiguous start (0: the first).
        A start inside a gap does not exist: the bucket starts where the gap
        ends.  Mapped with the offset before the gap, a start the gap ends
        right at (Havana skipping midnight) lands there; one whose gap began
        earlier (St John's sprang from 00:01 to 01:01 until 2011, so 01:00
        never was) lands past it, and is walked back minute by minute (a gap
        is at most a few hours).
        """
        t = int(naive.replace(tzinfo=self.tz, fold=fold).timestamp())
        if self.local(t).replace(tzinfo=None) != naive:
            while self.local(t - 60).replace(tzinfo=None) >= naive:
                t -= 60
        return t

    def minute_start(self, t):
        """Start of the local minute holding ``t`` (epoch seconds, int)."""
        # Offsets are whole minutes, so local minutes are UTC minutes.
        return int(t // 60) * 60

    def bucket(self, level, t):
        """The :class:`Bucket` of ``level`` holding instant ``t``."""
        return self.levels_of_minute(self.minute_start(t))[LEVELS.index(level)]

    def levels_of_minute(self, m0):
        """The five buckets (minute..year) of the minute starting at ``m0``."""
        got = self._by_minute.get(m0)
        if got is not None:
            return got
        loc = self.local(m0)
        minute = Bucket("minute", m0, _offset(loc), loc.strftime("%Y-%m-%d %H:%M:00"))
        # The hour keeps the minute's fold: the two 02:00 hours of a
        # fall-back get their own t0.
        h0 = self._start(datetime.datetime(loc.year, loc.month, loc.day, loc.hour), loc.fold)
        hour = Bucket("hour", h0, _offset(self.local(h0)), loc.strftime("%Y-%m-%d %H:00:00"))
        d0 = self._start(datetime.datetime(loc.year, loc.month, loc.day))
        day = Bucket("day", d0, _offset(self.local(d0)), loc.strftime("%Y-%m-%d 00:00:00"))
        mo0 = self._start(datetime.datetime(loc.year, loc.month, 1))
        month = Bucket("month", mo0, _offset(self.local(mo0)), loc.strftime("%Y-%m-01 00:00:00"))
        y0 = self._start(datetime.datetime(loc.year, 1, 1))
        year = Bucket("year", y0, _offset(self.local(y0)), loc.strftime("%Y-01-01 00:00:00"))
        got = (minute, hour, day, month, year)
        if len(self._by_minute) > 4096:
            self._by_minute.clear()
        self._by_minute[m0] = got
        return got

    def day_range(self, date):
        """``(t_start, t_end)`` of a local calendar date (``datetime.date``)."""
        nxt = date + datetime.timedelta(days=1)
        return (self._start(datetime.datetime(date.year, date.month, date.day)),
                self._start(datetime.datetime(nxt.year, nxt.month, nxt.day)))

    def month_range(self, year, month):
        ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
        return (self._start(datetime.datetime(year, month, 1)),
                self._start(datetime.datetime(ny, nm, 1)))

    def year_range(self, year):
        return (self._start(datetime.datetime(year, 1, 1)),
                self._start(datetime.datetime(year + 1, 1, 1)))

    def text(self, t):
        """Deployed timestamp text for an instant: ``YYYY-MM-DD HH:MM:SS[.ffffff]``
        (Python's default sqlite3 datetime adapter, local naive)."""
        return self.local(t).replace(tzinfo=None).isoformat(" ")
