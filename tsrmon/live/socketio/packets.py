"""Socket.IO v5 packet codec (written for this project, compact JSON).

A Socket.IO packet travels as one Engine.IO message: text
``<type>[<n>-][<nsp>,][<ack id>][JSON]`` followed by ``n`` binary messages
(the attachments).  Decoding validates like the JS parser does, because the
conformance suite expects a connection to close on ``4abc`` or ``42{}``.
"""

import orjson

from tsrmon.live.engineio.codec import dumps

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)

# Sentinel for "no JSON part" (distinct from JSON null).
NO_DATA = object()


class PacketError(ValueError):
    """An undecodable or invalid Socket.IO packet (the connection is closed)."""


class Packet:
    __slots__ = ("type", "nsp", "ack_id", "data", "attachments", "buffers")

    def __init__(self, ptype, nsp="/", data=NO_DATA, ack_id=None, attachments=0):
        self.type = ptype
        self.nsp = nsp
        self.data = data
        self.ack_id = ack_id
        self.attachments = attachments
        self.buffers = []

    def complete(self):
        return len(self.buffers) >= self.attachments

    def reconstruct(self):
        """Put the received binary attachments back in place of placeholders."""
        if self.attachments:
            self.data = _fill(self.data, self.buffers)
        return self


def _fill(obj, buffers):
    if isinstance(obj, list):
        return [_fill(x, buffers) for x in obj]
    if isinstance(obj, dict):
        if obj.get("_placeholder") is True and isinstance(obj.get("num"), int):
            num = obj["num"]
            if not 0 <= num < len(buffers):
                raise PacketError("attachment placeholder out of range")
            return buffers[num]
        return {k: _fill(v, buffers) for k, v in obj.items()}
    return obj


def _extract(obj, buffers):
    if isinstance(obj, (bytes, bytearray, memoryview)):
        buffers.append(bytes(obj))
        return {"_placeholder": True, "num": len(buffers) - 1}
    if isinstance(obj, (list, tuple)):
        return [_extract(x, buffers) for x in obj]
    if isinstance(obj, dict):
        return {k: _extract(v, buffers) for k, v in obj.items()}
    return obj


def encode(ptype, nsp="/", data=NO_DATA, ack_id=None):
    """The Engine.IO message payloads of one packet: [text, *attachments]."""
    buffers = []
    if data is not NO_DATA and ptype in (EVENT, ACK):
        data = _extract(data, buffers)
        if buffers:
            ptype = BINARY_EVENT if ptype == EVENT else BINARY_ACK
    parts = [str(ptype)]
    if buffers:
        parts.append(f"{len(buffers)}-")
    if nsp != "/":
        parts.append(nsp)
        parts.append(",")
    if ack_id is not None:
        parts.append(str(ack_id))
    if data is not NO_DATA:
        parts.append(dumps(data))
    return ["".join(parts)] + buffers


def decode(text):
    """Parse the text part of a packet; raises :class:`PacketError`."""
    if not text or not text[0].isdigit():
        raise PacketError("no packet type")
    ptype = ord(text[0]) - 48
    if ptype > BINARY_ACK:
        raise PacketError(f"unknown packet type {ptype}")
    i = 1
    n = len(text)
    attachments = 0
    if ptype in (BINARY_EVENT, BINARY_ACK):
        j = text.find("-", i)
        if j < 0 or not text[i:j].isdigit():
            raise PacketError("bad attachment count")
        attachments = int(text[i:j])
        i = j + 1
    nsp = "/"
    if i < n and text[i] == "/":
        j = text.find(",", i)
        if j < 0:
            nsp = text[i:]
            i = n
        else:
            nsp = text[i:j]
            i = j + 1
    ack_id = None
    j = i
    while j < n and "0" <= text[j] <= "9":
        j += 1
    if j > i:
        ack_id = int(text[i:j])
        i = j
    data = NO_DATA
    if i < n:
        try:
            data = orjson.loads(text[i:])
        except orjson.JSONDecodeError:
            raise PacketError("invalid JSON") from None
    if not _valid(ptype, data):
        raise PacketError(f"invalid payload for packet type {ptype}")
    return Packet(ptype, nsp, data, ack_id, attachments)


def _valid(ptype, data):
    if ptype == CONNECT:
        return data is NO_DATA or isinstance(data, dict)
    if ptype == DISCONNECT:
        return data is NO_DATA
    if ptype == CONNECT_ERROR:
        return isinstance(data, (dict, str))
    if ptype in (EVENT, BINARY_EVENT):
        return (isinstance(data, list) and len(data) > 0
                and isinstance(data[0], (str, int, float)) and not isinstance(data[0], bool))
    # ACK, BINARY_ACK
    return isinstance(data, list)
