"""Helpers for the operations tests: DAQ streams, a raw live client, stored counts."""

import json
import os
import socket
import sqlite3
import threading
import time

from tests.daemon.harness import Daemon
from tests.daemon.test_session_replay import _split_session

MACHINE = "ShotBlast"
VIB1 = "shot_blast_vib1"
VIB1_PER_FRAME = 30  # samples of shot_blast_vib1 in each DataUpdate of session.bin


def data_frames():
    """(handshake, [DataUpdate frames]) of session.bin (FaultDetect frames left out)."""
    frames = _split_session()
    return frames[0], [f for f in frames[1:] if b"FaultDetect" not in f]


def stored_count(db_path, sensor=VIB1, level="hour"):
    """Samples stored for ``sensor`` at ``level`` (0 if nothing yet)."""
    if not os.path.exists(db_path):
        return 0
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute(f'SELECT SUM("count") FROM "{sensor}_{level}_avg" WHERE t0 IS NOT NULL').fetchone()
    except sqlite3.OperationalError:
        return 0  # the table is not created yet
    finally:
        con.close()
    return row[0] or 0


def bucket_rows(db_path, sensor=VIB1, level="hour"):
    """``{t0: (time text, count)}`` of a level table."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute(f'SELECT t0, time, "count" FROM "{sensor}_{level}_avg" WHERE t0 IS NOT NULL').fetchall()
    finally:
        con.close()
    return {t0: (text, n) for t0, text, n in rows}


def wait_for(predicate, timeout, what, step=0.1):
    """Poll ``predicate`` until it is true; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(step)


class DAQStream(threading.Thread):
    """One DAQ connection sending the handshake, then DataUpdates at ``pace``
    until :meth:`finish`; ``sent`` counts the DataUpdates handed to the kernel."""

    def __init__(self, port, pace=0.02):
        super().__init__(daemon=True)
        self.port = port
        self.pace = pace
        self.sent = 0
        self.error = None
        self._halt = threading.Event()
        self.handshake, self.frames = data_frames()

    def run(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                s.sendall(self.handshake)
                i = 0
                while not self._halt.is_set():
                    s.sendall(self.frames[i])
                    self.sent += 1
                    i = (i + 1) % len(self.frames)
                    self._halt.wait(self.pace)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(10)
                try:
                    s.recv(1)  # wait until the daemon has read everything and closes
                except OSError:
                    pass
        except Exception as e:  # reported by finish()
            self.error = e

    def finish(self, timeout=20):
        self._halt.set()
        self.join(timeout)
        assert not self.is_alive(), "DAQ stream did not finish"
        assert self.error is None, repr(self.error)
        return self.sent


class LiveWatcher(threading.Thread):
    """A raw WebSocket Socket.IO client (the deployed app's sequence) on
    ``/sio/<machine>``: answers pings, records ``(monotonic time, kind, payload)``
    for every ping and update."""

    def __init__(self, http_port, machine=MACHINE):
        super().__init__(daemon=True)
        self.url = f"ws://127.0.0.1:{http_port}/socket.io/?EIO=4&transport=websocket"
        self.nsp = "/sio/" + machine
        self.events = []
        self.error = None
        self.closed = threading.Event()
        self.connected = threading.Event()
        self._halt = threading.Event()
        self.ws = None

    def _connect(self):
        import websocket  # websocket-client

        deadline = time.monotonic() + 15
        while True:
            ws = websocket.create_connection(self.url, timeout=5)
            assert ws.recv().startswith("0{")
            ws.send("40" + self.nsp + ",")
            answer = ws.recv()
            if answer.startswith("40" + self.nsp + ","):
                return ws
            ws.close()  # CONNECT_ERROR: the machine is not known yet
            if time.monotonic() > deadline:
                raise AssertionError(f"cannot connect {self.nsp}: {answer}")
            time.sleep(0.2)

    def run(self):
        prefix = "42" + self.nsp + ","
        try:
            self.ws = self._connect()
            self.connected.set()
            while not self._halt.is_set():
                try:
                    msg = self.ws.recv()
                except Exception:
                    if self._halt.is_set():
                        break
                    raise
                now = time.monotonic()
                if msg == "":
                    break  # closed
                if msg == "2":
                    self.ws.send("3")
                    self.events.append((now, "ping", None))
                elif msg.startswith(prefix):
                    name, payload = json.loads(msg[len(prefix):])[:2]
                    self.events.append((now, name, payload))
        except Exception as e:
            if not self._halt.is_set():
                self.error = e
        finally:
            self.closed.set()

    def since(self, t, kind):
        return [p for (when, k, p) in list(self.events) if when >= t and k == kind]

    def finish(self):
        self._halt.set()
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
        self.join(10)


class EnvDaemon(Daemon):
    """The harness daemon with extra environment (LD_PRELOAD for libfaketime...)."""

    def __init__(self, workdir, overrides=None, env=None):
        super().__init__(workdir, overrides=overrides, env=env)

    @property
    def db(self):
        return os.path.join(self.workdir, "db", MACHINE + ".db")
