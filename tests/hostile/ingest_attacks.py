"""Hand-built hostile DAQ frames (bytes only: never unpickled by the tests)."""

import pickle
import struct


def _u(text):
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _floats(n, value=1.5):
    return (b"G" + struct.pack(">d", value)) * n


def memo_amplification(sensors=64, samples=1_500_000):
    """A legal pickle: ``sensors`` sensors whose ``data`` all reference one
    memoized list of ``samples`` floats (the first builds it, the others
    BINGET it): ``sensors * samples`` samples for ``9 * samples`` bytes."""
    out = [b"\x80\x04", _u("DataUpdate"), b"}(" ]
    for i in range(sensors):
        out += [_u(f"s{i}"), b"}(", _u("type"), _u("VIB"), _u("data")]
        if i == 0:
            out += [b"]q\x00(", _floats(samples), b"e"]
        else:
            out.append(b"h\x00")
        out.append(b"u")
    out += [b"u\x86."]
    return b"".join(out)


def memo_grow_after_reference(sensors=64, samples=100_000):
    """The shared list is empty while the sensors reference it and filled
    afterwards through one more reference: only a walker that tracks the
    container itself (not a snapshot of its size) sees the expansion."""
    out = [b"\x80\x04", b"]q\x000", _u("DataUpdate"), b"}("]
    for i in range(sensors):
        out += [_u(f"s{i}"), b"}(", _u("type"), _u("VIB"), _u("data"), b"h\x00u"]
    out += [b"u\x86", b"h\x00(", _floats(samples), b"e0."]
    return b"".join(out)


def self_containing():
    """A list that contains itself (EMPTY_LIST, BINPUT 0, BINGET 0, APPEND)."""
    return b"\x80\x04]q\x00h\x00a."


def legit_frame(sensors=64, samples=25_600, value=0.25):
    """The largest DataUpdate a DAQ sends: ``sensors`` x ``samples`` floats."""
    data = {f"s{i}": {"type": "VIB", "data": [value + i] * samples} for i in range(sensors)}
    return pickle.dumps(("DataUpdate", data), protocol=4)


def name_frame(name):
    return pickle.dumps(("name", name), protocol=4)
