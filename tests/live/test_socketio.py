"""Socket.IO v5 behaviour (CONNECT, events, acks, binary attachments; docs/socketio.md) on the conformance fixture namespaces."""

import json

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from tests.live.helpers import HTTP, eventually, sio_ws, ws_open


@pytest.fixture
def server(conformance):
    clock = Clock()
    return conformance(clock), clock


async def engine(conf):
    ws = await ws_open(conf.ws_url + "/socket.io/?EIO=4&transport=websocket")
    assert (await ws.recv()).startswith("0{")
    return ws


@pytest_twisted.ensureDeferred
async def test_connect_root_reply_has_only_a_fresh_sid(server):
    conf, clock = server
    ws = await engine(conf)
    ws.send("40")
    reply = await ws.recv()
    assert reply.startswith("40{")
    data = json.loads(reply[2:])
    assert set(data) == {"sid"} and len(data["sid"]) == 20
    assert data["sid"] not in conf.sio.sessions  # not the engine sid
    assert await ws.recv() == '42["auth",{}]'


@pytest_twisted.ensureDeferred
async def test_connect_with_auth_payload_and_custom_namespace(server):
    conf, clock = server
    ws = await engine(conf)
    ws.send('40/custom,{"token":"123"}')
    assert (await ws.recv()).startswith('40/custom,{"sid":"')
    assert await ws.recv() == '42/custom,["auth",{"token":"123"}]'
    ws.send("40")
    assert (await ws.recv()).startswith('40{"sid":')
    assert await ws.recv() == '42["auth",{}]'


@pytest_twisted.ensureDeferred
async def test_namespace_without_comma(server):
    conf, clock = server
    ws = await engine(conf)
    ws.send("40/custom")
    assert (await ws.recv()).startswith('40/custom,{"sid":"')
    await ws.recv()
    ws.send("41/custom")
    clock.advance(0.3)
    assert await ws.recv() == "2"  # the engine session stays


@pytest_twisted.ensureDeferred
async def test_unknown_namespace_is_refused(server):
    conf, clock = server
    ws = await engine(conf)
    ws.send("40/random")
    assert await ws.recv() == '44/random,{"message":"Invalid namespace"}'


@pytest_twisted.ensureDeferred
async def test_event_and_binary_event_echo(server):
    conf, clock = server
    ws = await sio_ws(conf.ws_url, nsp="/")
    await ws.recv()  # auth
    ws.send('42["message",1,"2",{"3":[true]}]')
    assert await ws.recv() == '42["message-back",1,"2",{"3":[true]}]'
    ws.send('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
    ws.send(b"\x01\x02\x03")
    ws.send(b"\x04\x05\x06")
    assert await ws.recv() == '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    assert await ws.recv() == b"\x01\x02\x03"
    assert await ws.recv() == b"\x04\x05\x06"


@pytest_twisted.ensureDeferred
async def test_ack_and_binary_ack(server):
    conf, clock = server
    ws = await sio_ws(conf.ws_url, nsp="/")
    await ws.recv()
    ws.send('42456["message-with-ack",1,"2",{"3":[false]}]')
    assert await ws.recv() == '43456[1,"2",{"3":[false]}]'
    ws.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
    ws.send(b"\x01\x02\x03")
    ws.send(b"\x04\x05\x06")
    assert await ws.recv() == '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    assert await ws.recv() == b"\x01\x02\x03"
    assert await ws.recv() == b"\x04\x05\x06"


@pytest_twisted.ensureDeferred
async def test_binary_over_polling_uses_b64_packets(server):
    conf, clock = server
    http = HTTP(conf.url)
    try:
        resp, body = await http.get("/socket.io/?EIO=4&transport=polling")
        sid = json.loads(body[1:])["sid"]
        q = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        await http.post(q, b"40")
        resp, body = await http.get(q)
        assert body.decode().split("\x1e")[1] == '42["auth",{}]'
        await http.post(q, b'451-["message",{"_placeholder":true,"num":0}]\x1ebAQIDBA==')
        resp, body = await http.get(q)
        assert body.decode() == '451-["message-back",{"_placeholder":true,"num":0}]\x1ebAQIDBA=='
    finally:
        await http.close()


@pytest.mark.parametrize("bad", ["4abc", "42{}", '42abc["x"]', "42[]", '41{"a":1}', "4"])
@pytest_twisted.ensureDeferred
async def test_invalid_packets_close_the_connection(server, bad):
    conf, clock = server
    ws = await sio_ws(conf.ws_url, nsp="/")
    ws.send(bad)
    assert await ws.wait_closed() is not None


@pytest_twisted.ensureDeferred
async def test_event_for_unconnected_namespace_closes(server):
    conf, clock = server
    ws = await sio_ws(conf.ws_url, nsp="/")
    ws.send('42/custom,["message",1]')
    await ws.wait_closed()


@pytest_twisted.ensureDeferred
async def test_reserved_event_names_are_ignored(server):
    conf, clock = server
    ws = await sio_ws(conf.ws_url, nsp="/")
    assert await ws.recv() == '42["auth",{}]'
    ws.send('42["disconnecting","x"]')
    ws.send('42["message","still here"]')
    assert await ws.recv() == '42["message-back","still here"]'


@pytest_twisted.ensureDeferred
async def test_connect_timeout(server):
    conf, clock = server
    ws = await engine(conf)
    await eventually(lambda: len(conf.sio.sessions) == 1)
    clock.advance(1.0)
    await ws.wait_closed()
    assert conf.sio.sessions == {}
