"""Engine.IO codecs: error codes, polling payloads (v4 and v3), WebSocket frames."""

import base64
import binascii
import os
import struct

import orjson


def dumps(obj):
    """Compact JSON text (the conformance suites compare exact strings)."""
    return orjson.dumps(obj).decode("utf-8")


# Engine.IO error codes (engine.io server.ts) and their HTTP status.
TRANSPORT_UNKNOWN = 0
UNKNOWN_SID = 1
BAD_HANDSHAKE_METHOD = 2
BAD_REQUEST = 3
FORBIDDEN = 4
UNSUPPORTED_PROTOCOL_VERSION = 5
ERROR_MESSAGES = {
    TRANSPORT_UNKNOWN: "Transport unknown",
    UNKNOWN_SID: "Session ID unknown",
    BAD_HANDSHAKE_METHOD: "Bad handshake method",
    BAD_REQUEST: "Bad request",
    FORBIDDEN: "Forbidden",
    UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}

RS = "\x1e"  # v4 polling payload separator


class Outgoing:
    """A text packet shared by many sessions: encoded and framed once."""

    __slots__ = ("text", "_frame")

    def __init__(self, text):
        self.text = text
        self._frame = None

    def frame(self):
        """The complete WebSocket text frame (built on first use)."""
        if self._frame is None:
            self._frame = ws_frame(self.text.encode("utf-8"), 0x1)
        return self._frame


def ws_frames(packets, eio3=False):
    """The WebSocket frames of ``packets`` (str / bytes / :class:`Outgoing`),
    concatenated: one ``transport.write`` carries them all, each packet still
    its own frame (Engine.IO v4 over WebSocket is one packet per frame).

    This is the one place that writes raw frames under Autobahn, because
    Autobahn's ``sendMessage`` formats a debug line and walks its framing
    state machine per message, which cost more than the fan-out itself
    (tests/live/bench_fanout.py); and one joined write per client per tick
    instead of one per event took the update p99 of 1,000 clients × 32
    sensors from ~95 ms to the figure in docs/performance.md.  No extension
    is ever negotiated (no permessage-deflate offer is accepted), so frames
    are plain RFC 6455 §5.2 server frames: FIN, unmasked, unfragmented.
    """
    out = []
    for p in packets:
        if type(p) is Outgoing:
            out.append(p._frame or p.frame())
        elif isinstance(p, str):
            out.append(ws_frame(p.encode("utf-8"), 0x1))
        elif eio3:
            out.append(ws_frame(b"\x04" + p, 0x2))
        else:
            out.append(ws_frame(p, 0x2))
    return out[0] if len(out) == 1 else b"".join(out)


def ws_frame(payload, opcode):
    """One unmasked, unfragmented server WebSocket frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def utf16_len(text):
    """JS string length: UTF-16 code units (EIO3 length prefixes count these)."""
    return len(text.encode("utf-16-le")) // 2


def encode_payload_v3(packets):
    """EIO3 polling payload: ``<len>:<packet>`` each, binary as ``b4<base64>``.

    Binary always travels base64-encoded: clients that did not ask for
    ``b64=1`` (browsers with XHR2) still decode it.
    """
    parts = []
    for p in packets:
        if isinstance(p, Outgoing):
            p = p.text
        elif not isinstance(p, str):
            p = "b4" + base64.b64encode(p).decode("ascii")
        parts.append(f"{utf16_len(p)}:{p}")
    return "".join(parts)


def decode_payload_v3(body, binary):
    """Packets (str, or bytes for binary messages) of an EIO3 POST; None if malformed."""
    out = []
    if binary:
        # XHR2 binary payload: 0|1, length as digit bytes, 0xFF, packet.
        i, n = 0, len(body)
        while i < n:
            kind = body[i]
            j = body.find(b"\xff", i + 1)
            if kind not in (0, 1) or j < 0 or j - i - 1 > 10 or any(d > 9 for d in body[i + 1:j]):
                return None
            length = int("".join(str(d) for d in body[i + 1:j]) or "x") if j > i + 1 else None
            if length is None:
                return None
            packet = body[j + 1:j + 1 + length]
            if len(packet) != length:
                return None
            i = j + 1 + length
            if kind == 0:
                try:
                    out.append(packet.decode("utf-8"))
                except UnicodeDecodeError:
                    return None
            elif packet[:1] == b"\x04":
                out.append(packet[1:])
            else:
                return None
        return out
    try:
        units = body.decode("utf-8").encode("utf-16-le")
    except UnicodeDecodeError:
        return None
    i, n = 0, len(units)
    while i < n:
        j = units.find(b":\x00", i)
        if j < 0 or (j - i) % 2:
            return None
        digits = units[i:j].decode("utf-16-le")
        if not digits.isdigit():
            return None
        end = j + 2 + 2 * int(digits)
        if end > n:
            return None
        packet = units[j + 2:end].decode("utf-16-le", "surrogatepass")
        i = end
        if packet[:2] == "b4":
            try:
                out.append(base64.b64decode(packet[2:], validate=True))
            except (binascii.Error, ValueError):
                return None
        else:
            out.append(packet)
    return out


def new_sid():
    """20 url-safe characters from 15 random bytes."""
    return base64.urlsafe_b64encode(os.urandom(15)).decode("ascii")



def encode_payload_v4(packets):
    """v4 polling payload: packets joined by \\x1e, binary as ``b<base64>``."""
    parts = []
    for p in packets:
        if isinstance(p, Outgoing):
            parts.append(p.text)
        elif isinstance(p, str):
            parts.append(p)
        else:
            parts.append("b" + base64.b64encode(p).decode("ascii"))
    return RS.join(parts)
