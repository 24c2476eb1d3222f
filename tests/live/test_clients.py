"""Real clients against the live layer on the real reactor (LIVE.INTERVAL 1 s):
python-socketio (websocket-only, polling with upgrade) and npm socket.io-client
4.x (both transports), each connecting to /sio/m1, emitting ``initialize`` and
receiving ``initialize``, ``update`` and ``anomaly``.
"""

import json
import os
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor, threads, utils
from twisted.internet.task import LoopingCall

from tests.conftest import JS_DIR
from tests.live.conftest import FakeDAQ
from tests.live.helpers import eventually
from tsrmon.stats.sums import PartialSums

# Real client libraries end to end (~1-2 s each measured, Node startup included).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]

VIB = [-1.5, 0.5, 2.0]
TEMP = [20.0, 22.0]


@pytest.fixture
def streaming(make_server):
    """A server whose m1 DAQ streams one second of vib1/temp1 plus a FaultDetect every 0.2 s."""
    server = make_server(live={"INTERVAL": 1})
    machine = server.hub.claim("m1", FakeDAQ())

    def tick():
        t = reactor.seconds()
        server.bus.second("m1", "vib1", "VIB", t, PartialSums.of(VIB))
        server.bus.second("m1", "temp1", "TEMP", t, PartialSums.of(TEMP))
        server.hub.fault(machine, 7, 5)  # ints from the DAQ: clients must get floats

    loop = LoopingCall(tick)
    loop.start(0.2)
    pytest_twisted.blockon(eventually_cached(server))
    yield server
    loop.stop()


def eventually_cached(server):
    from twisted.internet import defer
    return defer.ensureDeferred(eventually(lambda: server.live.counters()["cached_updates"] >= 2, timeout=5))


def check_payloads(got, strict_floats=True):
    inits = got["initialize"]
    assert inits and all(isinstance(lst, list) and lst for lst in inits)
    assert {lst[0]["sensor_name"] for lst in inits} == {"vib1", "temp1"}
    update = got["update"]
    assert set(update) == {"sensor_name", "data", "time"}
    expected = {"vib1": 4 / 3, "temp1": 21.0}[update["sensor_name"]]
    assert update["data"] == pytest.approx(expected)
    assert got["anomaly"] == {"score": 7.0, "threshold": 5.0}
    if strict_floats:
        assert type(update["data"]) is float
        assert type(got["anomaly"]["score"]) is float and type(got["anomaly"]["threshold"]) is float
        assert all(type(p["data"]) is float for lst in inits for p in lst)


def run_python_client(url, transports):
    import socketio

    ns = "/sio/m1"
    sio = socketio.Client(reconnection=False)
    got = {}
    done = threading.Event()

    def handler(name):
        def on(data):
            if name == "initialize":
                got.setdefault(name, []).append(data)
            else:
                got.setdefault(name, data)
            if len(got) == 3:
                done.set()
        return on

    for name in ("initialize", "update", "anomaly"):
        sio.on(name, handler(name), namespace=ns)
    sio.connect(url, namespaces=[ns], transports=transports, wait_timeout=5)
    try:
        sio.emit("initialize", "vib1", namespace=ns)
        assert done.wait(10), f"got only {sorted(got)}"
        return got, sio.transport()
    finally:
        sio.disconnect()


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"], ["polling"]],
                         ids=["websocket", "polling-upgrade", "polling-only"])
@pytest_twisted.ensureDeferred
async def test_python_socketio_client(streaming, transports):
    got, transport = await threads.deferToThread(run_python_client, streaming.url, transports)
    check_payloads(got)
    assert transport == transports[-1]
    assert streaming.live.counters()["upgrades"] == (1 if transports == ["polling", "websocket"] else 0)
    await eventually(lambda: streaming.live.counters()["sessions"] == 0)


@pytest.mark.parametrize("version", ["4", "2"], ids=["v4.8.4", "v2.5.0-eio3"])
@pytest.mark.parametrize("mode", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_node_socketio_client(streaming, node_client, mode, version):
    node, script = node_client
    out, err, code = await utils.getProcessOutputAndValue(
        node, [script, streaming.url, mode, "/sio/m1", "", version], env=dict(os.environ), path=JS_DIR)
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert code == 0, (out, err)
    connected = next(line for line in lines if "connected" in line)
    if mode == "websocket":
        assert connected["transport"] == "websocket"
        assert not any("upgraded" in line for line in lines)
    got = {}
    for line in lines:
        if "event" in line:
            if line["event"] == "initialize":
                got.setdefault("initialize", []).append(line["data"])
            else:
                got.setdefault(line["event"], line["data"])
    check_payloads(got, strict_floats=False)  # JSON.stringify drops ".0"; the raw WS test checks the wire
    if mode == "polling":
        assert {"upgraded": "websocket"} in lines
        assert streaming.live.counters()["upgrades"] == 1


@pytest_twisted.ensureDeferred
async def test_node_client_unknown_machine_gets_connect_error(streaming, node_client):
    node, script = node_client
    out, err, code = await utils.getProcessOutputAndValue(
        node, [script, streaming.url, "websocket", "/sio/nobody"], env=dict(os.environ), path=JS_DIR)
    assert code == 1
    assert {"connect_error": "Invalid namespace"} in [json.loads(x) for x in out.decode().splitlines() if x]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_deployed_app_sequence_raw_websocket(streaming, transport):
    """The Flutter app: WebSocket only, EIO=4, CONNECT /sio/<machine> without auth,
    emit ``initialize`` with the channel name; every number on the wire is a JSON float.
    (``transport=polling`` in a WebSocket URL is what native Dart sends without setTransports.)"""
    from tests.live.helpers import events, ws_open

    ws = await ws_open(streaming.ws_url + f"/socket.io/?EIO=4&transport={transport}")
    opening = json.loads((await ws.recv())[1:])
    assert opening["upgrades"] == [] and opening["pingInterval"] == 25000
    ws.send("40/sio/m1,")
    assert (await ws.recv()).startswith('40/sio/m1,{"sid":"')
    ws.send('42/sio/m1,["initialize","vib1"]')
    seen = {}
    frames = await ws.recv_until(lambda f: bool(events([f])) and seen.update({events([f])[0][0]: f}) is None
                                 and {"initialize", "update", "anomaly"} <= set(seen))
    assert '"data":' in seen["update"]
    assert seen["anomaly"] == '42/sio/m1,["anomaly",{"score":7.0,"threshold":5.0}]'
    for name, args in events(frames):
        if name == "update":
            assert type(args[0]["data"]) is float and "." in json.dumps(args[0]["data"])
        elif name == "initialize":
            assert all(type(p["data"]) is float for p in args[0])
    ws.close()
    await ws.wait_closed()
