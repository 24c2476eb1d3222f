"""Pieces of the three-node test (test_three_nodes.py) that run beside real
daemon processes, each on threads of its own: a fake FCM (OAuth token and
v1 send), a paced legacy DAQ (the deployed pickle frames through
``tsrmon.daqside.client.DAQClient``, which reconnects as the deployed DAQ
does), python-socketio watchers, and Debian's haproxy with etc/haproxy.cfg."""

import http.server
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from tests.ops.helpers import wait_for
from tsrmon.daqside.client import DAQClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HAPROXY_CFG = os.path.join(ROOT, "etc", "haproxy.cfg")
SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fcm_shim.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port, path, timeout=10):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


# -- FCM -----------------------------------------------------------------------
class FakeFcm:
    """Google's token endpoint (``/token``) and FCM v1 send (``/v1/...``) on
    127.0.0.1; ``sends`` holds each pushed message's ``data``."""

    def __init__(self):
        self.sends = []
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path == "/token":
                    answer = {"access_token": "tok", "expires_in": 3599, "token_type": "Bearer"}
                else:
                    with fake.lock:
                        fake.sends.append(json.loads(body)["message"]["data"])
                        answer = {"name": f"projects/p/messages/{len(fake.sends)}"}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-fcm", daemon=True)
        self.thread.start()

    @property
    def send_url(self):
        return self.base + "/v1/projects/{project}/messages:send"

    def pushes(self, **match):
        with self.lock:
            return [d for d in self.sends if all(d.get(k) == v for k, v in match.items())]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# -- the DAQ -------------------------------------------------------------------
class Feeder(threading.Thread):
    """One machine's DAQ through HAProxy: ``rate`` DataUpdates a second of
    two sensors × 30 floats (the deployed shape), ``vib1`` (VIB) and
    ``temp1`` (TEMP, at ``self.temp``); ``fault(score)`` sends a FaultDetect
    with the next frame.  ``frames`` counts the DataUpdates handed to the
    client, which buffers while it cannot connect (nothing is dropped: the
    buffer outsizes the test) and reconnects with backoff."""

    def __init__(self, port, machine, rate=10, temp=20.0):
        super().__init__(name=f"daq-{machine}", daemon=True)
        self.client = DAQClient("127.0.0.1", port, machine, encoding="pickle", timeout=5,
                                backoff_min=0.2, backoff_max=1.0)
        self.rate = rate
        self.temp = temp
        self.frames = 0
        self.faults = []
        self.rng = random.Random(machine)
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def fault(self, score, threshold=5):
        with self.lock:
            self.faults.append((score, threshold))

    def run(self):
        period = 1.0 / self.rate
        next_t = time.monotonic()
        while not self.halt.is_set():
            with self.lock:
                faults, self.faults = self.faults, []
            for score, threshold in faults:
                self.client.send_fault(score, threshold)
            data = {"vib1": {"type": "VIB", "data": [self.rng.gauss(0.0, 0.5) for _ in range(30)]},
                    "temp1": {"type": "TEMP", "data": [self.temp + self.rng.random() for _ in range(30)]}}
            self.frames += 1
            self.client.send_data(data)
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))

    def finish(self, timeout=20):
        """Stop sending, write out what is buffered, close the connection."""
        self.halt.set()
        self.join(timeout)
        wait_for(lambda: self.client.flush(), timeout, f"{self.client.machine}'s buffered frames sent")
        self.client.close()


# -- live clients --------------------------------------------------------------
class Watcher:
    """A python-socketio client on one node, on every machine's namespace,
    subscribed to ``vib1``'s seconds; keeps (monotonic time, payload) per
    (machine, event)."""

    def __init__(self, port, machines):
        import socketio

        self.port = port
        self.machines = machines
        self.events = {}
        self.lock = threading.Lock()
        self.sio = socketio.Client(reconnection=False)
        for m in machines:
            for event in ("update", "second"):
                self.sio.on(event, self._keeper(m, event), namespace=f"/sio/{m}")

    def _keeper(self, machine, event):
        def keep(data):
            with self.lock:
                self.events.setdefault((machine, event), []).append((time.monotonic(), data))
        return keep

    def connect(self, timeout=30):
        """Connect once every namespace is known to the node (a machine fed
        elsewhere is known once its first events came over the bus)."""
        import socketio

        def attempt():
            try:
                self.sio.connect(f"http://127.0.0.1:{self.port}", transports=["websocket"],
                                 namespaces=[f"/sio/{m}" for m in self.machines], wait_timeout=5)
            except socketio.exceptions.ConnectionError:
                try:
                    self.sio.disconnect()
                except Exception:
                    pass
                return False
            return True
        wait_for(attempt, timeout, f"socket.io on port {self.port}", step=0.5)
        for m in self.machines:
            self.sio.emit("subscribe", ["vib1"], namespace=f"/sio/{m}")

    def got(self, machine, event, since=0.0):
        with self.lock:
            return [p for t, p in self.events.get((machine, event), ()) if t >= since]

    def close(self):
        try:
            self.sio.disconnect()
        except Exception:
            pass


# -- HAProxy -------------------------------------------------------------------
class Haproxy:
    """etc/haproxy.cfg in front of ``nodes`` (daemon harness objects)."""

    def __init__(self, nodes, workdir):
        self.daq_port, self.http_port = free_port(), free_port()
        env = dict(os.environ)
        for i, node in enumerate(nodes, 1):
            env[f"TSRMON_NODE{i}_DAQ"] = f"127.0.0.1:{node.tcp_port}"
            env[f"TSRMON_NODE{i}_HTTP"] = f"127.0.0.1:{node.http_port}"
        env["TSRMON_DAQ_BIND"] = f"127.0.0.1:{self.daq_port}"
        env["TSRMON_HTTP_BIND"] = f"127.0.0.1:{self.http_port}"
        env["TSRMON_MAXCONN"] = "200"  # within a test runner's fd limit
        self.log = open(os.path.join(str(workdir), "haproxy.out"), "wb")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", HAPROXY_CFG], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout=10):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.daq_port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(up, timeout, "haproxy listening")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
