"""Calendar buckets: every instant lies in a bucket that starts at the first
instant of its local label, in zones with odd DST rules too."""

import datetime
import zoneinfo

from hypothesis import given, settings
from hypothesis import strategies as st

from tsrmon.stats.calendar import LEVELS, Calendar

ZONES = ["Europe/Berlin", "Asia/Seoul", "America/Havana",  # Havana: DST at midnight
         "Asia/Kolkata", "America/St_Johns", "UTC"]
FORMATS = {"minute": "%Y-%m-%d %H:%M:00", "hour": "%Y-%m-%d %H:00:00",
           "day": "%Y-%m-%d 00:00:00", "month": "%Y-%m-01 00:00:00", "year": "%Y-01-01 00:00:00"}
CALENDARS = {z: Calendar(z) for z in ZONES}


@settings(max_examples=300, deadline=None)
@given(zone=st.sampled_from(ZONES), t=st.integers(946684800, 2208988800))
def test_bucket_holds_instant_and_starts_at_its_label(zone, t):
    cal = CALENDARS[zone]
    tz = zoneinfo.ZoneInfo(zone)
    local = datetime.datetime.fromtimestamp(t, tz)
    for level in LEVELS:
        b = cal.bucket(level, t)
        assert b.level == level
        assert b.t0 <= t
        start = datetime.datetime.fromtimestamp(b.t0, tz)
        assert start.strftime(FORMATS[level]) == b.time == local.strftime(FORMATS[level])
        assert int(start.utcoffset().total_seconds()) == b.utc_offset
        before = datetime.datetime.fromtimestamp(b.t0 - 1, tz)
        same_label = before.strftime(FORMATS[level]) == b.time
        # Only the repeated hour of a fall-back has the same label just before
        # its start, with another offset.
        assert not same_label or (level in ("minute", "hour")
                                  and int(before.utcoffset().total_seconds()) != b.utc_offset)


def test_st_johns_hour_that_began_in_a_gap_starts_at_its_first_minute():
    # 2009-03-08 in St John's: 00:01 NST jumped to 01:01 NDT, so 01:00 never
    # happened (hypothesis found it).  The 01 hour starts at 01:01 NDT.
    cal = CALENDARS["America/St_Johns"]
    t = 1236483060  # 01:01 NDT
    b = cal.bucket("hour", t)
    assert (b.t0, b.utc_offset, b.time) == (t, -9000, "2009-03-08 01:00:00")
    assert cal.bucket("hour", t + 59 * 60 - 1).t0 == t
    assert cal.bucket("hour", t - 60).time == "2009-03-08 00:00:00"


def test_havana_day_without_midnight_starts_at_one():
    cal = Calendar("America/Havana")
    start, end = cal.day_range(datetime.date(2026, 3, 8))  # 00:00 -> 01:00
    tz = zoneinfo.ZoneInfo("America/Havana")
    assert datetime.datetime.fromtimestamp(start, tz).strftime("%H:%M") == "01:00"
    assert end - start == 23 * 3600


def test_day_month_year_ranges_follow_dst():
    cal = Calendar("Europe/Berlin")
    s, e = cal.day_range(datetime.date(2026, 3, 29))
    assert e - s == 23 * 3600
    s, e = cal.day_range(datetime.date(2026, 10, 25))
    assert e - s == 25 * 3600
    s, e = cal.month_range(2026, 12)
    assert (s, e) == (cal.year_range(2026)[1] - 31 * 86400, cal.year_range(2027)[0])
    assert cal.text(1795694834.4694679) == "2026-11-26 13:07:14.469468"
    assert cal.text(1795694834.0) == "2026-11-26 13:07:14"
