"""Engine.IO v4 behaviour (handshake, heartbeat, upgrade, payloads; docs/socketio.md) on the conformance echo endpoint.

Timers run on a ``task.Clock`` so ping/timeout scenarios are deterministic;
the sockets are real.
"""

import json

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.live.helpers import HTTP, eventually, sio_ws, ws_open

EIO = "/engine.io/"


async def handshake(http):
    resp, body = await http.get(EIO + "?EIO=4&transport=polling&t=abc")
    assert resp.code == 200
    text = body.decode()
    assert text.startswith("0")
    return json.loads(text[1:])["sid"]


def error_of(resp, body):
    assert resp.headers.getRawHeaders("content-type") == ["application/json"]
    return resp.code, json.loads(body)


@pytest.fixture
def server(conformance):
    clock = Clock()
    return conformance(clock), clock


@pytest.fixture
def http(server):
    h = HTTP(server[0].url)
    yield h
    pytest_twisted.blockon(defer.ensureDeferred(h.close()))


@pytest_twisted.ensureDeferred
async def test_polling_handshake_is_exactly_the_open_packet(server, http):
    resp, body = await http.get(EIO + "?EIO=4&transport=polling&t=x1")
    assert resp.code == 200
    assert resp.headers.getRawHeaders("content-type") == ["text/plain; charset=UTF-8"]
    assert resp.headers.getRawHeaders("access-control-allow-origin") == ["*"]
    text = body.decode()
    assert text[0] == "0" and "\x1e" not in text
    opening = json.loads(text[1:])
    assert set(opening) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert opening["upgrades"] == ["websocket"]
    assert (opening["pingInterval"], opening["pingTimeout"], opening["maxPayload"]) == (300, 200, 1000000)
    assert len(opening["sid"]) == 20


@pytest.mark.parametrize("query,method,status,code", [
    ("?EIO=3&transport=polling", "GET", 400, 5),
    ("?transport=polling", "GET", 400, 5),
    ("?EIO=4&transport=carrier-pigeon", "GET", 400, 0),
    ("?EIO=4", "GET", 400, 0),
    ("?EIO=4&transport=polling", "POST", 400, 2),
    ("?EIO=4&transport=polling&sid=nope", "GET", 400, 1),
    ("?EIO=4&transport=polling&sid=nope", "POST", 400, 1),
    ("?EIO=4&transport=websocket", "GET", 400, 3),
])
@pytest_twisted.ensureDeferred
async def test_error_codes(server, http, query, method, status, code):
    resp, body = await http.request(method, EIO + query, data=b"4x" if method == "POST" else None)
    assert error_of(resp, body)[0] == status
    assert json.loads(body)["code"] == code
    assert resp.headers.getRawHeaders("access-control-allow-origin") == ["*"]


@pytest_twisted.ensureDeferred
async def test_options_preflight(server, http):
    resp, body = await http.request("OPTIONS", EIO + "?EIO=4&transport=polling",
                                    headers={"Access-Control-Request-Headers": "authorization,x-y",
                                             "Origin": "http://app.example"})
    assert resp.code == 204 and body == b""
    h = resp.headers
    assert h.getRawHeaders("access-control-allow-origin") == ["*"]
    assert h.getRawHeaders("access-control-allow-methods") == ["GET,HEAD,PUT,PATCH,POST,DELETE"]
    assert h.getRawHeaders("access-control-allow-headers") == ["authorization,x-y"]
    assert h.getRawHeaders("vary") == ["Access-Control-Request-Headers"]


@pytest.mark.parametrize("payload", ["4hello", "4test1\x1e4test2\x1e4test3", "4hello\x1ebAQIDBA==", "4€ 한글 😀"])
@pytest_twisted.ensureDeferred
async def test_polling_echo(server, http, payload):
    sid = await handshake(http)
    resp, body = await http.post(f"{EIO}?EIO=4&transport=polling&sid={sid}", payload.encode(),
                                 headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert (resp.code, body) == (200, b"ok")
    resp, body = await http.get(f"{EIO}?EIO=4&transport=polling&sid={sid}")
    assert body.decode() == payload


@pytest_twisted.ensureDeferred
async def test_get_waits_for_data(server, http):
    conf, clock = server
    sid = await handshake(http)
    pending = defer.ensureDeferred(http.get(f"{EIO}?EIO=4&transport=polling&sid={sid}"))
    resp, body = await http.post(f"{EIO}?EIO=4&transport=polling&sid={sid}", b"4later")
    resp, body = await pending
    assert body == b"4later"


@pytest_twisted.ensureDeferred
async def test_concurrent_get_closes_session(server, http):
    conf, clock = server
    sid = await handshake(http)
    q = f"{EIO}?EIO=4&transport=polling&sid={sid}"
    first = defer.ensureDeferred(http.get(q))
    await eventually(lambda: conf.echo.sessions[sid].poll_request is not None)
    resp, body = await http.get(q)
    assert resp.code == 400
    resp, body = await first
    assert body == b"1"
    resp, body = await http.get(q)
    assert error_of(resp, body) == (400, {"code": 1, "message": "Session ID unknown"})


@pytest.mark.parametrize("bad", [b"abc", b"4ok\x1ezzz", b"bnot base64!"])
@pytest_twisted.ensureDeferred
async def test_invalid_packet_closes_session(server, http, bad):
    sid = await handshake(http)
    q = f"{EIO}?EIO=4&transport=polling&sid={sid}"
    resp, body = await http.post(q, bad)
    assert resp.code == 400
    resp, body = await http.get(q)
    assert resp.code == 400


@pytest_twisted.ensureDeferred
async def test_binary_post_refused_and_session_closed(server, http):
    sid = await handshake(http)
    q = f"{EIO}?EIO=4&transport=polling&sid={sid}"
    resp, body = await http.post(q, b"\x04abc", headers={"Content-Type": "application/octet-stream"})
    assert resp.code == 400
    resp, body = await http.get(q)
    assert resp.code == 400


@pytest_twisted.ensureDeferred
async def test_client_close_answers_pending_get_with_noop(server, http):
    conf, clock = server
    sid = await handshake(http)
    q = f"{EIO}?EIO=4&transport=polling&sid={sid}"
    pending = defer.ensureDeferred(http.get(q))
    await eventually(lambda: conf.echo.sessions[sid].poll_request is not None)
    resp, body = await http.post(q, b"1")
    assert body == b"ok"
    resp, body = await pending
    assert body == b"6"
    resp, body = await http.get(q)
    assert error_of(resp, body)[1]["code"] == 1


@pytest_twisted.ensureDeferred
async def test_post_over_max_payload_is_413(server, http):
    sid = await handshake(http)
    resp, body = await http.post(f"{EIO}?EIO=4&transport=polling&sid={sid}", b"4" + b"x" * 1_000_001)
    assert resp.code == 413


@pytest_twisted.ensureDeferred
async def test_server_pings_and_pongs_keep_the_session(server, http):
    conf, clock = server
    sid = await handshake(http)
    q = f"{EIO}?EIO=4&transport=polling&sid={sid}"
    for _ in range(3):
        clock.advance(0.3)
        resp, body = await http.get(q)
        assert body == b"2"
        resp, body = await http.post(q, b"3")
        assert body == b"ok"
        clock.advance(0.15)
    assert sid in conf.echo.sessions


@pytest_twisted.ensureDeferred
async def test_ping_timeout_forgets_the_sid(server, http):
    conf, clock = server
    sid = await handshake(http)
    clock.advance(0.3)  # ping queued
    clock.advance(0.21)  # no pong
    resp, body = await http.get(f"{EIO}?EIO=4&transport=polling&sid={sid}")
    assert error_of(resp, body) == (400, {"code": 1, "message": "Session ID unknown"})
    assert conf.echo.counters["ping_timeouts"] == 1


@pytest_twisted.ensureDeferred
async def test_late_timer_still_times_out(server, http):
    """A request after the deadline finds the session gone even if the timer has not run."""
    conf, clock = server
    sid = await handshake(http)
    clock.advance(0.3)
    session = conf.echo.sessions[sid]
    clock.rightNow += 1.0  # time moves on, but no timer has fired yet
    assert session._timeout_call.active()
    resp, body = await http.get(f"{EIO}?EIO=4&transport=polling&sid={sid}")
    assert resp.code == 400 and json.loads(body)["code"] == 1


@pytest_twisted.ensureDeferred
async def test_websocket_handshake_and_echo(server):
    conf, clock = server
    ws = await ws_open(conf.ws_url + EIO + "?EIO=4&transport=websocket")
    opening = await ws.recv()
    assert opening[0] == "0"
    data = json.loads(opening[1:])
    assert set(data) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert data["upgrades"] == []
    ws.send("4hello")
    assert await ws.recv() == "4hello"
    ws.send(b"\x01\x02\x03\x04")
    assert await ws.recv() == b"\x01\x02\x03\x04"
    clock.advance(0.3)
    assert await ws.recv() == "2"
    session = conf.echo.sessions[data["sid"]]
    ws.send("3")
    await eventually(lambda: session._timeout_call is None)
    clock.advance(0.3)
    assert await ws.recv() == "2"
    clock.advance(0.21)
    await ws.wait_closed()


@pytest_twisted.ensureDeferred
async def test_websocket_with_unknown_sid_is_400(server):
    conf, clock = server
    with pytest.raises(ConnectionError) as info:
        await ws_open(conf.ws_url + EIO + "?EIO=4&transport=websocket&sid=unknown")
    assert "400" in str(info.value)


@pytest_twisted.ensureDeferred
async def test_websocket_message_over_max_payload_closes(conformance):
    conf = conformance(Clock(), max_payload=1000)
    ws = await ws_open(conf.ws_url + EIO + "?EIO=4&transport=websocket")
    await ws.recv()
    ws.send("4" + "x" * 2000)
    assert await ws.wait_closed() == 1009


@pytest_twisted.ensureDeferred
async def test_upgrade_from_polling(server, http):
    conf, clock = server
    sid = await handshake(http)
    q = f"{EIO}?EIO=4&transport=polling&sid={sid}"
    pending = defer.ensureDeferred(http.get(q))
    await eventually(lambda: conf.echo.sessions[sid].poll_request is not None)
    ws = await ws_open(f"{conf.ws_url}{EIO}?EIO=4&transport=websocket&sid={sid}")
    ws.send("2probe")
    assert await ws.recv() == "3probe"
    resp, body = await pending
    assert body == b"6"
    # Data sent before the switch travels on the new transport.
    resp, body = await http.post(q, b"4before")
    assert body == b"ok"
    ws.send("5")
    assert await ws.recv() == "4before"
    ws.send("4after")
    assert await ws.recv() == "4after"
    resp, body = await http.get(q)
    assert error_of(resp, body) == (400, {"code": 3, "message": "Bad request"})
    resp, body = await http.post(q, b"4x")
    assert resp.code == 400
    # A second WebSocket for the upgraded sid: accepted, then closed by the server.
    second = await ws_open(f"{conf.ws_url}{EIO}?EIO=4&transport=websocket&sid={sid}")
    assert await second.wait_closed() == 1000
    assert conf.echo.counters["upgrades"] == 1
    clock.advance(0.3)
    assert await ws.recv() == "2"


@pytest_twisted.ensureDeferred
async def test_upgrade_timeout_closes_the_probe(conformance):
    clock = Clock()
    conf = conformance(clock, upgrade_timeout=1.0, ping_interval=25, ping_timeout=20)
    http = HTTP(conf.url)
    try:
        sid = await handshake(http)
        ws = await ws_open(f"{conf.ws_url}{EIO}?EIO=4&transport=websocket&sid={sid}")
        ws.send("2probe")
        assert await ws.recv() == "3probe"
        clock.advance(1.0)
        await ws.wait_closed()
        # The session goes on over polling.
        resp, body = await http.post(f"{EIO}?EIO=4&transport=polling&sid={sid}", b"4still")
        resp, body = await http.get(f"{EIO}?EIO=4&transport=polling&sid={sid}")
        assert body == b"4still"
    finally:
        await http.close()


@pytest_twisted.ensureDeferred
async def test_dart_native_websocket_with_polling_in_query(server):
    """Native Dart without setTransports opens a WebSocket saying transport=polling."""
    conf, clock = server
    ws = await ws_open(conf.ws_url + EIO + "?EIO=4&transport=polling")
    assert (await ws.recv()).startswith("0{")
    ws.send("4dart")
    assert await ws.recv() == "4dart"


@pytest_twisted.ensureDeferred
async def test_socketio_connect_over_websocket_only(server, http):
    conf, clock = server
    client = await sio_ws(conf.ws_url, nsp="/", path="/socket.io/")
    assert client.open_packet["upgrades"] == []
    assert client.connect_reply.startswith('40{"sid":"')
