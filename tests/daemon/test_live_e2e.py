"""Real Socket.IO clients against the real daemon while a DAQ streams session.bin (issue 6).

python-socketio (websocket only, and polling with upgrade), npm socket.io-client
4.x (both transports) and a raw WebSocket replaying the deployed Flutter app's
exact sequence all connect to /sio/ShotBlast, emit ``initialize`` and receive
``initialize``, ``update`` and ``anomaly`` with the deployed payloads, numbers
as JSON floats.
"""

import json
import socket
import subprocess
import threading
import time

import pytest
import socketio
import websocket

from tests.daemon.harness import Daemon
from tests.daemon.test_session_replay import _split_session

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]  # ~15 s measured
NSP = "/sio/ShotBlast"
SENSORS = {"shot_blast_vib1", "shot_blast_vib2", "oil_temp"}


def stream(port, frames, pace, started):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(frames[0])
        for i, f in enumerate(frames[1:]):
            s.sendall(f)
            if i == 25:
                started.set()  # 2.5 s of data: updates are cached; the over-threshold fault is frame 63
            time.sleep(pace)
        time.sleep(1.5)


class PyClient:
    def __init__(self, url, transports):
        self.events = {"initialize": [], "update": [], "anomaly": []}
        self.done = threading.Event()
        self.sio = socketio.Client(reconnection=False)
        for name in self.events:
            self.sio.on(name, self._handler(name), namespace=NSP)
        self.url = url
        self.transports = transports

    def _handler(self, name):
        def record(data):
            self.events[name].append(data)
            over = any(a["score"] > a["threshold"] for a in self.events["anomaly"])
            if all(self.events.values()) and over:
                self.done.set()
        return record

    def run(self):
        self.sio.connect(self.url, namespaces=[NSP], transports=self.transports, wait_timeout=10)
        self.sio.emit("initialize", "shot_blast_vib1", namespace=NSP)
        self.done.wait(20)
        self.transport = self.sio.transport()
        self.sio.disconnect()


def check_payloads(events):
    assert events["initialize"] and events["update"] and events["anomaly"], {k: len(v) for k, v in events.items()}
    for batch in events["initialize"]:
        assert batch and len({item["sensor_name"] for item in batch}) == 1
        for item in batch:
            assert item["sensor_name"] in SENSORS
            assert isinstance(item["data"], float) and isinstance(item["time"], str)
    for item in events["update"]:
        assert set(item) == {"sensor_name", "data", "time"}
        assert item["sensor_name"] in SENSORS and isinstance(item["data"], float)
    for item in events["anomaly"]:
        assert isinstance(item["score"], float) and isinstance(item["threshold"], float)
    assert {"score": 7.0, "threshold": 5.0} in events["anomaly"]


def raw_app_sequence(port, out):
    """The deployed app: websocket only, EIO=4, CONNECT /sio/<machine>, emit initialize."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket",
                                     timeout=10)
    try:
        opened = ws.recv()
        assert opened.startswith("0{") and json.loads(opened[1:])["upgrades"] == []
        ws.send(f"40{NSP},")
        reply = ws.recv()
        assert reply.startswith(f"40{NSP},") and set(json.loads(reply.split(",", 1)[1])) == {"sid"}
        ws.send(f'42{NSP},["initialize","shot_blast_vib1"]')
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            frame = ws.recv()
            if frame == "2":
                ws.send("3")
                continue
            out.append(frame)
            if any('"anomaly"' in f and '"score":7.0' in f for f in out) and \
                    any('["update"' in f for f in out):
                break
    finally:
        ws.close()


def test_real_clients_receive_the_deployed_events_while_session_bin_streams(tmp_path, node_client):
    node, script = node_client
    d = Daemon(tmp_path, overrides={"LIVE": {"INTERVAL": 1}}).start()
    try:
        frames = _split_session()
        started = threading.Event()
        feeder = threading.Thread(target=stream, args=(d.tcp_port, frames, 0.1, started))
        feeder.start()
        assert started.wait(20)
        url = f"http://127.0.0.1:{d.http_port}"
        py_ws, py_poll = PyClient(url, ["websocket"]), PyClient(url, ["polling", "websocket"])
        raw = []
        threads = [threading.Thread(target=c.run) for c in (py_ws, py_poll)]
        threads.append(threading.Thread(target=raw_app_sequence, args=(d.http_port, raw)))
        nodes = [subprocess.Popen([node, script, url, mode, NSP], stdout=subprocess.PIPE, text=True)
                 for mode in ("websocket", "polling")]
        for t in threads:
            t.start()
        outputs = [p.communicate(timeout=30)[0] for p in nodes]
        for t in threads:
            t.join(30)
        feeder.join(30)
    finally:
        assert d.stop() == 0, d.log_text()

    check_payloads(py_ws.events)
    check_payloads(py_poll.events)
    assert py_ws.transport == "websocket" and py_poll.transport == "websocket"  # upgraded

    for p, out in zip(nodes, outputs):
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert p.returncode == 0, out
        got = {line["event"]: line["data"] for line in lines if "event" in line}
        assert {"initialize", "update", "anomaly"} <= set(got)
        assert got["update"]["sensor_name"] in SENSORS
    assert any('"update"' in f for f in raw)
    # the wire text itself carries floats with a decimal point, as the Dart VM needs
    assert any('["anomaly",{"score":7.0,"threshold":5.0}]' in f for f in raw), raw[-5:]
    init = [f for f in raw if '["initialize"' in f]
    assert init and all('"data":' in f for f in init)
