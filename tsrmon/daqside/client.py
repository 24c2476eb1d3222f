"""A small DAQ client for tsrmon (and for the deployed server, in legacy mode).

Plain blocking sockets and the standard library only, so it runs on a DAQ PC
next to NI-DAQmx without Twisted::

    from tsrmon.client import DAQClient   # or tsrmon.daqside.client

    daq = DAQClient("monitor.local", 8082, "ShotBlast", encoding="json", token="s3cret")
    daq.send_data({"vib1": {"type": "VIB", "data": [0.12, -0.08, ...]}})
    daq.send_fault(score=3, threshold=5)
    daq.close()

``encoding="pickle"`` writes exactly what the deployed DAQ writes (pickle
protocol 4 plus the ``5C 6F`` terminator); ``"json"`` writes the JSON lines
encoding of ``docs/protocol.md``, which carries a ``time`` so samples buffered
while the server was unreachable keep their own time.

Sending never blocks the acquisition loop for long: when the server cannot
be reached, frames go to a bounded offline buffer (oldest dropped first,
counted in ``dropped``) and the next send after the backoff delay tries to
reconnect and flush it.  The delay doubles from ``backoff_min`` to
``backoff_max`` after each failed attempt.
"""

import collections
import socket
import time

from tsrmon.daqside.wire import encode_json, encode_pickle, finite_only


class DAQClient:
    def __init__(self, host, port, machine, encoding="pickle", token=None, timeout=10.0,
                 buffer_frames=3600, backoff_min=0.5, backoff_max=30.0, clock=time.monotonic,
                 wallclock=time.time, keepalive=True):
        if encoding not in ("pickle", "json"):
            raise ValueError("encoding must be 'pickle' or 'json'")
        if token is not None and encoding != "json":
            raise ValueError("a token needs the json encoding")
        self.host = host
        self.port = port
        self.machine = machine
        self.encoding = encoding
        self.token = token
        self.timeout = timeout
        self.buffer = collections.deque(maxlen=buffer_frames)
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.clock = clock
        self.wallclock = wallclock
        self.keepalive = keepalive
        self.sock = None
        self.sent = 0
        self.dropped = 0
        self.connects = 0
        self._delay = backoff_min
        self._next_attempt = 0.0

    # -- public API ---------------------------------------------------------
    def send_data(self, sensors, t=None):
        """``sensors``: ``{name: {"type": "VIB", "data": [float, ...]}}``."""
        return self._send("DataUpdate", sensors, t)

    def send_fault(self, score, threshold, t=None):
        return self._send("FaultDetect", {"score": score, "threshold": threshold}, t)

    def connected(self):
        return self.sock is not None

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    # -- internals ------------------------------------------------------------
    def _send(self, event, data, t):
        """Queue one frame and try to flush; True if everything went out."""
        if t is None:
            t = self.wallclock()
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
        item = (event, data, t)
        self.buffer.append(item)
        return self.flush(_fresh=item)

    def flush(self, _fresh=None):
        """Send what is buffered; True if the buffer is empty afterwards."""
        if self.sock is None and not self._connect():
            return False
        while self.buffer:
            item = self.buffer[0]
            event, data, t = item
            try:
                # A frame sent at once is stamped on arrival; one that
                # waited in the offline buffer carries its own time.
                self.sock.sendall(self._encode(event, data, t, late=item is not _fresh))
            except OSError:
                self._lost()
                return False
            self.buffer.popleft()
            self.sent += 1
        return True

    def _encode(self, event, data, t, late):
        if self.encoding == "pickle":
            return encode_pickle(event, data)
        if event == "DataUpdate":
            data = finite_only(data)
        return encode_json(event, data, t if late else None)

    def _connect(self):
        now = self.clock()
        if now < self._next_attempt:
            return False
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError:
            self._backoff(now)
            return False
        if self.keepalive:
            _keepalive(sock)
        self.sock = sock
        try:
            if self.encoding == "pickle":
                sock.sendall(encode_pickle("name", self.machine))
            else:
                sock.sendall(encode_json("name", self.machine, token=self.token))
        except OSError:
            self._lost()
            return False
        self.connects += 1
        self._delay = self.backoff_min
        return True

    def _lost(self):
        self.close()
        self._backoff(self.clock())

    def _backoff(self, now):
        self._next_attempt = now + self._delay
        self._delay = min(self._delay * 2, self.backoff_max)


def _keepalive(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
