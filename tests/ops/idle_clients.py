"""Idle raw-WebSocket Socket.IO clients (run as a process by test_faults.py).

    python idle_clients.py <port> <clients> <namespace>[,<namespace>...]

Each client does the deployed app's sequence (websocket-only EIO=4, CONNECT
one namespace, the namespaces taken in turn), then stays connected doing
nothing but answering pings and counting what it receives.  Prints READY once
every client is connected; on a line ``STOP`` on stdin (or EOF) prints one
JSON line ``{"clients", "connected", "pings", "events", "closed"}`` and exits.
"""

import asyncio
import json
import os
import sys

from tests.live.many_clients import frame, read_frame


class IdleClient:
    def __init__(self, port, nsp):
        self.port = port
        self.nsp = nsp
        self.pings = 0
        self.events = 0
        self.closed = False
        self.writer = None

    async def connect(self):
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        op, payload = await read_frame(reader)
        assert payload.startswith(b"0{"), payload
        self.writer.write(frame("40" + self.nsp + ","))
        while True:
            op, payload = await read_frame(reader)
            # On a loaded machine the first ping may come before the CONNECT ack.
            if payload == b"2":
                self.pings += 1
                self.writer.write(frame("3"))
                continue
            break
        assert payload.startswith(b"40" + self.nsp.encode() + b",{"), payload
        return reader

    async def idle(self, reader):
        try:
            while True:
                op, payload = await read_frame(reader)
                if op == 8:
                    break
                if payload == b"2":
                    self.pings += 1
                    self.writer.write(frame("3"))
                else:
                    self.events += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self.closed = True


async def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    namespaces = sys.argv[3].split(",")
    clients = [IdleClient(port, namespaces[i % len(namespaces)]) for i in range(n)]
    tasks = []
    for i in range(0, n, 50):  # in waves, to stay under the listen backlog
        wave = clients[i:i + 50]
        readers = await asyncio.gather(*(c.connect() for c in wave))
        # Each wave answers pings at once: the last waves may take longer
        # than PING_INTERVAL + PING_TIMEOUT to connect on a loaded machine.
        tasks += [asyncio.ensure_future(c.idle(r)) for c, r in zip(wave, readers)]
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    print(json.dumps({
        "clients": n,
        "connected": sum(not c.closed for c in clients),
        "pings": sum(c.pings for c in clients),
        "events": sum(c.events for c in clients),
        "closed": sum(c.closed for c in clients),
    }), flush=True)
    for t in tasks:
        t.cancel()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
