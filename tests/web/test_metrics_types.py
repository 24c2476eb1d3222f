"""``/metrics`` through the Prometheus text parser: counters, gauges and
histograms with HELP text, never ``untyped`` (issue 14, item 6), and the
reactor-lag histogram."""

import math

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.task import Clock

from tests.web.conftest import make_config
from tsrmon.reactorlag import ReactorLagService
from tsrmon.service import makeService
from tsrmon.web.metrics import RestMetrics


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_every_room_counter_is_typed_and_documented(tmp_path):
    config = make_config(tmp_path)
    top = makeService(config, reactor=reactor, lock=False)  # built, not started
    fams = families(top.rooms["rest"].metrics.render().decode())
    rooms = {name.split("_")[1] for name in fams if name.startswith("tsrmon_")}
    assert {"ingest", "store", "raw", "stats", "live", "notify", "alarms", "clock", "reactor"} <= rooms
    for name, fam in fams.items():
        assert fam.type in ("counter", "gauge", "histogram"), (name, fam.type)
        assert fam.documentation.strip(), name
    assert fams["tsrmon_ingest_frames"].type == "counter"
    assert fams["tsrmon_ingest_frames"].samples[0].name == "tsrmon_ingest_frames_total"
    assert fams["tsrmon_ingest_open_connections"].type == "gauge"
    assert fams["tsrmon_store_queued_rows"].type == "gauge"
    assert fams["tsrmon_live_sessions"].type == "gauge"
    assert fams["tsrmon_notify_faults"].type == "counter"
    assert fams["tsrmon_reactor_lag_seconds"].type == "histogram"
    assert fams["tsrmon_reactor_lag_max_recent_seconds"].type == "gauge"


def test_unknown_keys_are_typed_by_the_convention():
    def ingest():
        return {"refused_some_new_reason": 3, "queue_depth_now": 2, "sockets_open": 1,
                "last_error_timestamp_seconds": 1.5e9, "flag": True, "nested": {"x": 4},
                "bad key": 1.5, "text": "skipped", "nan": float("nan"),
                "wait_seconds": {"buckets": [(0.1, 1), (1.0, 3)], "sum": 1.2, "count": 4}}

    fams = families(RestMetrics(None, {"ingest": ingest, "broken": lambda: 1 / 0}).render().decode())
    kinds = {n: f.type for n, f in fams.items() if n.startswith("tsrmon_ingest_")}
    assert kinds == {
        "tsrmon_ingest_refused_some_new_reason": "counter",
        "tsrmon_ingest_queue_depth_now": "gauge",
        "tsrmon_ingest_sockets_open": "gauge",
        "tsrmon_ingest_last_error_timestamp_seconds": "gauge",
        "tsrmon_ingest_flag": "gauge",
        "tsrmon_ingest_nested_x": "counter",
        "tsrmon_ingest_bad_key": "counter",
        "tsrmon_ingest_wait_seconds": "histogram",
    }
    hist = {(s.name, s.labels.get("le")): s.value for s in fams["tsrmon_ingest_wait_seconds"].samples}
    assert hist[("tsrmon_ingest_wait_seconds_bucket", "0.1")] == 1
    assert hist[("tsrmon_ingest_wait_seconds_bucket", "1.0")] == 3
    assert hist[("tsrmon_ingest_wait_seconds_bucket", "+Inf")] == 4
    assert hist[("tsrmon_ingest_wait_seconds_count", None)] == 4
    assert math.isclose(hist[("tsrmon_ingest_wait_seconds_sum", None)], 1.2)
    assert fams["tsrmon_ingest_refused_some_new_reason"].samples[0].value == 3
    assert "ingest" in fams["tsrmon_ingest_refused_some_new_reason"].documentation


def test_reactor_lag_records_how_late_each_timer_fires():
    clock = Clock()
    lag = ReactorLagService(clock, interval=0.25, window=10.0, now=clock.seconds)
    lag.startService()
    try:
        clock.advance(0.25)  # on time
        clock.advance(0.25)
        assert lag.count == 2 and lag.sum == 0.0
        clock.advance(1.0)  # the reactor was blocked: fired 0.75 s late
        assert lag.count == 3 and math.isclose(lag.sum, 0.75)
        assert math.isclose(lag.recent_max(), 0.75)
        h = lag.histogram()
        assert dict(h["buckets"])[0.5] == 2 and dict(h["buckets"])[1.0] == 3
        assert h["buckets"][-1] == (float("inf"), 3)
        assert lag.healthy()["ok"] is True
        assert math.isclose(lag.healthy()["lag_max_recent_seconds"], 0.75)
        for _ in range(60):  # 15 s of punctual timers: the late one leaves the window
            clock.advance(0.25)
        assert lag.recent_max() == 0.0 and math.isclose(lag.max, 0.75)
        text = RestMetrics(None, {"reactor": lag.counters}).render().decode()
        fam = families(text)["tsrmon_reactor_lag_seconds"]
        assert fam.type == "histogram"
        count = [s.value for s in fam.samples if s.name == "tsrmon_reactor_lag_seconds_count"]
        assert count == [lag.count]
    finally:
        lag.stopService()
    assert not clock.getDelayedCalls()
