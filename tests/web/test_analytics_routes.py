"""Issue 17 REST: /stat/<level>?fields=, /spectrum, /spectrum/waterfall,
/features and the sensor metadata in /machines, on a database filled through
the real statistics, spectra room and store (tests/web/analytics_db.py):
a 1 g 50 Hz tone at 25.6 kHz."""

import csv
import io
import math

import orjson
import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.web.server import Site

from tests.web.analytics_db import RATE, VELOCITY, fill
from tsrmon.analytics import iso10816
from tsrmon.reader.sqlite_reader import SQLiteReader
from tsrmon.web.rest import RestAPI

DAY = "2026-12-07"
LEGACY_KEYS = {"name", "time", "data", "min", "max", "rms", "count"}


class Api:
    def __init__(self, filled):
        self.filled = filled
        self.reader = SQLiteReader(filled.cfg, reactor)
        self.reader.warm_hour_cache = False
        self.reader.startService()
        self.api = RestAPI(filled.cfg, filled.clock, filled.hub, self.reader, catalog=filled.catalog)
        self.port = reactor.listenTCP(0, Site(self.api.resource()), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    @defer.inlineCallbacks
    def get(self, path, status=200):
        r = yield treq.get(self.url + path, persistent=False)
        body = yield r.content()
        assert r.code == status, (path, r.code, body[:400])
        return r, body

    @defer.inlineCallbacks
    def json(self, path, status=200):
        r, body = yield self.get(path, status)
        assert r.headers.getRawHeaders("content-type")[0].startswith("application/json")
        return orjson.loads(body)

    @defer.inlineCallbacks
    def close(self):
        yield self.port.stopListening()
        yield self.reader.stopService()


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    # Filled once for the module (about 1-2 s of real statistics and spectra):
    # every test only reads it, through a reader and a port of its own.
    return pytest_twisted.blockon(fill(tmp_path_factory.mktemp("analytics")))


@pytest.fixture
def api(filled):
    a = Api(filled)
    yield a
    pytest_twisted.blockon(a.close())


@pytest_twisted.inlineCallbacks
def test_stat_fields_add_moments_and_default_answers_keep_their_bytes(api):
    for level in ("hour", "day", "month", "year"):
        base = f"/stat/{level}?machine=Fan&start=2026-01-01&end=2026-12-31"
        _, plain = yield api.get(base)
        items = orjson.loads(plain)
        assert {i["name"] for i in items} == {f"vib_{level}_avg", f"temp_{level}_avg"}
        # Without fields= the deployed shape: no new key in any row.
        assert all(set(i) <= LEGACY_KEYS for i in items)
        rich = yield api.json(base + "&fields=skewness,kurtosis,peak,peak_to_peak,crest,moments_count")
        # The same rows, in the same order, with the same legacy values: the
        # bytes of the plain answer are the rich one with the extras removed.
        stripped = [{k: v for k, v in i.items() if k in LEGACY_KEYS} for i in rich]
        assert orjson.dumps(stripped) == plain
        vib = [i for i in rich if i["name"].startswith("vib")]
        assert len(vib) == 1
        v = vib[0]
        # 130 s of a 1 g sine: crest √2, kurtosis 1.5, peak 1, peak-to-peak 2.
        assert v["moments_count"] == 130 * RATE
        assert v["kurtosis"] == pytest.approx(1.5, abs=1e-6)
        assert v["skewness"] == pytest.approx(0.0, abs=1e-6)
        assert v["crest"] == pytest.approx(math.sqrt(2), rel=1e-6)
        assert v["peak"] == pytest.approx(1.0, rel=1e-6)
        assert v["peak_to_peak"] == pytest.approx(2.0, rel=1e-6)
        assert v["rms"] == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    # CSV: the legacy columns first, then the asked ones.
    r, body = yield api.get(f"/stat/hour?machine=Fan&start={DAY}&end={DAY}&format=csv&fields=kurtosis,crest")
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["name", "time", "data", "min", "max", "rms", "count", "kurtosis", "crest"]
    vib = [row for row in rows[1:] if row[0] == "vib_hour_avg"][0]
    assert float(vib[7]) == pytest.approx(1.5, abs=1e-6) and float(vib[8]) == pytest.approx(math.sqrt(2))
    _, plain_csv = yield api.get(f"/stat/hour?machine=Fan&start={DAY}&end={DAY}&format=csv")
    assert plain_csv.decode().splitlines()[0] == "name,time,data,min,max,rms,count"
    assert [line.rsplit(",", 2)[0] for line in body.decode().splitlines()[1:]] == \
        plain_csv.decode().splitlines()[1:]


@pytest_twisted.inlineCallbacks
def test_stat_fields_refuses_unknown_and_empty_fields(api):
    for bad in ("bogus", "kurtosis,nope", ",", ""):
        err = yield api.json(f"/stat/hour?machine=Fan&start={DAY}&end={DAY}&fields={bad}", 400)
        assert err["parameter"] == "fields" if bad else True


@pytest_twisted.inlineCallbacks
def test_spectrum_of_a_50_hz_tone_is_rms_per_line(api):
    start = api.filled.start
    spec = yield api.json(f"/spectrum?machine=Fan&sensor=vib&time={start + 90}")
    assert spec["t0"] == start + 60 and spec["level"] == "minute"
    assert spec["amplitude"] == "rms" and spec["convention"] == "rms" and spec["unit"] == "g"
    assert spec["line_count"] == len(spec["lines"]) == 1600
    assert spec["df"] == pytest.approx(RATE / 2.56 / 1600)
    f, a = spec["peaks"][0]
    assert f == pytest.approx(50.0, abs=spec["df"])
    assert a == pytest.approx(1 / math.sqrt(2), rel=1e-3)         # A/√2, not A
    assert spec["orders"]["1"][0] == pytest.approx(25.0, abs=spec["df"])   # 1500 r/min
    # The newest minute by default; an ISO local time names the same minute.
    newest = yield api.json("/spectrum?machine=Fan&sensor=vib")
    assert newest["t0"] == start + 120
    same = yield api.json("/spectrum?machine=Fan&sensor=vib&time=2026-12-07T10:01:30")
    assert same["t0"] == start + 60
    hour = yield api.json("/spectrum?machine=Fan&sensor=vib&level=hour&time=2026-12-07T10:30")
    assert hour["t0"] == start and hour["peaks"][0][0] == pytest.approx(50.0, abs=hour["df"])
    env = yield api.json("/spectrum?machine=Fan&sensor=vib&level=envelope")
    assert env["level"] == "envelope" and env["amplitude"] == "rms"
    # CSV: one row per line.
    r, body = yield api.get(f"/spectrum?machine=Fan&sensor=vib&time={start + 90}&format=csv")
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["frequency_hz", "rms"] and len(rows) == 1601
    k = max(range(1, 1601), key=lambda i: float(rows[i][1]))
    assert float(rows[k][0]) == pytest.approx(50.0, abs=spec["df"])
    assert r.headers.getRawHeaders("content-disposition")[0].startswith("attachment")


@pytest_twisted.inlineCallbacks
def test_spectrum_errors(api):
    for path, parameter in [
        ("/spectrum?machine=Fan", "sensor"),
        ("/spectrum?machine=Fan&sensor=vib&level=week", "level"),
        ("/spectrum?machine=Fan&sensor=vib&time=yesterday", "time"),
        ("/spectrum?machine=Fan&sensor=vib&time=9999-01-01", "time"),
        ("/spectrum?machine=Fan&sensor=vib&time=1969-12-31T23:00:00", "time"),
        ("/spectrum?machine=Fan&sensor=vib&time=1e300", "time"),
        ("/spectrum?machine=Fan&sensor=vib&time=nan", "time"),
        ("/spectrum?machine=Fan&sensor=a%2Fb", "sensor"),
        ("/spectrum/waterfall?machine=Fan&sensor=vib&rows=0", "rows"),
        ("/spectrum/waterfall?machine=Fan&sensor=vib&lines=99999", "lines"),
        ("/spectrum/waterfall?machine=Fan&sensor=vib&start=2026-12-09&end=2026-12-07", "start"),
        ("/features?machine=Fan&sensor=vib&level=day", "level"),
        ("/features?machine=Fan&sensor=vib&end=9999-12-31", "end"),
    ]:
        err = yield api.json(path, 400)
        assert err["parameter"] == parameter, path
    missing = yield api.json("/spectrum?machine=Fan&sensor=temp", 404)
    assert "no minute spectrum" in missing["error"]


@pytest_twisted.inlineCallbacks
def test_waterfall_is_decimated_to_the_asked_size(api):
    start = api.filled.start
    wf = yield api.json(f"/spectrum/waterfall?machine=Fan&sensor=vib&start={DAY}&end={DAY}&rows=2&lines=100")
    assert len(wf["rows"]) == 2 and all(len(r) == 100 for r in wf["rows"])
    assert wf["t0"] == [start, start + 120] and wf["time"][0] == "2026-12-07 10:00:00"
    assert wf["amplitude"] == "rms" and wf["df"] == pytest.approx(16 * RATE / 2.56 / 1600)
    # Each column is the RMS of its band: the tone's column holds its A/√2.
    row = wf["rows"][1]
    k = max(range(100), key=row.__getitem__)
    assert wf["f0"] + k * wf["df"] == pytest.approx(50.0, abs=wf["df"])
    assert row[k] == pytest.approx(1 / math.sqrt(2), rel=1e-3)
    # Defaults: the last 6 hours up to now (the clock stands right after the data).
    default = yield api.json("/spectrum/waterfall?machine=Fan&sensor=vib")
    assert len(default["rows"]) == 3 and len(default["rows"][0]) == 400
    r, body = yield api.get(f"/spectrum/waterfall?machine=Fan&sensor=vib&start={DAY}&rows=3&lines=4&format=csv")
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0][:2] == ["t0", "time"] and len(rows[0]) == 6 and len(rows) == 4
    nothing = yield api.json("/spectrum/waterfall?machine=Fan&sensor=vib&start=2026-12-01&end=2026-12-01")
    assert nothing["rows"] == [] and nothing["t0"] == []


@pytest_twisted.inlineCallbacks
def test_features_velocity_rms_and_iso_zones(api):
    start = api.filled.start
    got = yield api.json(f"/features?machine=Fan&sensor=vib&start={DAY}&end={DAY}")
    assert got["velocity_unit"] == "mm/s" and got["unit"] == "g"
    assert [r["t0"] for r in got["rows"]] == [start, start + 60, start + 120]
    middle = got["rows"][1]
    assert middle["velocity_rms"] == pytest.approx(VELOCITY, rel=1e-3)
    assert middle["velocity_rms"] == pytest.approx(22.07, abs=0.01)
    assert middle["features"]["iso"]["zone"] == "D"
    assert middle["features"]["peaks"][0][0] == pytest.approx(50.0, abs=1.0)
    assert middle["features"]["bands"]["low"] == pytest.approx(1 / math.sqrt(2), rel=1e-3)
    iso = got["iso10816"]
    assert iso["boundaries"] == list(iso10816.boundaries(2, "rigid")) and iso["refusal"] is None
    assert [z["zone"] for z in iso["zones"]] == ["A", "B", "C", "D"]
    hour = yield api.json(f"/features?machine=Fan&sensor=vib&start={DAY}&level=hour")
    assert len(hour["rows"]) == 1 and hour["rows"][0]["minutes"] == 3
    assert hour["rows"][0]["time"] == "2026-12-07 10:00:00"
    # The legacy temperature feed cannot give velocity RMS, and says why.
    temp = yield api.json(f"/features?machine=Fan&sensor=temp&start={DAY}")
    assert temp["rows"] == [] and "°C" in temp["iso10816"]["refusal"]
    r, body = yield api.get(f"/features?machine=Fan&sensor=vib&start={DAY}&format=csv")
    rows = list(csv.reader(io.StringIO(body.decode())))
    header = rows[0]
    assert header[:5] == ["time", "t0", "blocks", "velocity_rms", "iso_zone"]
    assert "band:low" in header and "order:1" in header and "peak1_hz" in header
    assert float(rows[2][3]) == pytest.approx(22.07, abs=0.01) and rows[2][4] == "D"


@pytest_twisted.inlineCallbacks
def test_machines_shows_sensor_metadata(api):
    got = yield api.json("/machines")
    (fan,) = got["machines"]
    sensors = {s["name"]: s for s in fan["sensors"]}
    vib = sensors["vib"]["meta"]
    assert vib["rate"] == RATE and vib["unit"] == "g" and vib["rpm"] == 1500
    assert vib["sources"]["rpm"] == "config" and vib["sources"]["rate"] == "inferred"
    temp = sensors["temp"]["meta"]
    assert temp["rate"] == 30 and temp["unit"] == "°C" and temp["sources"]["unit"] == "type"


@pytest_twisted.inlineCallbacks
def test_stat_minute_fields(api):
    # The clock stands 130 s after 10:00:00: the last 5 minutes hold 10:00-10:02.
    _, plain = yield api.get("/stat/minute?machine=Fan&minutes=5")
    rich = yield api.json("/stat/minute?machine=Fan&minutes=5&fields=kurtosis,crest,moments_count")
    assert orjson.dumps([{k: v for k, v in i.items() if k in LEGACY_KEYS} for i in rich]) == plain
    vib = [i for i in rich if i["name"] == "vib_minute_avg"]
    assert [i["time"] for i in vib] == ["2026-12-07 10:00:00", "2026-12-07 10:01:00", "2026-12-07 10:02:00"]
    # Chunks are binned by their arrival second (10:00:01 … 10:02:10).
    assert [i["moments_count"] for i in vib] == [i["count"] for i in vib] == [59 * RATE, 60 * RATE, 11 * RATE]
    for i in vib:
        assert i["kurtosis"] == pytest.approx(1.5, abs=1e-6) and i["crest"] == pytest.approx(math.sqrt(2), rel=1e-6)
    temp = [i for i in rich if i["name"] == "temp_minute_avg"]
    assert temp and all(i["moments_count"] == i["count"] for i in temp)
    _, body = yield api.get("/stat/minute?machine=Fan&minutes=5&fields=kurtosis&format=csv")
    assert body.decode().splitlines()[0] == "name,time,data,min,max,rms,count,kurtosis"
