"""REST routes of the alarm room: /alarms, /alarms/history, POST /alarms/<id>/ack."""

import random

import orjson
import pytest_twisted
import treq

from tests.alarms.conftest import T0, Rig
from tests.alarms.test_service import NOISY_RULE, QUIET, run_phase
from tests.web.conftest import make_config


@pytest_twisted.inlineCallbacks
def test_active_history_and_ack_over_http(tmp_path, serve):
    rig = Rig(tmp_path / "alarms", [NOISY_RULE] + QUIET)
    yield rig.start()
    try:
        run_phase(rig, random.Random(5), 12, 20, [])
        server = serve(alarms=rig.svc)
        body = yield server.json("/alarms")
        assert body["enabled"] is True
        [alarm] = body["alarms"]
        assert alarm["rule"] == "vib-high" and alarm["machine"] == "pump1" and alarm["state"] == "active"
        assert isinstance(alarm["value"], float)
        assert (yield server.json("/alarms?machine=other"))["alarms"] == []
        bad = yield server.json("/alarms?machine=../x", status=400)
        assert bad["parameter"] == "machine"

        r = yield treq.post(server.url + f"/alarms/{alarm['id']}/ack?by=kim", persistent=False)
        acked = orjson.loads((yield r.content()))
        assert r.code == 200 and acked["acknowledged"] and acked["acked_by"] == "kim"

        r = yield treq.post(server.url + "/alarms/nope/ack", persistent=False)
        assert r.code == 404 and orjson.loads((yield r.content()))["parameter"] == "alarm_id"

        r = yield server.get(f"/alarms/{alarm['id']}/ack")  # GET on a POST route
        assert r.code == 405 and r.headers.getRawHeaders("allow") == ["POST, OPTIONS"]
        yield r.content()

        # history by local date: the alarm was raised on T0's day in Asia/Seoul
        import datetime
        import zoneinfo
        day = datetime.datetime.fromtimestamp(T0, zoneinfo.ZoneInfo("Asia/Seoul")).date().isoformat()
        hist = yield server.json(f"/alarms/history?start={day}&end={day}")
        assert [a["id"] for a in hist["alarms"]] == [alarm["id"]]
        yield server.json(f"/alarms/history?start={day}&end=2000-01-01", status=400)
    finally:
        yield rig.stop()


@pytest_twisted.inlineCallbacks
def test_ack_needs_a_token_when_tokens_are_set(tmp_path, serve):
    rig = Rig(tmp_path / "alarms", [NOISY_RULE] + QUIET)
    yield rig.start()
    try:
        run_phase(rig, random.Random(5), 12, 20, [])
        [alarm] = rig.svc.active()
        cfg = make_config(tmp_path, AUTH={"API_TOKENS": ["s3cret"]})
        server = serve(cfg, alarms=rig.svc)
        r = yield treq.post(server.url + f"/alarms/{alarm['id']}/ack", persistent=False)
        assert r.code == 401
        yield r.content()
        r = yield treq.post(server.url + f"/alarms/{alarm['id']}/ack",
                            headers={"Authorization": "Bearer s3cret"}, persistent=False)
        assert r.code == 200
        yield r.content()
    finally:
        yield rig.stop()


@pytest_twisted.inlineCallbacks
def test_without_alarm_room_the_routes_say_so(serve):
    server = serve()
    assert (yield server.json("/alarms")) == {"enabled": False, "alarms": []}
    assert (yield server.json("/alarms/history"))["enabled"] is False
    r = yield treq.post(server.url + "/alarms/x/ack", persistent=False)
    assert r.code == 404
    yield r.content()
