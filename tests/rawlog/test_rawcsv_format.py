"""Row formatting of the raw CSV log (tsrmon.rawlog.rows)."""

import datetime
import math
import struct
import sys
import zoneinfo

from hypothesis import given, settings
from hypothesis import strategies as st

from tsrmon.rawlog import rows as csvformat

SEOUL = zoneinfo.ZoneInfo("Asia/Seoul")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")

AWKWARD = [
    0.0, -0.0, 1.0, -1.0, 0.1, 1 / 3, 1e-5, 2.5e-5, 1e-7, 1e16, -1e22, 1e300,
    5e-324, -5e-324, 2.2250738585072014e-308, sys.float_info.max, -sys.float_info.max,
    sys.float_info.min, 123456789012345680.0, 9007199254740993.0, 0.30000000000000004,
]


def rows_of(values, prefix=b"12:34:56,"):
    out = []
    bad = csvformat.format_values(prefix, values, out)
    return b"".join(out), bad


def parse(text, prefix=b"12:34:56,"):
    lines = text.split(b"\r\n")
    assert lines[-1] == b""
    out = []
    for line in lines[:-1]:
        assert line.startswith(prefix)
        out.append(float(line[len(prefix):].decode("ascii")))
    return out


def bits(values):
    return struct.pack(f"<{len(values)}d", *values)


def test_rows_are_prefix_value_crlf():
    text, bad = rows_of([0.5, -1.25, 3.0])
    assert bad == 0
    assert text == b"12:34:56,0.5\r\n12:34:56,-1.25\r\n12:34:56,3.0\r\n"


def test_awkward_floats_round_trip_bit_exact():
    text, bad = rows_of(AWKWARD)
    assert bad == 0
    assert bits(parse(text)) == bits(AWKWARD)  # -0.0 stays -0.0
    assert b"\n" not in text.replace(b"\r\n", b"")


def test_spelling_is_a_plain_decimal_number_like_repr():
    # Plain JSON number grammar, always with a '.' or an exponent (1.0, not
    # 1), as the deployed repr.  The exact small-number spelling depends on
    # the orjson version (3.13: 0.00001, 1e-7, 1e+16); all parse the same.
    import re

    number = re.compile(rb"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
    values = [1e-05, 1e-07, 1e16, 0.25, 1e-4, 1.0, -3.0, 0.0, 12345678.9]
    text, _ = rows_of(values)
    written = [line.split(b",")[1] for line in text.split(b"\r\n")[:-1]]
    for w, v in zip(written, values):
        assert number.fullmatch(w), w
        assert b"." in w or b"e" in w, w
        assert float(w) == v
    assert written[3:] == [b"0.25", b"0.0001", b"1.0", b"-3.0", b"0.0", b"12345678.9"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_any_finite_float_round_trips(values):
    text, bad = rows_of(values)
    assert bad == 0
    assert bits(parse(text)) == bits(values)


def test_non_finite_and_non_numbers_take_the_slow_path():
    text, bad = rows_of([1.5, math.nan, math.inf, "x", None, 2])
    assert bad == 2  # "x" and None
    assert text == b"12:34:56,1.5\r\n12:34:56,nan\r\n12:34:56,inf\r\n12:34:56,2.0\r\n"
    text, bad = rows_of([[1.0, 2.0]])
    assert bad == 1 and text == b""


def test_ints_and_tuples_are_numbers_too():
    text, bad = rows_of((1, 2.5, True))
    assert bad == 0
    assert parse(text) == [1.0, 2.5, 1.0]


def test_numpy_arrays_format_like_lists():
    import numpy as np
    arr = np.array([0.1, -0.0, 1e-300])
    text, bad = rows_of(arr)
    assert bad == 0
    assert bits(parse(text)) == bits(arr.tolist())


def epoch(zone, *args):
    return datetime.datetime(*args, tzinfo=zone).timestamp()


def test_hms_groups_a_second_and_splits_days_at_local_midnight():
    labels = csvformat.TimeLabels(SEOUL, "hms")
    t = epoch(SEOUL, 2026, 11, 26, 23, 59, 59)
    entries = [(t + 0.1, [1.0, 2.0]), (t + 0.9, [3.0]), (t + 1.0, [4.0]), (t + 1.5, [5.0])]
    by_day, rows, bad = csvformat.render(entries, labels)
    assert rows == 5 and bad == 0
    assert sorted(by_day) == ["20261126", "20261127"]
    assert by_day["20261126"][0] == 3
    assert b"".join(by_day["20261126"][1]) == b"23:59:59,1.0\r\n23:59:59,2.0\r\n23:59:59,3.0\r\n"
    assert b"".join(by_day["20261127"][1]) == b"00:00:00,4.0\r\n00:00:00,5.0\r\n"


def test_iso_labels_have_milliseconds_and_offset():
    labels = csvformat.TimeLabels(BERLIN, "iso")
    t = epoch(BERLIN, 2026, 7, 1, 12, 0, 0)
    by_day, rows, _ = csvformat.render([(t + 0.1234, [1.0]), (t + 0.1236, [2.0]), (t + 0.5, [3.0])], labels)
    assert rows == 3
    assert b"".join(by_day["20260701"][1]) == (
        b"2026-07-01T12:00:00.123+02:00,1.0\r\n"
        b"2026-07-01T12:00:00.123+02:00,2.0\r\n"
        b"2026-07-01T12:00:00.500+02:00,3.0\r\n")


def test_iso_tells_the_repeated_fall_back_hour_apart():
    labels = csvformat.TimeLabels(BERLIN, "iso")
    # 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice.
    first = datetime.datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=0).timestamp()
    second = datetime.datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=1).timestamp()
    assert second - first == 3600
    by_day, _, _ = csvformat.render([(first, [1.0]), (second, [2.0])], labels)
    assert b"".join(by_day["20261025"][1]) == (
        b"2026-10-25T02:30:00.000+02:00,1.0\r\n2026-10-25T02:30:00.000+01:00,2.0\r\n")


def test_large_groups_are_split_but_rows_stay_in_order():
    labels = csvformat.TimeLabels(SEOUL, "hms")
    t = epoch(SEOUL, 2026, 1, 2, 3, 4, 5)
    values = [float(i) for i in range(30)]
    entries = [(t + i * 1e-4, values) for i in range(csvformat.MAX_GROUP // 10)]
    by_day, rows, _ = csvformat.render(entries, labels)
    text = b"".join(by_day["20260102"][1])
    assert rows == len(entries) * 30
    assert parse(text, b"03:04:05,") == values * len(entries)
