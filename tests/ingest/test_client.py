"""The Python DAQ client library against a running listener."""

import pytest_twisted
from twisted.internet import threads

from tests.ingest.helpers import port_of, start_listener, wait_until
from tsrmon.client import DAQClient, encode_json, encode_pickle


def test_encodings_match_the_deployed_bytes():
    handshake = bytes.fromhex("80049516000000000000008c046e616d65948c0953686f74426c617374948694" "2e5c6f")
    assert encode_pickle("name", "ShotBlast") == handshake
    assert encode_json("name", "M1", token="t") == b'{"event":"name","data":"M1","token":"t"}\n'
    assert b'"time":"1970-01-01T00:00:10+00:00"' in encode_json("FaultDetect", {}, t=10)


@pytest_twisted.inlineCallbacks
def test_client_both_encodings(tmp_path):
    svc, hub, rec = start_listener(tmp_path, daq={"TOKENS": {"J1": "tok"}})
    try:
        port = port_of(svc)

        def run():
            p = DAQClient("127.0.0.1", port, "P1")
            j = DAQClient("127.0.0.1", port, "J1", encoding="json", token="tok")
            for c in (p, j):
                assert c.send_data({"v": {"type": "VIB", "data": [1.0, float("nan"), 2.0]}})
                assert c.send_fault(3, 5)
                c.close()
        yield threads.deferToThread(run)
        yield wait_until(lambda: len(rec.added) == 2 and len(rec.faults) == 2 and not svc.factory.connections)
        assert sorted((a[0], tuple(a[3])) for a in rec.added) == [("J1", (1.0, 2.0)), ("P1", (1.0, 2.0))]
        assert hub.machines["P1"].dropped_nonfinite == 1  # pickle carries NaN; the server drops it
        assert [f[1:3] for f in rec.faults] == [(3.0, 5.0), (3.0, 5.0)]
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_offline_buffer_and_reconnect(tmp_path):
    svc, hub, rec = start_listener(tmp_path)
    port = port_of(svc)
    yield svc.stopService()  # the server is down: the client buffers
    now = [100.0]
    client = DAQClient("127.0.0.1", port, "J2", encoding="json", buffer_frames=3,
                       backoff_min=1.0, backoff_max=4.0, clock=lambda: now[0])

    def offline():
        results = [client.send_data({"v": {"type": "VIB", "data": [float(i)]}}, t=1767290000.0 + i)
                   for i in range(5)]
        return results
    results = yield threads.deferToThread(offline)
    assert results == [False] * 5
    assert len(client.buffer) == 3 and client.dropped == 2
    svc2, hub2, rec2 = start_listener(tmp_path, server={"TCP_ENDPOINT": f"tcp:{port}:interface=127.0.0.1"})
    try:
        assert (yield threads.deferToThread(client.flush)) is False  # still backing off
        now[0] += 10
        assert (yield threads.deferToThread(client.flush)) is True
        client.close()
        yield wait_until(lambda: len(rec2.added) == 3 and not svc2.factory.connections)
        # Buffered samples keep their own time (late), oldest dropped first.
        assert [(a[3], a[4], a[5]) for a in rec2.added] == [
            ([2.0], 1767290002.0, True), ([3.0], 1767290003.0, True), ([4.0], 1767290004.0, True)]
    finally:
        yield svc2.stopService()
