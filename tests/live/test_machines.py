"""The /sio/<machine> namespaces (docs/legacy.md §2.2, §2.3, §4) on a LiveService.

Timers (update windows, pings) run on a ``task.Clock``; the sockets are real
and the client speaks raw Engine.IO/Socket.IO like the deployed Flutter app.
"""

import json
import re

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.live.conftest import FakeDAQ
from tests.live.helpers import HTTP, events, sio_ws, ws_open
from tsrmon.stats.sums import PartialSums

T0 = 1_800_000_000  # 2027-01-15 17:00:00 in Asia/Seoul
VIB = [-1.5, 0.5, 2.0]  # ABS: mean of |x| = 4/3
TEMP = [20.0, 22.0]  # REAL: mean = 21.0
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


def clock_at(t):
    clock = Clock()
    clock.advance(t)
    return clock


def feed(server, machine="m1", t=None):
    t = server.clock.seconds() if t is None else t
    server.bus.second(machine, "vib1", "VIB", t, PartialSums.of(VIB))
    server.bus.second(machine, "temp1", "TEMP", t, PartialSums.of(TEMP))


async def next_event(ws, nsp="/sio/m1", name=None):
    frames = await ws.recv_until(lambda f: bool(events([f], nsp)) and (name is None or events([f], nsp)[0][0] == name))
    return frames[-1]


@pytest_twisted.ensureDeferred
async def test_unknown_machine_gets_connect_error(make_server):
    server = make_server(clock=Clock())
    ws = await sio_ws(server.ws_url, nsp="/sio/nobody")
    assert ws.connect_reply == '44/sio/nobody,{"message":"Invalid namespace"}'
    assert server.live.counters()["connect_errors"] == 1


@pytest_twisted.ensureDeferred
async def test_offline_machine_accepted_and_events_flow_when_daq_returns(make_server):
    server = make_server(clock=clock_at(T0 + 0.5))
    ws = await sio_ws(server.ws_url)
    reply = ws.connect_reply
    assert reply.startswith('40/sio/m1,{"sid":"')
    assert set(json.loads(reply[len("40/sio/m1,"):])) == {"sid"}
    server.hub.claim("m1", FakeDAQ())
    status = await next_event(ws, name="status")
    payload = events([status])[0][1][0]
    assert payload["machine"] == "m1" and payload["connected"] is True
    feed(server)
    server.clock.advance(0.75)  # windows close 0.25 s after each boundary: T0 + 1.25
    frame = await next_event(ws, name="update")
    assert frame.startswith('42/sio/m1,["update",{"sensor_name":"vib1","data":1.333')


@pytest_twisted.ensureDeferred
async def test_updates_on_the_clock_with_deployed_payloads(make_server):
    server = make_server(clock=clock_at(T0 - 0.25), live={"INTERVAL": 1})
    ws = await sio_ws(server.ws_url)
    server.hub.claim("m1", FakeDAQ())
    feed(server)
    server.clock.advance(0.5)  # T0 + 0.25: the first window closes just after the boundary
    frames = [await next_event(ws, name="update"), await next_event(ws, name="update")]
    assert frames[1] == '42/sio/m1,["update",{"sensor_name":"temp1","data":21.0,"time":"2027-01-15 17:00:00.250000"}]'
    vib = json.loads(frames[0][len("42/sio/m1,"):])[1]
    assert vib == {"sensor_name": "vib1", "data": pytest.approx(4 / 3), "time": "2027-01-15 17:00:00.250000"}
    assert type(vib["data"]) is float
    # A sensor without samples in the window gets nothing (never null or 0) ...
    server.bus.second("m1", "vib1", "VIB", T0 + 0.5, PartialSums.of([3.0, -3.0]))
    server.clock.advance(1.0)
    frame = await next_event(ws, name="update")
    assert json.loads(frame[len("42/sio/m1,"):])[1]["sensor_name"] == "vib1"
    assert json.loads(frame[len("42/sio/m1,"):])[1]["data"] == 3.0
    # ... and a window without data at all emits nothing: the next event is the anomaly.
    server.clock.advance(1.0)
    server.hub.fault(server.hub.get("m1"), 7, 5)
    frame = await next_event(ws)
    assert frame == '42/sio/m1,["anomaly",{"score":7.0,"threshold":5.0}]'


@pytest_twisted.ensureDeferred
async def test_initialize_replays_cache_per_sensor_only_to_requester(make_server):
    server = make_server(clock=clock_at(T0), live={"INTERVAL": 60, "CACHE": 3, "PING_INTERVAL": 3600, "PING_TIMEOUT": 3600})
    server.hub.claim("m1", FakeDAQ())
    a = await sio_ws(server.ws_url)
    b = await sio_ws(server.ws_url)
    for i in range(5):
        server.bus.second("m1", "vib1", "VIB", server.clock.seconds(), PartialSums.of([float(i)]))
        if i >= 2:
            server.bus.second("m1", "temp1", "TEMP", server.clock.seconds(), PartialSums.of([float(10 + i)]))
        server.clock.advance(60)
    a.send('42/sio/m1,["initialize","shot_blast_vib1"]')
    frames = await a.recv_until(lambda f: '"initialize"' in f and "temp1" in f)
    inits = [args[0] for name, args in events(frames) if name == "initialize"]
    assert [[p["data"] for p in lst] for lst in inits] == [[2.0, 3.0, 4.0], [12.0, 13.0, 14.0]]
    assert [lst[0]["sensor_name"] for lst in inits] == ["vib1", "temp1"]
    assert all(TIME_RE.match(p["time"]) for lst in inits for p in lst)
    assert inits[0][0]["time"] < inits[0][-1]["time"]
    # b did not ask: its next event is the anomaly, not an initialize.
    server.hub.fault(server.hub.get("m1"), 1.5, 2.5)
    frames = await b.recv_until(lambda f: "anomaly" in f)
    assert frames[-1] == '42/sio/m1,["anomaly",{"score":1.5,"threshold":2.5}]'
    assert [name for name, _ in events(frames)] == ["update"] * 8 + ["anomaly"]


@pytest_twisted.ensureDeferred
async def test_cache_survives_daq_reconnect_and_other_machines_are_undisturbed(make_server):
    server = make_server(clock=clock_at(T0), machines=("m1", "m2"))
    old = FakeDAQ()
    m1 = server.hub.claim("m1", old)
    server.hub.claim("m2", FakeDAQ("10.0.0.2"))
    c2 = await sio_ws(server.ws_url, nsp="/sio/m2")
    feed(server, "m1")
    server.clock.advance(1)
    new = FakeDAQ()
    server.hub.claim("m1", new)  # the same DAQ reconnects: takeover
    assert old.closed
    server.hub.release(m1, old)  # the old socket's late close changes nothing
    assert server.hub.get("m1").connected
    feed(server, "m2")
    server.clock.advance(1)
    frame = await next_event(c2, nsp="/sio/m2", name="update")
    assert '"sensor_name":"vib1"' in frame
    c1 = await sio_ws(server.ws_url)
    c1.send('42/sio/m1,["initialize"]')
    frame = await next_event(c1, name="initialize")
    assert json.loads(frame[len("42/sio/m1,"):])[1][0]["data"] == pytest.approx(4 / 3)


@pytest_twisted.ensureDeferred
async def test_cache_rebuilt_from_history_after_restart(make_server):
    calls = []

    def history(machine):
        calls.append(machine)
        rows = [("vib1", "VIB", T0 - 180 + 60 * i, PartialSums.of([float(i), -float(i)])) for i in range(3)]
        rows.append(("temp1", "TEMP", T0 - 60, PartialSums.of([30.0])))
        return defer.succeed(rows)

    server = make_server(clock=clock_at(T0 + 0.5), live={"INTERVAL": 60, "CACHE": 2}, history=history)
    assert calls == ["m1"]
    server.hub.claim("m1", FakeDAQ())
    ws = await sio_ws(server.ws_url)
    ws.send('42/sio/m1,["initialize"]')
    frames = await ws.recv_until(lambda f: "temp1" in f)
    inits = [args[0] for name, args in events(frames) if name == "initialize"]
    assert inits[0] == [
        {"sensor_name": "vib1", "data": 1.0, "time": "2027-01-15 16:59:00.000000"},
        {"sensor_name": "vib1", "data": 2.0, "time": "2027-01-15 17:00:00.000000"},
    ]
    assert inits[1] == [{"sensor_name": "temp1", "data": 30.0, "time": "2027-01-15 17:00:00.000000"}]
    assert server.live.counters()["history_rows"] == 4


@pytest_twisted.ensureDeferred
async def test_status_on_request_with_ack(make_server):
    server = make_server(clock=clock_at(T0))
    server.hub.claim("m1", FakeDAQ())
    server.hub.data(server.hub.get("m1"), [("vib1", "VIB", VIB)])
    ws = await sio_ws(server.ws_url)
    ws.send('42/sio/m1,5["status"]')
    frames = await ws.recv_until(lambda f: f.startswith("43/sio/m1,5"))
    payload = json.loads(frames[-1][len("43/sio/m1,5"):])[0]
    assert payload["connected"] is True and payload["last_frame"] == T0
    assert payload["last_frame_time"] == "2027-01-15 17:00:00.000000"


@pytest_twisted.ensureDeferred
async def test_subscribe_streams_seconds_only_to_the_subscriber(make_server):
    server = make_server(clock=clock_at(T0 + 0.5))
    server.hub.claim("m1", FakeDAQ())
    a = await sio_ws(server.ws_url)
    b = await sio_ws(server.ws_url)
    a.send('42/sio/m1,1["subscribe",["vib1"]]')
    assert (await a.recv_until(lambda f: f.startswith("43")))[-1] == '43/sio/m1,1[["vib1"]]'
    feed(server)
    frame = await next_event(a)
    name, args = events([frame])[0]
    assert name == "second" and args[0]["sensor_name"] == "vib1"
    assert args[0]["data"] == pytest.approx(4 / 3) and args[0]["count"] == 3
    assert (args[0]["min"], args[0]["max"]) == (-1.5, 2.0)
    a.send('42/sio/m1,2["unsubscribe"]')
    assert (await a.recv_until(lambda f: f.startswith("43")))[-1] == "43/sio/m1,2[[]]"
    feed(server)
    server.hub.fault(server.hub.get("m1"), 1.0, 2.0)
    assert events([await next_event(a)])[0][0] == "anomaly"
    assert events([await next_event(b)])[0][0] == "anomaly"


@pytest_twisted.ensureDeferred
async def test_api_tokens(make_server):
    server = make_server(clock=Clock(), auth=["s3cret"])
    ws = await sio_ws(server.ws_url)
    assert ws.connect_reply == '44/sio/m1,{"message":"Not authorized"}'
    ws = await sio_ws(server.ws_url, auth={"token": "wrong"})
    assert ws.connect_reply == '44/sio/m1,{"message":"Not authorized"}'
    ws = await sio_ws(server.ws_url, auth={"token": "s3cret"})
    assert ws.connect_reply.startswith('40/sio/m1,{"sid"')
    ws = await sio_ws(server.ws_url, query="&token=s3cret")
    assert ws.connect_reply.startswith('40/sio/m1,{"sid"')
    http = HTTP(server.url)
    try:
        resp, body = await http.get("/socket.io/?EIO=4&transport=polling", headers={"Authorization": "Bearer nope"})
        assert (resp.code, json.loads(body)) == (403, {"code": 4, "message": "Forbidden"})
        resp, body = await http.get("/socket.io/?EIO=4&transport=polling&token=s3cret")
        sid = json.loads(body[1:])["sid"]
        await http.post(f"/socket.io/?EIO=4&transport=polling&sid={sid}", b"40/sio/m1,")
        resp, body = await http.get(f"/socket.io/?EIO=4&transport=polling&sid={sid}")
        assert body.startswith(b'40/sio/m1,{"sid"')
    finally:
        await http.close()
    bearer = await ws_open(server.ws_url + "/socket.io/?EIO=4&transport=websocket",
                           headers={"Authorization": "Bearer s3cret"})
    await bearer.recv()
    bearer.send("40/sio/m1,")
    assert (await bearer.recv()).startswith('40/sio/m1,{"sid"')
    with pytest.raises(ConnectionError):
        await ws_open(server.ws_url + "/socket.io/?EIO=4&transport=websocket",
                      headers={"Authorization": "Bearer wrong"})


@pytest_twisted.ensureDeferred
async def test_cors_origin_list(make_server):
    server = make_server(clock=Clock(), cors=["http://app.example"])
    http = HTTP(server.url)
    try:
        resp, _ = await http.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": "http://app.example"})
        assert resp.headers.getRawHeaders("access-control-allow-origin") == ["http://app.example"]
        assert resp.headers.getRawHeaders("access-control-allow-credentials") == ["true"]
        resp, _ = await http.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": "http://evil.example"})
        assert resp.headers.getRawHeaders("access-control-allow-origin") is None
    finally:
        await http.close()


@pytest_twisted.ensureDeferred
async def test_counters_health_and_stop_closes_clients(make_server):
    server = make_server(clock=clock_at(T0))
    ws = await sio_ws(server.ws_url)
    counters = server.live.counters()
    assert counters["sessions"] == 1 and counters["clients_websocket"] == 1
    assert counters["namespace_clients"] == 1 and counters["dropped_slow_clients"] == 0
    assert server.live.healthy()["ok"] is True
    await server.live.stopService()
    await ws.wait_closed()
    assert server.live.counters()["sessions"] == 0
    assert server.live.healthy()["ok"] is False
    server.live.startService()  # the fixture stops it again


@pytest_twisted.ensureDeferred
async def test_mounted_in_a_klein_branch_route(tmp_path):
    from klein import Klein
    from twisted.internet import reactor
    from twisted.web.server import Site

    from tests.live.conftest import LiveServer, make_config

    server = LiveServer(make_config(tmp_path), clock_at(T0))
    app = Klein()

    @app.route("/socket.io/", branch=True)
    def socketio(request):
        return server.live.resource()

    @app.route("/healthz")
    def health(request):
        return "ok"

    server.live.startService()
    port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1")
    base = f"127.0.0.1:{port.getHost().port}"
    http = HTTP("http://" + base)
    try:
        resp, body = await http.get("/socket.io/?EIO=4&transport=polling&t=k")
        sid = json.loads(body[1:])["sid"]
        await http.post(f"/socket.io/?EIO=4&transport=polling&sid={sid}", b"40/sio/m1,")
        resp, body = await http.get(f"/socket.io/?EIO=4&transport=polling&sid={sid}")
        assert body.startswith(b'40/sio/m1,{"sid"')
        ws = await sio_ws("ws://" + base)
        assert ws.connect_reply.startswith('40/sio/m1,{"sid"')
        server.hub.claim("m1", FakeDAQ())
        server.hub.fault(server.hub.get("m1"), 3, 4)
        assert await next_event(ws, name="anomaly") == '42/sio/m1,["anomaly",{"score":3.0,"threshold":4.0}]'
    finally:
        await http.close()
        await server.live.stopService()
        await port.stopListening()
