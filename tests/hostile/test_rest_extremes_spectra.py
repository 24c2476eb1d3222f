"""REST never answers 500 to input, on the routes added after the first
sweep (issue 17): /spectrum's ``time``, /spectrum/waterfall's and /features'
``start``/``end`` take instants (epoch seconds, ISO date-times, dates), so
their extremes differ from the date routes' (test_rest_extremes.py).  The
database holds real spectra (tests/web/analytics_db.py: ``Fan``/``vib``), so
the served paths run, not only the parsing."""

import math
import re
from datetime import date, timedelta
from urllib.parse import quote

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.hostile.test_rest_extremes import HI, LO, RANGE_TEXT, fetch, in_thread, logged_errors  # noqa: F401
from tests.web.test_analytics_routes import Api
from tests.web.analytics_db import fill

ROUTES = {"/spectrum": ("time",), "/spectrum/waterfall": ("start", "end"), "/features": ("start", "end")}
_PLAIN = re.compile(r"\d{4}-\d{2}-\d{2}$")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    # Filled once (7-9 s): every test here only reads.
    filled = pytest_twisted.blockon(fill(tmp_path_factory.mktemp("spectra")))
    a = Api(filled)
    yield a
    pytest_twisted.blockon(a.close())


def _instants():
    day = st.one_of(st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)),
                    st.sampled_from([LO, HI, LO - timedelta(days=1), HI + timedelta(days=1),
                                     date(1, 1, 1), date(9999, 12, 31), date(2026, 12, 7)]))
    plain = day.map(date.isoformat)
    offsets = st.sampled_from(["", "Z", "+14:00", "-12:00", "+09:00"])
    clock = st.sampled_from(["00:00", "10:00:30", "23:59:59.999999", "12:00"])
    dated = st.tuples(day, clock, offsets).map(lambda t: f"{t[0].isoformat()}T{t[1]}{t[2]}")
    seconds = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-2**70, 2**70).map(str),
        st.sampled_from(["0", "-1", "1796600000", "253402300799", "253402300800", "-62135596800",
                         "1e400", "-1e400", "nan", "inf", "1_000", " 5 "]))
    junk = st.one_of(st.text(max_size=30), st.sampled_from(["", "10000-01-01", "2026-02-30",
                                                            "2026-12-07T25:00", "%00"]))
    return st.one_of(plain, dated, dated, seconds, junk)


def _finite_seconds(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=st.sampled_from(sorted(ROUTES)), data=st.data(),
       level=st.sampled_from([None, "minute", "hour", "envelope", "year"]),
       fmt=st.sampled_from([None, "json", "csv"]),
       rows=st.sampled_from([None, "1", "120", "0", "100000", "x"]))
def check_instants(api, route, data, level, fmt, rows):
    given_ = {name: data.draw(st.one_of(st.none(), _instants()), label=name) for name in ROUTES[route]}
    query = ["machine=Fan", "sensor=vib"]
    query += [f"{k}={quote(v, safe='')}" for k, v in given_.items() if v is not None]
    for key, value in (("level", level), ("format", fmt), ("rows", rows)):
        if value is not None and (key != "rows" or route == "/spectrum/waterfall"):
            query.append(f"{key}={value}")
    code, body = fetch(api, route + "?" + "&".join(query))
    assert code in (200, 400, 404), (route, query, code, body)
    if code == 400:
        assert set(body) == {"error", "parameter"} and body["parameter"], body
    for name, text in given_.items():
        if text is None:
            continue
        if _PLAIN.match(text.strip()):
            day = date.fromisoformat(text.strip()) if _valid_day(text.strip()) else None
            if day is not None and not LO <= day <= HI:
                assert code == 400, (route, query, body)
                if body["parameter"] == name:
                    assert RANGE_TEXT in body["error"]
        elif _finite_seconds(text) is None and text.strip().lower().lstrip("+-") in ("nan", "inf", "1e400"):
            assert code == 400, (route, query, body)


def _valid_day(text):
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_instants_on_the_spectra_routes_never_500(api, logged_errors):  # noqa: F811
    await in_thread(check_instants, api)
    assert logged_errors == []


@pytest.mark.parametrize("path", [
    "/spectrum?machine=Fan&sensor=vib&time=9999-12-31",
    "/spectrum?machine=Fan&sensor=vib&time=1e400",
    "/spectrum/waterfall?machine=Fan&sensor=vib&start=0001-01-01&end=2026-12-07",
    "/spectrum/waterfall?machine=Fan&sensor=vib&end=9999-12-31T23:59:59%2B14:00",
    "/features?machine=Fan&sensor=vib&start=-62135596800",
    "/features?machine=Fan&sensor=vib&end=253402300800&level=hour",
])
@pytest_twisted.ensureDeferred
async def test_spectra_extremes_are_400(api, logged_errors, path):  # noqa: F811
    from tests.hostile.test_rest_extremes import afetch
    code, body = await afetch(api, path)
    assert code == 400 and body["parameter"] in ("time", "start", "end"), (path, body)
    assert logged_errors == []


@pytest_twisted.ensureDeferred
async def test_the_last_supported_instants_are_served(api):
    from tests.hostile.test_rest_extremes import afetch
    for path in ("/spectrum/waterfall?machine=Fan&sensor=vib&start=1970-01-01&end=9998-12-31",
                 "/features?machine=Fan&sensor=vib&start=1970-01-01&end=9998-12-31&level=hour"):
        code, body = await afetch(api, path)
        assert code == 200, (path, body)
    code, body = await afetch(api, "/features?machine=Fan&sensor=vib&start=1970-01-01&end=9998-12-31")
    assert code == 200 and body["rows"], body  # the stored minutes are inside the widest range
