"""Admission of DAQ connections, driven by a Clock over in-memory transports:
the name deadline, the per-host and global caps (unnamed connections make
room, oldest first), the 64 KiB cap before the name frame, the global buffer
budget, and the log lines they write."""

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from tests.ingest.helpers import Recorder, frame
from tsrmon.config import build_config
from tsrmon.hub.machines import MachineHub
from tsrmon.ingest.admission import DAQFactory
from tsrmon.ingest.protocol import PRE_NAME_BUFFER


class Rig:
    def __init__(self, tmp_path, stats=None, **daq):
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.config = build_config({"DAQ": daq}, None, str(tmp_path))
        self.rec = Recorder()
        self.hub = MachineHub(self.config, self.clock, stats=stats or self.rec, raw=self.rec)
        self.factory = DAQFactory(self.config, self.hub, self.clock)
        self.port = 40000

    @property
    def counters(self):
        return self.factory.counters

    def connect(self, host="10.0.0.1", name=None):
        self.port += 1
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, self.port))
        proto.makeConnection(transport)
        if name is not None and not transport.disconnecting:
            proto.dataReceived(frame("name", name))
        return proto

    def reconfigure(self, **daq):
        self.config = build_config({"DAQ": daq}, None, str(self.tmp_path))
        self.hub.reconfigure(self.config)
        self.factory.reconfigure(self.config)


def closed(proto):
    return proto.transport.disconnecting


def lose(proto):
    proto.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def events():
    seen = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def texts(events):
    from twisted.logger import formatEvent
    return [formatEvent(e) for e in events]


def test_name_frame_deadline(tmp_path):
    rig = Rig(tmp_path, NAME_TIMEOUT=10)
    silent = rig.connect()
    named = rig.connect(name="M1")
    rig.clock.advance(9.9)
    assert not closed(silent)
    rig.clock.advance(0.2)
    assert closed(silent) and not closed(named)
    assert rig.counters["refused_name_timeout"] == 1
    lose(silent)
    assert rig.factory.connections == {named}
    rig.clock.advance(3600)
    assert not closed(named)


def test_deadline_key_reloads(tmp_path):
    rig = Rig(tmp_path, NAME_TIMEOUT=10)
    rig.reconfigure(NAME_TIMEOUT=2)
    silent = rig.connect()
    rig.clock.advance(2.1)
    assert closed(silent) and rig.counters["refused_name_timeout"] == 1


def test_per_host_cap_refuses_named_excess_but_evicts_unnamed(tmp_path):
    rig = Rig(tmp_path, MAX_CONNECTIONS_PER_HOST=2)
    a = rig.connect("10.0.0.1", name="M1")
    b = rig.connect("10.0.0.1", name="M2")
    c = rig.connect("10.0.0.1")
    assert closed(c) and rig.counters["refused_per_host"] == 1
    other = rig.connect("10.0.0.2", name="M3")
    assert not closed(other)
    # One named and one unnamed from a host: the unnamed one makes room.
    lose(b)
    idle = rig.connect("10.0.0.1")
    newcomer = rig.connect("10.0.0.1", name="M2")
    assert closed(idle) and not closed(newcomer) and not closed(a)
    assert rig.counters["evicted_unnamed"] == 1
    assert rig.hub.machines["M2"].connection is newcomer


def test_unnamed_connections_never_lock_out_a_daq(tmp_path):
    rig = Rig(tmp_path, MAX_CONNECTIONS=4, MAX_CONNECTIONS_PER_HOST=32)
    idle = [rig.connect("10.9.9.9") for _ in range(4)]
    daq = rig.connect("10.0.0.1", name="M1")
    assert not closed(daq) and rig.hub.machines["M1"].connection is daq
    assert closed(idle[0]) and not any(closed(p) for p in idle[1:])  # oldest first
    assert rig.counters["evicted_unnamed"] == 1
    assert rig.counters["refused_connections"] == 0
    # Freed at once: the slot is usable before the socket is gone.
    assert len(rig.factory.connections) == 4
    # A table full of named connections refuses.
    for i, p in enumerate(idle[1:]):
        p.dataReceived(frame("name", f"N{i}"))
    late = rig.connect("10.0.0.7")
    assert closed(late) and rig.counters["refused_max_connections"] == 1


def test_buffer_before_the_name_is_capped_and_released(tmp_path):
    rig = Rig(tmp_path)
    # The start of a pickle whose first string claims 15 MB.
    head = b"\x80\x04X" + (15_000_000).to_bytes(4, "little")
    proto = rig.connect()
    proto.dataReceived(head + b"a" * 60_000)
    assert not closed(proto) and rig.factory.buffered_total == len(head) + 60_000
    proto.dataReceived(b"a" * (PRE_NAME_BUFFER - 60_000))
    assert closed(proto) and rig.counters["refused_unnamed_buffer"] == 1
    assert proto.framer is None and rig.factory.buffered_total == 0
    lose(proto)
    assert rig.factory.connections == set() and rig.factory.per_host == {}


def test_named_connection_may_buffer_a_large_frame(tmp_path):
    rig = Rig(tmp_path)
    data = frame("DataUpdate", {"v": {"type": "VIB", "data": [0.5] * 200_000}})
    proto = rig.connect(name="M1")
    proto.dataReceived(data[:1_000_000])
    assert not closed(proto) and rig.factory.buffered_total == 1_000_000
    proto.dataReceived(data[1_000_000:])
    assert rig.factory.buffered_total == 0 and len(rig.rec.added) == 1


def partial(n, value=0.5):
    """The first ``n`` bytes of a large DataUpdate (never complete)."""
    return frame("DataUpdate", {"v": {"type": "VIB", "data": [value] * 20_000}})[:n]


def test_global_buffer_budget_pauses_reading_then_resumes(tmp_path):
    rig = Rig(tmp_path, MAX_TOTAL_BUFFER_BYTES=100_000, MAX_PAUSE=5)
    a = rig.connect(name="M1")
    b = rig.connect(name="M2")
    whole = frame("DataUpdate", {"v": {"type": "VIB", "data": [0.5] * 20_000}})
    a.dataReceived(whole[:60_000])
    assert a.transport.producerState == "producing"
    b.dataReceived(partial(60_000))
    assert b.transport.producerState == "paused" and a.transport.producerState == "producing"
    assert rig.counters["budget_paused"] == 1 and rig.factory.buffered_total == 120_000
    # M1 completes its frame: the total falls under the budget, M2 reads again.
    a.dataReceived(whole[60_000:])
    assert rig.factory.buffered_total == 60_000
    assert b.transport.producerState == "producing" and b.budget_paused is None
    assert len(rig.rec.added) == 1


def test_global_buffer_budget_closes_the_largest_when_stuck(tmp_path):
    rig = Rig(tmp_path, MAX_TOTAL_BUFFER_BYTES=100_000, MAX_PAUSE=5)
    a = rig.connect(name="M1")
    b = rig.connect(name="M2")
    a.dataReceived(partial(50_000))
    b.dataReceived(partial(70_000))
    assert b.budget_paused is not None and a.budget_paused is None
    a.dataReceived(b"")  # no progress: nothing completes
    rig.clock.advance(4.9)
    assert not closed(b)
    rig.clock.advance(0.2)
    assert closed(b) and not closed(a)
    assert rig.counters["refused_buffer_budget"] == 1 and rig.factory.buffered_total == 50_000


def test_budget_pause_and_storage_pause_combine(tmp_path):
    rig = Rig(tmp_path, MAX_TOTAL_BUFFER_BYTES=100_000, MAX_PAUSE=60)
    a = rig.connect(name="M1")
    b = rig.connect(name="M2")
    a.dataReceived(partial(60_000))
    b.dataReceived(partial(60_000))
    assert b.transport.producerState == "paused"
    rig.hub.storage_congested(True)
    lose(a)  # budget freed, storage still behind: b stays paused
    assert b.budget_paused is None and b.transport.producerState == "paused"
    rig.hub.storage_congested(False)
    assert b.transport.producerState == "producing"


def test_refusal_lines_are_short_and_rate_limited(tmp_path, events):
    rig = Rig(tmp_path)
    huge = "\n\x1b[31m" + "x" * 100_000
    for _ in range(20):
        p = rig.connect("10.0.0.5", name=huge)
        assert closed(p)
        lose(p)
    assert rig.counters["refused_names"] == 20 and rig.counters["refused_name_bad"] == 20
    lines = [t for t in texts(events) if "10.0.0.5" in t]
    assert len(lines) == 5  # PeerLog burst per source and reason
    assert all(len(t) < 400 and "\n" not in t and "\x1b" not in t for t in lines)
    assert "…(100006 chars)" in lines[0]
    rig.clock.advance(61)
    rig.connect("10.0.0.5", name=huge)
    assert any("15 more" in t and "suppressed" in t for t in texts(events))


def test_takeover_logs_one_line(tmp_path, events):
    rig = Rig(tmp_path)
    first = rig.connect("10.0.0.1", name="M1")
    del events[:]
    second = rig.connect("10.0.0.1", name="M1")
    assert closed(first) and rig.hub.machines["M1"].connection is second
    lose(first)
    lines = texts(events)
    assert len(lines) == 1 and "reconnected" in lines[0], lines


def test_takeover_storm_is_rate_limited(tmp_path, events):
    rig = Rig(tmp_path)
    prev = rig.connect("10.0.0.1", name="M1")
    for _ in range(500):
        cur = rig.connect("10.0.0.1", name="M1")
        lose(prev)
        prev = cur
    assert rig.hub.machines["M1"].takeovers == 500
    assert len(events) <= 10


def test_hub_sensor_refusals_are_listener_counters(tmp_path):
    from tsrmon.ingest.listener import DAQListenerService
    rig = Rig(tmp_path)
    svc = DAQListenerService(rig.config, rig.hub, rig.clock)
    p = rig.connect(name="M1")
    p.dataReceived(frame("DataUpdate", {"Vib": {"type": "VIB", "data": [1.0]},
                                        "vib": {"type": "VIB", "data": [2.0]}}))
    assert svc.counters()["refused_sensor_case"] == 1
    assert [a[1] for a in rig.rec.added] == ["Vib"]


def test_expansion_refusal_is_counted_and_named(tmp_path, events):
    from tests.hostile.ingest_attacks import memo_amplification
    rig = Rig(tmp_path)
    p = rig.connect(name="M1")
    p.dataReceived(memo_amplification(64, 40_000))
    assert rig.counters["refused_expansion"] == 1 and rig.counters["refused_frames"] == 1
    assert not closed(p) and rig.rec.added == []
    line = [t for t in texts(events) if "refused frame" in t][0]
    assert "2560257 samples" in line and "MAX_SAMPLES_PER_FRAME (2000000)" in line


def test_frame_that_trips_a_bug_is_counted_and_logged_rate_limited(tmp_path, events):
    class Broken:
        def add(self, *args):
            raise RuntimeError("a bug in a room")

        def write(self, *args):
            pass

    rig = Rig(tmp_path, stats=Broken())
    p = rig.connect("10.0.0.9", name="M1")
    for _ in range(20):
        p.dataReceived(frame("DataUpdate", {"v": {"type": "VIB", "data": [1.0]}}))
    assert rig.counters["errors"] == 20 and not closed(p)
    failures = [e for e in events if "log_failure" in e and "handling a frame" in e.get("log_format", "")]
    assert len(failures) == 5
    assert "a bug in a room" in str(failures[0]["log_failure"].value)


def _int_frame(n):
    return frame("DataUpdate", {"v": {"type": "VIB", "data": list(range(n))}})


def test_long_walk_goes_on_in_reactor_turns(tmp_path):
    from tsrmon.ingest.protocol import WALK_BUDGET
    rig = Rig(tmp_path)
    turns = []
    call_later = rig.clock.callLater

    def counting(delay, fn, *args, **kw):
        if delay == 0:
            turns.append(fn.__name__)
        return call_later(delay, fn, *args, **kw)

    rig.clock.callLater = counting
    p = rig.connect(name="M1")
    p.dataReceived(_int_frame(5 * WALK_BUDGET))
    # Walked one budget's worth; reading paused until the walk is done.
    assert rig.rec.added == [] and p.transport.producerState == "paused"
    rig.clock.advance(0)
    assert turns == ["_walk_on"] * 5 and p.transport.producerState == "producing"
    assert rig.rec.added[0][3] == [float(i) for i in range(5 * WALK_BUDGET)]


def test_walk_in_turns_finishes_after_the_peer_hung_up(tmp_path):
    from tsrmon.ingest.protocol import WALK_BUDGET
    rig = Rig(tmp_path)
    p = rig.connect(name="M1")
    p.dataReceived(_int_frame(3 * WALK_BUDGET) + _int_frame(10))
    lose(p)
    assert rig.hub.machines["M1"].connection is p  # released once its frames are handled
    for _ in range(10):
        rig.clock.advance(0)
    assert [len(a[3]) for a in rig.rec.added] == [3 * WALK_BUDGET, 10]
    assert rig.hub.machines["M1"].connection is None and rig.factory.connections == set()


def _refusals(rig):
    """Refusal and eviction counters that moved, the factory's and the hub's."""
    moved = {k for k, v in rig.factory.counters.items() if v and k.startswith(("refused_", "evicted_"))}
    hub = getattr(rig.hub, "counters", None) or {}
    return moved | {k for k, v in hub.items() if v and k.startswith("refused_")}


def _huge_unnamed(rig):
    rig.connect().dataReceived(b"\x80\x04X" + (15_000_000).to_bytes(4, "little") + b"a" * PRE_NAME_BUFFER)


def _stuck_budget(rig):
    a, b = rig.connect(name="M1"), rig.connect(name="M2")
    a.dataReceived(partial(50_000))
    b.dataReceived(partial(70_000))
    rig.clock.advance(6)


def _memo(rig):
    from tests.hostile.ingest_attacks import memo_amplification
    rig.connect(name="M1").dataReceived(memo_amplification(64, 40_000))


# (config, what the peer does, the counter it must move)
PROVOKED = [
    ({"ALLOW": ["10.1.0.0/16"]}, lambda r: r.connect("10.0.0.1"), "refused_allow"),
    ({"MAX_CONNECTIONS_PER_HOST": 1}, lambda r: (r.connect(name="M1"), r.connect()), "refused_per_host"),
    ({"MAX_CONNECTIONS": 1}, lambda r: (r.connect(name="M1"), r.connect("10.0.0.2")), "refused_max_connections"),
    ({"MAX_CONNECTIONS": 1}, lambda r: (r.connect("10.0.0.2"), r.connect(name="M1")), "evicted_unnamed"),
    ({"NAME_TIMEOUT": 1}, lambda r: (r.connect(), r.clock.advance(2)), "refused_name_timeout"),
    ({}, _huge_unnamed, "refused_unnamed_buffer"),
    ({"MAX_BUFFER_BYTES": 50_000}, lambda r: r.connect(name="M1").dataReceived(partial(60_000)), "refused_buffer"),
    ({"MAX_TOTAL_BUFFER_BYTES": 100_000, "MAX_PAUSE": 5}, _stuck_budget, "refused_buffer_budget"),
    ({"MAX_FRAME_BYTES": 1000}, lambda r: r.connect(name="M1").dataReceived(b"\x80\x04\xff" + b"z" * 5000),
     "refused_undecodable"),
    ({"TOKENS": {"M1": "s3cret"}}, lambda r: r.connect(name="M1"), "refused_token"),
    ({}, lambda r: r.connect(name="a/b"), "refused_name_bad"),
    ({"MACHINES": ["M1"]}, lambda r: r.connect(name="M2"), "refused_name_not_allowed"),
    ({"MAX_MACHINES": 1}, lambda r: (r.connect(name="M1"), r.connect("10.0.0.2", name="M2")),
     "refused_name_max_machines"),
    ({}, lambda r: (r.connect(name="M1"), r.connect("10.0.0.2", name="M1")), "refused_name_in_use"),
    ({}, lambda r: (r.connect(name="M1"), r.connect("10.0.0.2", name="m1")), "refused_name_case"),
    ({}, lambda r: r.connect(name="M1").dataReceived(frame("Nonsense", {})), "refused_frames"),
    ({}, _memo, "refused_expansion"),
    ({}, lambda r: r.connect(name="M1").dataReceived(frame("DataUpdate", {"Vib": {"type": "VIB", "data": [1.0]},
                                                                          "vib": {"type": "VIB", "data": [2.0]}})),
     "refused_sensor_case"),
    ({"MAX_SENSORS": 1}, lambda r: r.connect(name="M1").dataReceived(frame("DataUpdate", {
        "a": {"type": "VIB", "data": [1.0]}, "b": {"type": "VIB", "data": [2.0]}})), "refused_sensor_max"),
]


@pytest.mark.parametrize("daq, act, key", PROVOKED, ids=[p[2] for p in PROVOKED])
def test_every_refusal_reason_has_a_counter_from_the_start(tmp_path, daq, act, key):
    """Each refusal moves a counter the listener exports before any traffic
    (so /metrics shows it at 0 and a rate() over it works from the start)."""
    from tsrmon.ingest.listener import DAQListenerService
    rig = Rig(tmp_path, **daq)
    declared = set(DAQListenerService(rig.config, rig.hub, rig.clock).counters())
    act(rig)
    moved = _refusals(rig)
    assert key in moved
    assert moved <= declared, moved - declared
