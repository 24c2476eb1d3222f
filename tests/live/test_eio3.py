"""Engine.IO v3 / Socket.IO v4 for old clients (docs/socketio.md, "Engine.IO v3 / Socket.IO v4 (old clients)").

The Node 2.x client runs in test_clients.py; these pin the wire details.
"""

import json

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.live.conftest import FakeDAQ
from tests.live.helpers import HTTP, eventually, ws_open


@pytest.fixture
def v3(make_server):
    server = make_server(clock=Clock(), live={"PING_INTERVAL": 1, "PING_TIMEOUT": 0.5})
    http = HTTP(server.url)
    yield server, http
    pytest_twisted.blockon(defer.ensureDeferred(http.close()))


def split_v3(body):
    """Length-prefixed packets, lengths in UTF-16 code units (checked here independently)."""
    text, out = body.decode("utf-8"), []
    while text:
        n, _, rest = text.partition(":")
        n = int(n)
        units = 0
        for i, ch in enumerate(rest):
            if units == n:
                break
            units += 2 if ord(ch) > 0xFFFF else 1
        else:
            i = len(rest)
        out.append(rest[:i])
        text = rest[i:]
    return out


async def handshake(http, query="EIO=3&transport=polling&b64=1"):
    resp, body = await http.get("/socket.io/?" + query)
    assert resp.code == 200
    prefix, _, packet = body.decode().partition(":")
    assert int(prefix) == len(packet)
    return json.loads(packet[1:])["sid"]


@pytest_twisted.ensureDeferred
async def test_v3_polling_handshake_auto_connect_and_namespace(v3):
    server, http = v3
    sid = await handshake(http)
    q = f"/socket.io/?EIO=3&transport=polling&b64=1&sid={sid}"
    resp, body = await http.get(q)
    assert body == b"2:40"  # v4 protocol: "/" joined at once
    resp, body = await http.post(q, b"20:40/sio/m1?token=abc,")
    assert body == b"ok"
    resp, body = await http.get(q)
    assert body == b"10:40/sio/m1,"  # no payload in a v4 CONNECT reply
    socket = next(iter(server.live.namespace("m1").sockets))
    assert socket == f"/sio/m1#{sid}"
    server.live.namespace("m1").broadcast("update", {"b": "€😀"})
    server.hub.claim("m1", FakeDAQ())
    server.hub.fault(server.hub.get("m1"), 3, 4)
    resp, body = await http.get(q)
    assert body.startswith('32:42/sio/m1,["update",{"b":"€😀"}]'.encode())
    packets = split_v3(body)
    assert packets[0] == '42/sio/m1,["update",{"b":"€😀"}]'
    assert packets[-1] == '42/sio/m1,["anomaly",{"score":3.0,"threshold":4.0}]'
    # A client payload counted in UTF-16 units parses.
    resp, body = await http.post(q, '30:42/sio/m1,["initialize","€😀"]1:2'.encode())
    assert body == b"ok"
    resp, body = await http.get(q)
    assert body == b"1:3"  # EIO3: the client pings, the server answers


@pytest_twisted.ensureDeferred
async def test_v3_missing_eio_counts_as_3_and_bad_eio_is_refused(v3):
    server, http = v3
    await handshake(http, "transport=polling")
    resp, body = await http.get("/socket.io/?EIO=5&transport=polling")
    assert (resp.code, json.loads(body)["code"]) == (400, 5)


@pytest_twisted.ensureDeferred
async def test_v3_unknown_namespace_error_is_a_string(v3):
    server, http = v3
    sid = await handshake(http)
    q = f"/socket.io/?EIO=3&transport=polling&b64=1&sid={sid}"
    await http.get(q)
    await http.post(q, b"14:40/sio/nobody,")
    resp, body = await http.get(q)
    assert split_v3(body) == ['44/sio/nobody,"Invalid namespace"']


@pytest_twisted.ensureDeferred
async def test_v3_no_client_ping_times_out(v3):
    server, http = v3
    sid = await handshake(http)
    server.clock.advance(1.6)
    resp, body = await http.get(f"/socket.io/?EIO=3&transport=polling&sid={sid}")
    assert (resp.code, json.loads(body)["code"]) == (400, 1)


@pytest_twisted.ensureDeferred
async def test_v3_websocket_pings_and_binary_type_byte(conformance):
    conf = conformance(Clock(), allow_eio3=True)
    ws = await ws_open(conf.ws_url + "/engine.io/?EIO=3&transport=websocket")
    assert (await ws.recv()).startswith("0{")
    ws.send("2")
    assert await ws.recv() == "3"
    ws.send(b"\x04\x01\x02")
    assert await ws.recv() == b"\x04\x01\x02"
    sio = await ws_open(conf.ws_url + "/socket.io/?EIO=3&transport=websocket")
    await sio.recv()
    assert await sio.recv() == "40"
    assert await sio.recv() == '42["auth",{}]'
    sio.send("40/custom,")
    assert await sio.recv() == "40/custom,"


@pytest_twisted.ensureDeferred
async def test_v3_tokens_in_the_namespace_query(make_server):
    server = make_server(clock=Clock(), auth=["s3cret"])
    ws = await ws_open(server.ws_url + "/socket.io/?EIO=3&transport=websocket")
    await ws.recv()
    assert await ws.recv() == '44"Not authorized"'  # the automatic "/" needs a token too
    ws.send("40/sio/m1?token=s3cret,")
    assert await ws.recv() == "40/sio/m1,"
    ws.send("40/sio/m1?token=nope,")  # already connected: ignored
    ws2 = await ws_open(server.ws_url + "/socket.io/?EIO=3&transport=websocket&token=s3cret")
    await ws2.recv()
    assert await ws2.recv() == "40"
    await eventually(lambda: server.live.counters()["connects"] == 2)
