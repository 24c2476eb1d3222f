"""JSON frames may carry per-sensor ``rate``, ``unit`` and ``rpm`` beside
``type`` and ``data`` (issue 17): they reach the sensor catalog, config
entries still win, and a bad value costs the metadata, never the samples."""

import json

import pytest_twisted

from tests.ingest.helpers import port_of, send, settle, start_listener
from tsrmon.hub.records import DataFrame
from tsrmon.config import build_config
from tsrmon.ingest import schema
from tsrmon.spectra.catalog import SensorCatalog


def json_line(obj):
    return json.dumps(obj).encode() + b"\n"


def test_schema_collects_metadata_from_json_only():
    data = {"acc": {"type": "VIB", "data": [0.1, 0.2], "rate": 25600, "unit": "g", "rpm": 1480},
            "temp": {"type": "TEMP", "data": [40.0]}}
    event = schema.from_json({"event": "DataUpdate", "data": data}, set())
    assert type(event) is DataFrame and event.meta == {"acc": {"rate": 25600, "unit": "g", "rpm": 1480}}
    plain = schema.from_json({"event": "DataUpdate", "data": {"t": {"type": "TEMP", "data": [1.0]}}}, set())
    assert plain.meta is None
    # Odd JSON types are passed on as short text for the catalog to refuse.
    odd = schema.from_json({"event": "DataUpdate", "data": {
        "acc": {"type": "VIB", "data": [1.0], "rate": "x" * 1000, "unit": ["g"]}}}, set())
    assert len(odd.meta["acc"]["rate"]) < 100 and isinstance(odd.meta["acc"]["unit"], str)


@pytest_twisted.inlineCallbacks
def test_json_metadata_reaches_the_catalog_and_bad_values_keep_the_samples(tmp_path):
    config = build_config({"SENSORS": [{"match": "M1/pinned", "rate": 8192}]}, None, str(tmp_path))
    svc, hub, rec = start_listener(tmp_path, catalog=SensorCatalog(config))
    try:
        yield send(port_of(svc), [
            json_line({"event": "name", "data": "M1"}),
            json_line({"event": "DataUpdate", "data": {
                "acc": {"type": "VIB", "data": [0.5, -0.5], "rate": 25600, "unit": "m/s²", "rpm": 1480},
                "pinned": {"type": "VIB", "data": [1.0], "rate": 100}}}),
            json_line({"event": "DataUpdate", "data": {
                "acc": {"type": "VIB", "data": [0.25], "rate": -5}}}),
        ])
        yield settle(svc, 1)
        acc = hub.catalog.meta("M1", "acc")
        assert acc.rate == 25600 and acc.rpm == 1480 and acc.sources["rate"] == "daq"
        assert hub.catalog.meta("M1", "pinned").rate == 8192  # config wins
        assert hub.counters["refused_sensor_meta"] == 1
        assert hub.catalog.meta("M1", "acc").rate == 25600  # the bad value changed nothing
        assert [a[3] for a in rec.added if a[1] == "acc"] == [[0.5, -0.5], [0.25]]  # samples kept
    finally:
        yield svc.stopService()
