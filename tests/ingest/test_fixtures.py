"""Every legacy fixture over a real socket: whole, byte by byte (small
files) and in random 1-4096-byte pieces (large ones)."""

import math
import os
import random

import pytest
import pytest_twisted

from tests.conftest import expected, fixture_bytes
from tests.ingest.helpers import frame, pieces_of, port_of, send, settle, start_listener

EXPECTED = expected()
SMALL = 4096


def _cases():
    for name, entry in EXPECTED.items():
        yield name, "whole"
        yield name, "bytes" if entry["bytes"] <= SMALL else "pieces"


def _message_kinds(entry):
    return [("refused" if isinstance(m, dict) else m[0]) for m in entry["messages"]]


def check_file(name, entry, hub, rec, svc, tmp_path):
    messages = entry["messages"]
    machine_name = messages[0][1]
    if name == "bad_names.bin":
        assert hub.machines == {}
        assert svc.factory.counters["refused_names"] == 1
        assert rec.added == [] and rec.faults == []
        return
    machine = hub.machines[machine_name]
    assert machine.connects == 1
    assert not machine.connected  # released when the DAQ hung up
    refused = sum(1 for m in messages if isinstance(m, dict))
    assert machine.refused_frames == refused
    assert machine.bytes == entry["bytes"]
    # Expected samples, in order, as the hub handed them to the stats room.
    want_data = []
    want_faults = []
    for m in messages[1:]:
        if isinstance(m, dict):
            continue
        event, data = m
        if event == "DataUpdate":
            for sensor, body in data.items():
                want_data.append((sensor, body))
        elif event == "FaultDetect":
            want_faults.append((float(data["score"]), float(data["threshold"])))
    # Per frame as the spectra room gets them; statistics got the same
    # samples in the same order (runs of frames that arrived together whole).
    got = [(a[0], a[1], a[2], a[3]) for a in rec.chunks]
    assert all(a[0] == machine_name and a[5] is False for a in rec.added + rec.chunks)
    assert rec.per_sensor(rec.added) == rec.per_sensor(rec.chunks)
    assert len(got) == len(want_data)
    # Frame by frame for each sensor (a run of frames reaches the rooms
    # sensor after sensor, so sensors are not interleaved across frames).
    for sensor in {ws for ws, _ in want_data}:
        mine = [(gt, gv) for _, gs, gt, gv in got if gs == sensor]
        want = [wb for ws, wb in want_data if ws == sensor]
        assert len(mine) == len(want)
        for (gt, gv), wb in zip(mine, want):
            assert gt == wb["type"]
            if "data" in wb:
                assert gv == wb["data"]
            if "n" in wb:
                assert len(gv) == wb["n"]
            if "n_finite" in wb:
                assert len(gv) == wb["n_finite"]
                assert all(math.isfinite(v) for v in gv)
    assert [(f[1], f[2]) for f in rec.faults] == want_faults
    assert all(type(f[1]) is float and type(f[2]) is float for f in rec.faults)
    if name == "large_chunk.bin":
        values = rec.added[0][3]
        assert sum(abs(v) for v in values) / len(values) == pytest.approx(entry["mean_abs"], rel=1e-12)
    if name == "nonfinite.bin":
        assert machine.dropped_nonfinite == 3
        values = rec.added[0][3]
        assert sum(abs(v) for v in values) / len(values) == pytest.approx(2.0)
    if name == "bad_sensor_names.bin":
        assert machine.dropped_sensors == len(entry["refused_sensors"])
        assert [a[1] for a in rec.added] == ["ok_sensor"]
    if name == "session.bin":
        for sensor, stats in entry["per_sensor"].items():
            values = [v for a in rec.added if a[1] == sensor for v in a[3]]
            assert len(values) == stats["n"]
            assert sum(values) == pytest.approx(stats["sum"], rel=1e-9, abs=1e-9)
            assert sum(v * v for v in values) == pytest.approx(stats["sumsq"], rel=1e-9)
            assert min(values) == stats["min"] and max(values) == stats["max"]
        over = [f for f in rec.faults if f[1] > f[2]]
        assert len(over) == entry["anomalies_over_threshold"]
        assert len(hub.notifier.faults) == entry["anomalies_over_threshold"]
    if "marker" in entry:
        assert not os.path.exists(tmp_path / entry["marker"])
        assert not os.path.exists(entry["marker"])


@pytest.mark.parametrize("name,mode", list(_cases()))
@pytest_twisted.inlineCallbacks
def test_fixture_over_socket(name, mode, tmp_path, monkeypatch, fixtures_dir):
    monkeypatch.chdir(tmp_path)  # an evil pickle would write its marker here
    entry = EXPECTED[name]
    data = fixture_bytes(name)
    assert len(data) == entry["bytes"]
    svc, hub, rec = start_listener(tmp_path)
    try:
        yield send(port_of(svc), pieces_of(data, mode, random.Random(name)))
        yield settle(svc, 1)
        check_file(name, entry, hub, rec, svc, tmp_path)
    finally:
        yield svc.stopService()


@pytest.mark.parametrize("bad", EXPECTED["bad_names.bin"]["other_bad_names"])
@pytest_twisted.inlineCallbacks
def test_other_bad_names_refused(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    svc, hub, rec = start_listener(tmp_path)
    try:
        good = frame("DataUpdate", {"v": {"type": "VIB", "data": [1.0]}})
        yield send(port_of(svc), [frame("name", bad) + good])
        yield settle(svc, 1)
        assert hub.machines == {}
        assert rec.added == []
        assert svc.factory.counters["refused_names"] == 1
        assert os.listdir(tmp_path) == []
    finally:
        yield svc.stopService()
