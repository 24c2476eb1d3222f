"""The deployed server's bugs, fixed; errors; CORS; tokens; CSV; additions."""

import csv
import io
import math
import os
import sqlite3

import orjson
import pytest
import pytest_twisted
from twisted.internet import defer

from tests.web.conftest import FakeDAQ, make_config
from tests.web.dbs import create_machine_db, fill_from_messages, insert_bucket, make_deployed_db
from tests.web.test_app_calls import T0, q
from tsrmon.stats.sums import PartialSums


def deployed(db_dir, name="ShotBlast"):
    """A deployed-layout database with NULL rows, duplicate times and a swapped-looking anomaly."""
    rows = [
        ("vib1", "hour", "2026-11-24 10:00:00", 0.5),
        ("vib2", "hour", "2026-11-24 10:00:00", 1.5),
        ("vib1", "hour", "2026-11-24 11:00:00", 7),        # an int in a REAL column
        ("vib2", "hour", "2026-11-24 11:00:00", None),     # NULL: never served
        ("vib1", "hour", "2026-11-24 12:00:00", 0.25),
        ("vib1", "hour", "2026-11-24 12:00:00", 0.75),     # duplicate (a reconnect)
        ("vib2", "hour", "2026-11-24 12:00:00", 2.0),
        ("vib1", "day", "2026-11-23 00:00:00", None),
        ("vib2", "day", "2026-11-23 00:00:00", None),
    ]
    make_deployed_db(os.path.join(db_dir, f"{name}.db"), ["vib1", "vib2"], rows,
                     anomalies=[("2026-11-24 10:30:00.123456", 5, 7),
                                ("2026-11-24 10:31:00", 5, None)])


@pytest_twisted.inlineCallbacks
def test_deployed_db_nulls_duplicates_and_alignment(serve, db_dir):
    deployed(db_dir)
    server = serve()
    aligned = yield server.json(q("/stat/hour", "ShotBlast", days=2))
    # 11:00 has no vib2 value (NULL), so the app's index pairing gets 10:00 and 12:00 only.
    assert [(i["name"], i["time"], i["data"]) for i in aligned] == [
        ("vib1_hour_avg", "2026-11-24 10:00:00", 0.5),
        ("vib1_hour_avg", "2026-11-24 12:00:00", 0.5),  # the duplicates' mean (docs/storage.md)
        ("vib2_hour_avg", "2026-11-24 10:00:00", 1.5),
        ("vib2_hour_avg", "2026-11-24 12:00:00", 2.0),
    ]
    for item in aligned:
        assert set(item) == {"name", "time", "data"} and type(item["data"]) is float
    everything = yield server.json(q("/stat/hour", "ShotBlast", days=2) + "&align=false")
    assert [(i["name"], i["time"], i["data"]) for i in everything] == [
        ("vib1_hour_avg", "2026-11-24 10:00:00", 0.5),
        ("vib1_hour_avg", "2026-11-24 11:00:00", 7.0),
        ("vib1_hour_avg", "2026-11-24 12:00:00", 0.5),
        ("vib2_hour_avg", "2026-11-24 10:00:00", 1.5),
        ("vib2_hour_avg", "2026-11-24 12:00:00", 2.0),
    ]
    raw = yield (yield server.get(q("/stat/hour", "ShotBlast", days=2) + "&align=false")).content()
    assert b'"data":7.0' in raw and b"null" not in raw and b"NaN" not in raw
    days = yield server.json(q("/stat/day", "ShotBlast", days=30))
    assert days == []  # only NULL day rows
    anomalies = yield server.json(q("/stat/anomaly", "ShotBlast", days=2))
    assert anomalies == [{"name": "ShotBlast", "time": "2026-11-24 10:30:00.123456",
                          "score": 7.0, "threshold": 5.0}]


@pytest_twisted.inlineCallbacks
def test_read_only_never_creates_files_or_tables(serve, db_dir):
    deployed(db_dir)
    path = os.path.join(db_dir, "ShotBlast.db")
    before = sorted(os.listdir(db_dir))
    schema_before = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master").fetchall()
    with open(os.path.join(db_dir, "notes.txt"), "w") as f:
        f.write("x")
    server = serve()
    yield server.json(q("/stat/anomaly/all", days=30))
    yield server.json(q("/stat/hour", "Ghost", days=30))
    yield server.json(q("/stat/anomaly", "Ghost", days=30))
    assert sorted(os.listdir(db_dir)) == sorted(before + ["notes.txt"])
    assert sqlite3.connect(path).execute("SELECT sql FROM sqlite_master").fetchall() == schema_before


@pytest.mark.parametrize("path", ["/stat/machineList", q("/stat/anomaly/all", days=30),
                                  q("/stat/hour", "ShotBlast", days=2), q("/stat/anomaly", "ShotBlast", days=2),
                                  "/stat/minute?machine=ShotBlast"])
@pytest_twisted.inlineCallbacks
def test_missing_database_folder_is_empty_not_500(serve, config, path):
    assert not os.path.exists(config.database.path)
    server = serve()
    body = yield server.json(path)
    assert body in ([], {"machine_list": []})


@pytest_twisted.inlineCallbacks
def test_machine_list_skips_journals_and_bad_names(serve, db_dir):
    for name in ["ShotBlast.db", "ShotBlast.db-journal", "ShotBlast.db-wal", "ShotBlast.db-shm",
                 "AROPump.db", "x.txt", ".hidden.db", "bad name.db", "진공펌프1.db"]:
        open(os.path.join(db_dir, name), "wb").close()
    os.mkdir(os.path.join(db_dir, "folder.db"))
    server = serve()
    body = yield server.json("/stat/machineList")
    assert body == {"machine_list": ["AROPump", "ShotBlast", "진공펌프1"]}


@pytest.mark.parametrize("machine", ["../ShotBlast", "a/b", "a%20b", "x%27DROP", "%2e%2e%2fetc", "a" * 65])
@pytest_twisted.inlineCallbacks
def test_invalid_machine_is_400(serve, db_dir, machine):
    deployed(db_dir)
    server = serve()
    for path in (q("/stat/hour", machine, 2), q("/stat/anomaly", machine, 2), f"/stat/minute?machine={machine}"):
        body = yield server.json(path, status=400)
        assert body["parameter"] == "machine" and isinstance(body["error"], str)


@pytest.mark.parametrize("path,parameter", [
    ("/stat/hour?start=2026-11-01&end=2026-11-02", "machine"),
    ("/stat/hour?machine=ShotBlast&end=2026-11-02", "start"),
    ("/stat/hour?machine=ShotBlast&start=2026-11-01", "end"),
    ("/stat/hour?machine=ShotBlast&start=2026-13-01&end=2026-11-02", "start"),
    ("/stat/hour?machine=ShotBlast&start=yesterday&end=2026-11-02", "start"),
    ("/stat/hour?machine=ShotBlast&start=2026-11-05&end=2026-11-02", "start"),
    ("/stat/hour?machine=ShotBlast&start=2026-11-01T10:00:00&end=2026-11-02", "start"),
    ("/stat/week?machine=ShotBlast&start=2026-11-01&end=2026-11-02", "level"),
    ("/stat/hour?machine=ShotBlast&start=2026-11-01&end=2026-11-02&align=maybe", "align"),
    ("/stat/hour?machine=ShotBlast&start=2026-11-01&end=2026-11-02&format=xml", "format"),
    ("/stat/anomaly/all?start=2026-11-01", "end"),
    ("/stat/minute?machine=ShotBlast&minutes=0", "minutes"),
    ("/stat/minute?machine=ShotBlast&minutes=ten", "minutes"),
    ("/notifications?start=2026-11-05&end=2026-11-02", "start"),
])
@pytest_twisted.inlineCallbacks
def test_bad_parameters_are_400_json(serve, path, parameter):
    server = serve()
    body = yield server.json(path, status=400)
    assert set(body) == {"error", "parameter"}
    assert body["parameter"] == parameter and body["error"]


@pytest_twisted.inlineCallbacks
def test_midnight_datetime_accepted_like_fastapi(serve, db_dir):
    deployed(db_dir)
    server = serve()
    body = yield server.json("/stat/hour?machine=ShotBlast&start=2026-11-24T00:00:00&end=2026-11-24")
    assert len(body) == 4


@pytest_twisted.inlineCallbacks
def test_unknown_route_and_method(serve):
    server = serve()
    body = yield server.json("/nope", status=404)
    assert set(body) == {"error", "parameter"}
    r = yield server.get("/stat/machineList", method="POST")
    assert r.code == 405
    assert set(orjson.loads((yield r.content()))) == {"error", "parameter"}
    body = yield server.json("/socket.io/?EIO=4&transport=websocket", status=404)  # no live layer


@pytest_twisted.inlineCallbacks
def test_cors_preflight_and_headers(serve, tmp_path, config):
    cfg = make_config(tmp_path, SERVER={"CORS_ORIGINS": ["https://app.example"]})
    server = serve(cfg)
    pre = {"Origin": ["https://app.example"], "Access-Control-Request-Method": ["GET"],
           "Access-Control-Request-Headers": ["authorization"]}
    r = yield server.get("/stat/hour", headers=pre, method="OPTIONS")
    yield r.content()
    assert r.code == 204
    h = r.headers
    assert h.getRawHeaders("access-control-allow-origin") == ["https://app.example"]
    assert "GET" in h.getRawHeaders("access-control-allow-methods")[0]
    assert h.getRawHeaders("access-control-allow-headers") == ["authorization"]
    assert h.getRawHeaders("vary") == ["Origin"]
    r = yield server.get("/stat/hour", method="OPTIONS",
                         headers={"Origin": ["https://evil.example"], "Access-Control-Request-Method": ["GET"]})
    yield r.content()
    assert r.code == 403 and r.headers.getRawHeaders("access-control-allow-origin") is None
    r = yield server.get("/stat/machineList", headers={"Origin": ["https://app.example"]})
    yield r.content()
    assert r.headers.getRawHeaders("access-control-allow-origin") == ["https://app.example"]
    # The default '*' never echoes credentials.
    star = serve()
    r = yield star.get("/stat/machineList", headers={"Origin": ["https://any.example"]})
    yield r.content()
    assert r.headers.getRawHeaders("access-control-allow-origin") == ["*"]
    assert r.headers.getRawHeaders("access-control-allow-credentials") is None


@pytest_twisted.inlineCallbacks
def test_api_tokens(serve, tmp_path):
    cfg = make_config(tmp_path, AUTH={"API_TOKENS": ["s3cret", "other"]})
    server = serve(cfg, health={"db": lambda: {"ok": True}})
    body = yield server.json("/stat/machineList", status=401)
    assert body["parameter"] == "token"
    yield server.json("/stat/machineList?token=wrong", status=401)
    yield server.json("/stat/machineList", status=401, headers={"Authorization": ["Bearer wrong"]})
    assert (yield server.json("/stat/machineList?token=s3cret")) == {"machine_list": []}
    assert (yield server.json("/stat/machineList", headers={"Authorization": ["Bearer other"]})) == \
        {"machine_list": []}
    assert (yield server.json("/healthz"))["ok"] is True
    yield server.json("/socket.io/?EIO=4&transport=websocket", status=401)
    # A CORS preflight carries no token and is answered anyway.
    r = yield server.get("/stat/machineList", method="OPTIONS",
                         headers={"Origin": ["https://x.example"], "Access-Control-Request-Method": ["GET"]})
    yield r.content()
    assert r.code == 204
    r = yield server.get("/metrics")
    yield r.content()
    assert r.code == 401


@pytest_twisted.inlineCallbacks
def test_csv_on_every_stat_endpoint(serve, db_dir, expected_json, clock):
    fill_from_messages(os.path.join(db_dir, "ShotBlast.db"), expected_json["session.bin"]["messages"][1:],
                       T0, "Asia/Seoul")
    clock.advance(T0 + 150 - clock.seconds())
    server = serve()
    for path, header in [
        ("/stat/machineList?format=csv", ["machine"]),
        (q("/stat/hour", "ShotBlast", 2) + "&format=csv", ["name", "time", "data", "min", "max", "rms", "count"]),
        (q("/stat/day", "ShotBlast", 30) + "&format=csv", ["name", "time", "data", "min", "max", "rms", "count"]),
        (q("/stat/anomaly", "ShotBlast", 30) + "&format=csv", ["name", "time", "score", "threshold"]),
        (q("/stat/anomaly/all", days=30) + "&format=csv", ["name", "time", "score", "threshold"]),
        (q("/stat/faults", "ShotBlast", 30) + "&format=csv", ["name", "time", "t", "score", "threshold", "over"]),
        ("/stat/minute?machine=ShotBlast&minutes=5&format=csv", ["name", "time", "data", "min", "max", "rms", "count"]),
    ]:
        r = yield server.get(path)
        body = yield r.content()
        assert r.code == 200, path
        assert r.headers.getRawHeaders("content-type")[0].startswith("text/csv")
        disposition = r.headers.getRawHeaders("content-disposition")[0]
        assert disposition.startswith("attachment; filename=") and ".csv" in disposition
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"))))
        assert rows[0] == header and len(rows) > 1, path
    r = yield server.get(q("/stat/hour", "ShotBlast", 2) + "&format=csv")
    rows = list(csv.DictReader(io.StringIO((yield r.content()).decode("utf-8"))))
    js = yield server.json(q("/stat/hour", "ShotBlast", 2))
    assert [(x["name"], x["time"], float(x["data"]), int(x["count"])) for x in rows] == \
        [(x["name"], x["time"], x["data"], x["count"]) for x in js]


@pytest_twisted.inlineCallbacks
def test_minute_and_faults(serve, db_dir, expected_json, clock):
    made = fill_from_messages(os.path.join(db_dir, "ShotBlast.db"),
                              expected_json["session.bin"]["messages"][1:], T0, "Asia/Seoul")
    clock.advance(T0 + 150 - clock.seconds())
    server = serve()
    items = yield server.json("/stat/minute?machine=ShotBlast&minutes=5")
    assert [(i["name"], i["time"]) for i in items][:2] == [
        ("shot_blast_vib1_minute_avg", "2026-11-25 10:59:00"),
        ("shot_blast_vib1_minute_avg", "2026-11-25 11:00:00")]
    assert len(items) == 6
    for i in items:
        sensor = i["name"][: -len("_minute_avg")]
        assert i["count"] == made["buckets"][(sensor, "minute", i["time"])].count
    assert (yield server.json("/stat/minute?machine=ShotBlast&minutes=1")) == [
        i for i in items if i["time"] == "2026-11-25 11:01:00"] == []
    two = yield server.json("/stat/minute?machine=ShotBlast&minutes=2")
    assert {i["time"] for i in two} == {"2026-11-25 11:00:00"}
    faults = yield server.json(q("/stat/faults", "ShotBlast", 30))
    assert [(f["score"], f["threshold"], f["over"]) for f in faults] == \
        [(2.0, 5.0, False), (7.0, 5.0, True), (2.0, 5.0, False)]
    assert all(type(f["t"]) is float for f in faults)


@pytest_twisted.inlineCallbacks
def test_machines_healthz_metrics(serve, hub, clock, db_dir):
    machine = hub.claim("ShotBlast", FakeDAQ())
    hub.data(machine, [("vib1", "VIB", [1.0, -2.0])])
    states = {"ok": True}
    health = {
        "daq": lambda: {"ok": states["ok"], "listening": True},
        "db": lambda: {"ok": True},
        "notifier": lambda: {"ok": True, "enabled": False},
        "raw_csv": lambda: True,
        "odd": lambda: {"ok": True, "path": ValueError("x")},
    }
    counters = {"ingest": lambda: {"frames": 3, "bad key": 1.5, "skip": "text", "per": {"x": 2}},
                "broken": lambda: 1 / 0}
    server = serve(health=health, counters=counters)
    m = yield server.json("/machines")
    (st,) = m["machines"]
    assert st["machine"] == "ShotBlast" and st["connected"] is True
    assert st["sensors"] == [{"name": "vib1", "type": "VIB"}]
    assert st["frames"] == 1 and st["samples"] == 2 and type(st["frames_per_second"]) is float
    h = yield server.json("/healthz")
    assert h["ok"] is True and h["checks"]["notifier"] == {"ok": True, "enabled": False}
    assert h["checks"]["raw_csv"] == {"ok": True} and h["checks"]["odd"]["path"] == "x"
    states["ok"] = False
    h = yield server.json("/healthz", status=503)
    assert h["ok"] is False and h["checks"]["daq"]["ok"] is False
    r = yield server.get("/metrics")
    text = (yield r.content()).decode()
    assert r.code == 200 and r.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    assert "tsrmon_ingest_frames_total 3.0" in text
    assert "tsrmon_ingest_bad_key_total 1.5" in text
    assert "tsrmon_ingest_per_x_total 2.0" in text
    assert 'tsrmon_machine_samples_total{machine="ShotBlast"} 2.0' in text
    assert 'tsrmon_machine_connected{machine="ShotBlast"} 1.0' in text
    assert "tsrmon_http_request_seconds_bucket" in text


@pytest_twisted.inlineCallbacks
def test_notifications(serve, clock):
    calls = []

    class Notifier:
        def history(self, start_t, end_t):
            calls.append((start_t, end_t))
            return defer.succeed([{"machine": "ShotBlast", "t": 1.0, "score": 7.0}])

    assert (yield serve().json("/notifications")) == {"enabled": False, "notifications": []}
    server = serve(notifier=Notifier())
    body = yield server.json("/notifications?start=2026-11-01&end=2026-11-02")
    assert body == {"enabled": True, "notifications": [{"machine": "ShotBlast", "t": 1.0, "score": 7.0}]}
    # Local (Asia/Seoul) midnights, end inclusive.
    assert calls == [(1793458800.0, 1793631600.0)]


@pytest_twisted.inlineCallbacks
def test_hour_cache_sees_new_and_updated_rows(serve, db_dir):
    path = os.path.join(db_dir, "M.db")
    conn = create_machine_db(path, [("a", "VIB"), ("b", "VIB")])
    from datetime import datetime
    from zoneinfo import ZoneInfo
    tz = ZoneInfo("Asia/Seoul")
    for sensor in ("a", "b"):
        for month in range(1, 13):
            insert_bucket(conn, sensor, "hour", datetime(2026, month, 3, 4, tzinfo=tz),
                          PartialSums.of([1.0, 2.0]), "ABS")
    conn.commit()
    server = serve()
    url = "/stat/hour?machine=M&start=2026-01-01&end=2026-12-31"
    first = yield server.json(url)
    assert len(first) == 24 and {i["data"] for i in first} == {1.5}
    # An upsert (same row, more samples) and a new row, as the writer does them.
    conn.execute('UPDATE "a_hour_avg" SET count = 3, sum_abs = 6.0, data = 2.0, sum_sq = 9.0 '
                 "WHERE time = '2026-11-03 04:00:00'")
    insert_bucket(conn, "a", "hour", datetime(2026, 11, 3, 5, tzinfo=tz), PartialSums.of([4.0]), "ABS")
    conn.commit()
    for _ in range(3):  # every pool thread's connection sees the change
        again = yield server.json(url + "&align=false")
        a = [(i["time"], i["data"]) for i in again if i["name"] == "a_hour_avg"]
        assert ("2026-11-03 04:00:00", 2.0) in a and ("2026-11-03 05:00:00", 4.0) in a
        assert len(a) == 13
    aligned = yield server.json(url)
    assert len(aligned) == 24  # 05:00 exists for "a" only
    part = yield server.json("/stat/hour?machine=M&start=2026-03-03&end=2026-05-02&align=false")
    assert [(i["name"], i["time"]) for i in part] == [
        ("a_hour_avg", "2026-03-03 04:00:00"), ("a_hour_avg", "2026-04-03 04:00:00"),
        ("b_hour_avg", "2026-03-03 04:00:00"), ("b_hour_avg", "2026-04-03 04:00:00")]
    # The file replaced by another one (a restore): the cache follows.
    conn.close()
    os.remove(path)
    conn = create_machine_db(path, [("a", "VIB")])
    insert_bucket(conn, "a", "hour", datetime(2026, 6, 3, 4, tzinfo=tz), PartialSums.of([8.0]), "ABS")
    conn.commit()
    conn.close()
    replaced = yield server.json(url)
    assert [(i["time"], i["data"]) for i in replaced] == [("2026-06-03 04:00:00", 8.0)]


def test_floats_are_never_nan_or_infinite():
    from tsrmon.reader.series import _item, encode_items
    assert _item({"time": "2026-01-01 00:00:00", "data": math.nan}) is None
    assert _item({"time": "2026-01-01 00:00:00", "data": math.inf}) is None
    assert _item({"time": "2026-01-01 00:00:00", "data": None}) is None
    it = _item({"time": "2026-01-01 00:00:00", "data": 7, "min": math.inf, "count": 3, "rms": None})
    assert orjson.loads(b"[" + encode_items("x", [it]) + b"]") == [
        {"name": "x", "time": "2026-01-01 00:00:00", "data": 7.0, "count": 3}]
    assert b"7.0" in encode_items("x", [it])


@pytest_twisted.inlineCallbacks
def test_index_and_live_mount(serve):
    from twisted.web.resource import Resource

    class Polling(Resource):
        isLeaf = True

        def render_GET(self, request):
            return b"live:" + request.uri

    class Live:
        def resource(self):
            return Polling()

    server = serve(live=Live())
    r = yield server.get("/socket.io/?EIO=4&transport=polling")
    assert r.code == 200 and (yield r.content()) == b"live:/socket.io/?EIO=4&transport=polling"
    index = yield server.json("/")
    assert index["openapi"] == "/openapi.json" and "/stat/{level}" in index["routes"]


@pytest_twisted.inlineCallbacks
def test_damaged_database_file_costs_only_its_machine(serve, db_dir):
    deployed(db_dir)
    with open(os.path.join(db_dir, "Broken.db"), "wb") as f:
        f.write(b"this is not an SQLite file" * 100)
    server = serve()
    assert (yield server.json(q("/stat/hour", "Broken", 2))) == []
    assert (yield server.json(q("/stat/anomaly", "Broken", 2))) == []
    everyone = yield server.json(q("/stat/anomaly/all", days=30))
    assert [a["name"] for a in everyone] == ["ShotBlast"]
    assert (yield server.json("/stat/machineList")) == {"machine_list": ["Broken", "ShotBlast"]}


@pytest_twisted.inlineCallbacks
def test_reconfigure_tokens_and_aliases(serve, tmp_path, db_dir):
    deployed(db_dir, "Pump7")
    server = serve()
    assert (yield server.json(q("/stat/anomaly", "VacuumPump", 2))) == []
    server.api.reconfigure(make_config(tmp_path, AUTH={"API_TOKENS": ["t"]},
                                       APP={"MACHINE_ALIASES": {"VacuumPump": "Pump7"}}))
    yield server.json("/stat/machineList", status=401)
    items = yield server.json(q("/stat/anomaly", "VacuumPump", 2) + "&token=t")
    assert [i["name"] for i in items] == ["Pump7"]


@pytest_twisted.inlineCallbacks
def test_align_by_bucket_for_old_deployed_hour_stamps(serve, db_dir):
    # Before a6885b1 the deployed server stamped hours "now - 1 h" with seconds.
    rows = [("vib1", "hour", "2024-01-25 14:23:11.123456", 0.1),
            ("vib2", "hour", "2024-01-25 14:23:11.124001", 0.2),
            ("vib1", "hour", "2024-01-25 15:23:12.5", 0.3),
            ("vib1", "hour", "2024-01-25 16:23:13", 0.4),
            ("vib2", "hour", "2024-01-25 16:23:13.01", 0.5)]
    make_deployed_db(os.path.join(db_dir, "Old.db"), ["vib1", "vib2"], rows)
    server = serve()
    items = yield server.json("/stat/hour?machine=Old&start=2024-01-25&end=2024-01-25")
    assert [(i["name"], i["data"]) for i in items] == [
        ("vib1_hour_avg", 0.1), ("vib1_hour_avg", 0.4), ("vib2_hour_avg", 0.2), ("vib2_hour_avg", 0.5)]


@pytest_twisted.inlineCallbacks
def test_non_utf8_url_is_400_json(serve):
    server = serve()
    body = yield server.json("/stat/%ff", status=400)
    assert set(body) == {"error", "parameter"}
    body = yield server.json("/stat/machineList?format=%ff", status=400)
    assert body["parameter"] == "format"
