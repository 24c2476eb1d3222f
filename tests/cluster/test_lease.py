"""Machine leases on real Redis, two nodes (two Leases objects): one owner,
clock-driven renewal that never renews a lost lease, compare-and-delete
release, and the single node's takeover rule across nodes."""

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.cluster.conftest import resp
from tests.cluster.helpers import Relay, until
from tsrmon.cluster.lease import Leases

pytestmark = pytest.mark.timeout(30)


def pttl(prefix, machine):
    return int(resp("PTTL", f"{prefix}:lease:{machine}")[1:].strip())


def value(prefix, machine):
    raw = resp("GET", f"{prefix}:lease:{machine}")
    return None if raw.startswith(b"$-1") else raw.split(b"\r\n")[1].decode()


class Node:
    def __init__(self, where, prefix, name, ttl=10, clock=None):
        self.lost, self.asked = [], []
        self.leases = Leases(reactor, where, name, ttl, on_lost=self.lost.append,
                             on_takeover=self.takeover, prefix=prefix, clock=clock)

    def takeover(self, machine, peer):
        self.asked.append((machine, peer))
        self.leases.release(machine)  # as the hub would, closing the old connection

    def start(self):
        self.leases.startService()
        return until(lambda: self.leases.link.connected and self.leases._subscribed.called)


@pytest_twisted.inlineCallbacks
def test_one_owner_and_compare_and_delete(redis_where, prefix):
    a, b = Node(redis_where, prefix, "a", clock=task.Clock()), Node(redis_where, prefix, "b", clock=task.Clock())
    yield a.start()
    yield b.start()
    try:
        assert (yield a.leases.acquire("M1", "10.0.0.1")) is True
        assert value(prefix, "M1") == "a 10.0.0.1" and 9000 < pttl(prefix, "M1") <= 10000
        assert (yield a.leases.acquire("M1", "10.0.0.1")) is True  # already ours
        # Another address through another node: refused, the owner is not asked.
        assert (yield b.leases.acquire("M1", "10.0.0.2")) is False
        assert a.asked == [] and (yield b.leases.owner("M1")) == ("a", "10.0.0.1")
        # b cannot delete a's lease.
        assert (yield b.leases.release("M1")) is False and value(prefix, "M1") == "a 10.0.0.1"
        assert (yield a.leases.release("M1")) is True and value(prefix, "M1") is None
        assert (yield b.leases.acquire("M1", "10.0.0.2")) is True
        assert b.leases.counters()["acquired"] == 1 and b.leases.counters()["refused"] == 1
    finally:
        yield a.leases.stopService()
        yield b.leases.stopService()
    assert value(prefix, "M1") is None  # stopping releases what a node holds


@pytest_twisted.inlineCallbacks
def test_clock_driven_renewal_never_renews_a_lost_lease(redis_where, prefix):
    clock = task.Clock()
    a, b = Node(redis_where, prefix, "a", ttl=3, clock=clock), Node(redis_where, prefix, "b", ttl=3, clock=task.Clock())
    yield a.start()
    yield b.start()
    try:
        assert (yield a.leases.acquire("M1", "h1"))
        resp("PEXPIRE", f"{prefix}:lease:M1", 500)
        clock.advance(1.0)  # ttl/3: the renewal runs
        yield until(lambda: a.leases.counters()["renewed"] == 1)
        assert pttl(prefix, "M1") > 2500
        # The lease expires while a is paused, b takes it; a's renewal must not extend b's.
        resp("DEL", f"{prefix}:lease:M1")
        assert (yield b.leases.acquire("M1", "h2"))
        resp("PEXPIRE", f"{prefix}:lease:M1", 2000)
        clock.advance(1.0)
        yield until(lambda: a.lost == ["M1"])
        assert value(prefix, "M1") == "b h2" and pttl(prefix, "M1") <= 2000
        assert not a.leases.holds("M1") and a.leases.counters()["lost"] == 1
    finally:
        yield a.leases.stopService()
        yield b.leases.stopService()


@pytest_twisted.inlineCallbacks
def test_same_daq_elsewhere_takes_over_when_the_old_node_releases(redis_where, prefix):
    a, b = Node(redis_where, prefix, "a"), Node(redis_where, prefix, "b")
    yield a.start()
    yield b.start()
    try:
        assert (yield a.leases.acquire("M1", "10.0.0.1"))
        assert (yield b.leases.acquire("M1", "10.0.0.1")) is True
        assert a.asked == [("M1", "10.0.0.1")] and value(prefix, "M1") == "b 10.0.0.1"
        assert b.leases.counters()["takeovers_asked"] == 1 and a.leases.counters()["takeovers_done"] == 1
    finally:
        yield a.leases.stopService()
        yield b.leases.stopService()


@pytest_twisted.inlineCallbacks
def test_a_dead_owner_is_taken_over_after_its_ttl(redis_where, prefix):
    a, b = Node(redis_where, prefix, "a", ttl=1), Node(redis_where, prefix, "b", ttl=1)
    yield a.start()
    yield b.start()
    try:
        assert (yield a.leases.acquire("M1", "10.0.0.1"))
        # a dies: no renewal, no answer to takeover requests, no release.
        a.leases._renewal.stop()
        yield a.leases.requests.stop()
        a.leases.held.clear()
        started = reactor.seconds()
        ok = yield b.leases.acquire("M1", "10.0.0.1")  # waits up to TAKEOVER_WAIT (2 s) > ttl
        assert ok is True and reactor.seconds() - started < 2.5
        assert value(prefix, "M1") == "b 10.0.0.1" and a.asked == []
    finally:
        yield a.leases.stopService()
        yield b.leases.stopService()


@pytest_twisted.inlineCallbacks
def test_redis_away_accepts_provisionally_and_checks_when_back(redis_where, prefix):
    relay = Relay(redis_where[0], redis_where[1]).up()
    clock = task.Clock()
    a = Node(("127.0.0.1", relay.number, 0, None), prefix, "a", ttl=3, clock=clock)
    b = Node(redis_where, prefix, "b", ttl=3, clock=task.Clock())
    yield a.start()
    yield b.start()
    try:
        yield relay.down()
        yield until(lambda: not a.leases.link.connected)
        assert (yield a.leases.acquire("M1", "h1")) is True  # ingest never waits for Redis
        assert (yield a.leases.acquire("M2", "h1")) is True
        assert a.leases.counters()["unverified"] == 2 and not a.leases.health()["ok"]
        assert (yield b.leases.acquire("M2", "h9"))  # meanwhile b fed M2 from another PC
        relay.up()
        clock.advance(0.7)  # the link's backoff (0.5 s ± 20 %) runs on the injected clock
        yield until(lambda: a.leases.link.connected)
        yield until(lambda: a.lost == ["M2"])
        assert value(prefix, "M1") == "a h1" and value(prefix, "M2") == "b h9"
        assert a.leases.holds("M1") and not a.leases.holds("M2")
    finally:
        yield a.leases.stopService()
        yield b.leases.stopService()
        yield relay.down()
