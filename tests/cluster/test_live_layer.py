"""LiveDelivery into the real live layer (LiveService): another node's
events build this node's `update` windows, caches and `status`, as for a
machine fed here."""

import pytest
from twisted.internet import task

from tsrmon.cluster.bus import LiveDelivery
from tsrmon.config import build_config
from tsrmon.hub import LiveBus, MachineRegistry
from tsrmon.live.service import LiveService

pytestmark = pytest.mark.timeout(30)


def test_remote_events_feed_a_real_live_service(tmp_path):
    config = build_config({"DATABASE": {"PATH": str(tmp_path / "db")}, "DATA": {"PATH": str(tmp_path / "data")},
                           "LOGGER": {"PATH": str(tmp_path / "log")}, "TIME": {"ZONE": "UTC"}})
    clock = task.Clock()
    clock.advance(1_700_000_000)
    bus = LiveBus()
    live = LiveService(config, clock, MachineRegistry(config, clock), bus=bus)
    deliver = LiveDelivery(bus)  # through the bus: every attached live layer
    deliver("M1", "second", ["vib", "VIB", clock.seconds(), 2, -2.0, 4.0, -3.0, 1.0, 10.0], "node-a")
    deliver("M1", "second", ["vib", "VIB", clock.seconds(), 2, 6.0, 6.0, 3.0, 3.0, 18.0], "node-a")
    # The machine is unknown to this node's registry, yet its namespace exists now.
    assert live.resolve("/sio/M1") is live.namespaces["M1"]
    live._tick()
    (update,) = live.namespaces["M1"].cache["vib"]
    assert update["data"] == 2.5  # mean |x| over both remote seconds (ABS mode)
    deliver("M1", "anomaly", [2.5, 1.0, clock.seconds()], "node-a")
    assert live.counters()["anomalies"] == 1 and live.namespaces["M1"].live_anomaly.score == 2.5
    deliver("M1", "status", {"connected": True, "last_frame": clock.seconds(), "connected_since": 1.0,
                             "disconnected_at": None}, "node-a")
    deliver("M1", "alarm", {"rule": "r1", "state": "raised"}, "node-a")
    assert live.counters()["events_emitted"] == 0  # nobody connected: nothing sent, nothing broken
