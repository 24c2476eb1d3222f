"""Bounded fuzz: random and mutated frames at the protocol.  No exception
escapes, nothing hangs, and memory stays under a stated bound."""

import pickle
import random
import struct
import tracemalloc

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests.conftest import expected, fixture_bytes
from tests.ingest.helpers import make_config, make_hub
from tsrmon.ingest.admission import DAQFactory

MAX_FRAME = 256 * 1024
# Peak traced memory allowed for the whole fuzz run: a few frames' worth of
# buffers and decoded values; far below what one memo or nesting trick would
# cost an unprotected decoder (gigabytes).
PEAK_BOUND = 48 * 1024 * 1024


def hostile_frames(rng):
    base = [fixture_bytes(n) for n in expected() if not n.startswith("bad_names")]
    good = pickle.dumps(("DataUpdate", {"s": {"type": "VIB", "data": [1.0, 2.0]}}), protocol=4)
    specials = [
        b"\x80\x04N" + b"r" + struct.pack("<I", 0x7FFFFFFF) + b".",  # memo resize bomb
        b"\x80\x02N" + b"p999999999\n.",  # text PUT bomb
        b"\x80\x04" + b"]" * 5000 + b"a" * 4999 + b".",  # deep nesting
        b"\x80\x04]\x94" + b"(h\x00h\x00h\x00h\x00e" * 3000 + b".",  # self-references
        b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b".",  # huge BINBYTES8 claim
        b"\x80\x04B" + struct.pack("<I", 2**31) + b".",  # huge BINBYTES claim
        b"\x80\x04\x95" + struct.pack("<Q", 2**40),  # huge FRAME claim
        b"(" * 20000 + b".",  # marks only
        b"I" + b"9" * 20000 + b"\n.",  # endless INT text
        b"\x80\x04\x8a\xff" + b"\xff" * 255 + b".",  # LONG1
    ]
    for _ in range(150):
        kind = rng.random()
        if kind < 0.2:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000)))
        elif kind < 0.6:
            data = bytearray(rng.choice(base + [good]))
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(data))
                op = rng.random()
                if op < 0.5:
                    data[i] = rng.getrandbits(8)
                elif op < 0.75:
                    del data[i:i + rng.randint(1, 16)]
                else:
                    data[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
                if not data:
                    break
            yield bytes(data)
        elif kind < 0.8:
            yield rng.choice(specials) + b"\x5c\x6f" + good + b"\x5c\x6f"
        else:
            yield b"\x80\x04" + bytes(rng.choice(b"()]}.\x94haeuslt\x85\x86\x87GKJN")
                                      for _ in range(rng.randint(1, 3000))) + b"\x5c\x6f"


@pytest.mark.slow  # many examples: the fast set stays under a minute
@pytest.mark.timeout(120)
def test_fuzz_protocol(tmp_path):
    config = make_config(tmp_path, daq={"MAX_FRAME_BYTES": MAX_FRAME, "MAX_BUFFER_BYTES": 2 * MAX_FRAME})
    hub, rec = make_hub(config)
    hub.clock = Clock()
    factory = DAQFactory(config, hub, Clock())
    rng = random.Random(20261126)
    name = pickle.dumps(("name", "Fuzz"), protocol=4) + b"\x5c\x6f"
    tracemalloc.start()
    try:
        for i, payload in enumerate(hostile_frames(rng)):
            proto = factory.buildProtocol(None)
            transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1000 + i))
            proto.makeConnection(transport)
            data = name + payload
            step = rng.choice([1, 7, 512, len(data)] if len(data) < 4096 else [512, 4096, len(data)])
            for j in range(0, len(data), step):
                proto.dataReceived(data[j:j + step])  # must not raise
            assert transport.value() == b""  # the server never writes
            proto.connectionLost(None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BOUND
    machine = hub.machines["Fuzz"]
    assert machine.refused_frames > 0
    assert machine.frames > 0  # good frames after hostile ones still arrived
