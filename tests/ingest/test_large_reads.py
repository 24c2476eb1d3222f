"""Issue 18: a DAQ sending full-rate chunks is read in large pieces, a DAQ
sending the deployed 2 x 30-float frames keeps Twisted's 64 KiB reads, and
either way every sample arrives in order (real sockets on 127.0.0.1)."""

import numpy as np
import pytest_twisted

from tests.ingest.helpers import frame, port_of, send, start_listener, wait_until
from tsrmon.cluster.proxy import socket_transport
from tsrmon.ingest.protocol import LARGE_FRAME, LARGE_READ


def chunk_frame(k, n):
    data = {f"vib{s}": {"type": "VIB", "data": [float(k * n + i) + 0.25 * s for i in range(n)]}
            for s in range(2)}
    return frame("DataUpdate", data)


def read_sizes(svc):
    return [socket_transport(c.transport).bufferSize for c in svc.factory.connections]


@pytest_twisted.inlineCallbacks
def test_large_frames_get_large_reads_and_arrive_whole(tmp_path):
    n = 25_600
    frames = [chunk_frame(k, n) for k in range(6)]
    assert len(frames[0]) >= LARGE_FRAME
    svc, hub, rec = start_listener(tmp_path, daq={"MAX_BUFFER_BYTES": 64 * 1024 * 1024})
    sizes = []
    try:
        # linger: the connection stays open until its read size is seen
        d = send(port_of(svc), [frame("name", "M1"), *frames], linger=1.0)
        yield wait_until(lambda: "M1" in hub.machines and hub.machines["M1"].frames == len(frames))
        sizes = read_sizes(svc)
        yield d
    finally:
        yield svc.stopService()
    assert sizes == [LARGE_READ]
    got = rec.per_sensor(rec.added)
    for s in range(2):
        want = np.arange(len(frames) * n, dtype=np.float64) + 0.25 * s
        assert np.array_equal(np.asarray(got[f"vib{s}"]), want)


@pytest_twisted.inlineCallbacks
def test_deployed_frames_keep_default_reads(tmp_path):
    svc, hub, rec = start_listener(tmp_path)
    small = [frame("DataUpdate", {"vib1": {"type": "VIB", "data": [float(i)] * 30}}) for i in range(200)]
    sizes = []
    try:
        d = send(port_of(svc), [frame("name", "M2"), *small], linger=1.0)
        yield wait_until(lambda: "M2" in hub.machines and hub.machines["M2"].frames == len(small))
        sizes = read_sizes(svc)
        yield d
    finally:
        yield svc.stopService()
    assert sizes == [64 * 1024]
    assert len(rec.per_sensor(rec.added)["vib1"]) == 200 * 30
