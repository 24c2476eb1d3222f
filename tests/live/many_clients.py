"""Lean raw-WebSocket Socket.IO clients for the fan-out test (run as a process).

    python many_clients.py <port> <clients> <updates> [namespace]

Each client does the deployed app's sequence (websocket-only EIO=4, CONNECT
the namespace), answers pings, and counts ``update`` events.  Prints READY
once every client is connected, then one JSON line with the counts when each
client has ``updates`` of them (exit 0), or after 15 s (exit 1).
"""

import asyncio
import json
import os
import struct
import sys


def frame(text):
    """A masked client text frame (mask key zero keeps the payload as is)."""
    data = text.encode("utf-8")
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + b"\0\0\0\0" + data


async def read_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    payload = await reader.readexactly(n)
    return b0 & 0x0F, payload


class Client:
    def __init__(self, port, nsp):
        self.port = port
        self.nsp = nsp
        self.updates = 0
        self.reader = self.writer = None

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = await self.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        op, payload = await read_frame(self.reader)
        assert payload.startswith(b"0{"), payload
        self.writer.write(frame("40" + self.nsp + ","))
        op, payload = await read_frame(self.reader)
        assert payload.startswith(b"40" + self.nsp.encode() + b",{"), payload

    async def run(self, wanted):
        prefix = ('42' + self.nsp + ',["update"').encode()
        while self.updates < wanted:
            op, payload = await read_frame(self.reader)
            if op == 8:
                return
            if payload == b"2":
                self.writer.write(frame("3"))
            elif payload.startswith(prefix):
                json.loads(payload[len(prefix) - len('["update"'):])
                self.updates += 1


async def main():
    port, n, wanted = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    nsp = sys.argv[4] if len(sys.argv) > 4 else "/sio/m1"
    clients = [Client(port, nsp) for _ in range(n)]
    for i in range(0, n, 50):  # connect in waves to stay under the listen backlog
        await asyncio.gather(*(c.connect() for c in clients[i:i + 50]))
    print("READY", flush=True)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.run(wanted) for c in clients)), 15)
        code = 0
    except asyncio.TimeoutError:
        code = 1
    print(json.dumps({"clients": n, "updates": [c.updates for c in clients]}), flush=True)
    os._exit(code)


if __name__ == "__main__":
    asyncio.run(main())
