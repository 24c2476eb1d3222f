"""The cluster-wide notification throttle on real Redis: two nodes (two
ClusterThrottles on one Redis) push one anomaly once, share the hourly cap,
and decide alone while Redis is away."""

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.cluster.helpers import Relay, until
from tsrmon.cluster.redis import RedisLink
from tsrmon.notify.throttle import ClusterThrottle, Throttle

pytestmark = pytest.mark.timeout(30)


@pytest_twisted.inlineCallbacks
def nodes(where, prefix, clock, interval=120, cap=0, names="ab"):
    out = []
    for name in names:
        link = RedisLink(reactor, clock, where, "throttle")
        link.start()
        yield until(lambda: link.connected)
        out.append(ClusterThrottle(clock, interval, cap, link, prefix=prefix, node=name))
    return out


def stop(*throttles):
    return [t.redis.stop() for t in throttles]


@pytest_twisted.inlineCallbacks
def test_one_push_per_anomaly_across_nodes(redis_where, prefix):
    clock = task.Clock()
    clock.advance(1_000_000)
    a, b = yield nodes(redis_where, prefix, clock)
    try:
        key = ("M1", "fault")
        first = yield a.decide(key)
        assert first.send and first.suppressed == 0
        # The other node sees the same anomaly: held back cluster-wide.
        assert (yield b.decide(key)).reason == "throttled"
        assert (yield b.decide(key)).reason == "throttled"
        assert (yield a.decide(key)).reason == "throttled"  # a's own record filters it locally
        assert (yield b.decide(("M2", "fault"))).send  # another machine is not hidden
        clock.advance(120)
        again = yield b.decide(key)
        assert again.send and again.suppressed == 3  # held on both nodes, counted once in Redis
        assert b.throttled == 2 and a.throttled == 1 and a.fallbacks == b.fallbacks == 0
    finally:
        yield from stop(a, b)


@pytest_twisted.inlineCallbacks
def test_the_hourly_cap_is_the_clusters(redis_where, prefix):
    clock = task.Clock()
    clock.advance(1_000_000)
    a, b = yield nodes(redis_where, prefix, clock, interval=0, cap=3)
    try:
        sent = []
        for i, node in enumerate((a, b, a, b, a)):
            sent.append((yield node.decide((f"M{i}", "fault"))).send)
        assert sent == [True, True, True, False, False]
        assert b.capped == 1 and a.capped == 1
        clock.advance(3600)  # the hour's sends age out
        assert (yield b.decide(("M9", "fault"))).send
    finally:
        yield from stop(a, b)


@pytest_twisted.inlineCallbacks
def test_redis_away_decides_alone(redis_where, prefix):
    relay = Relay(redis_where[0], redis_where[1]).up()
    clock = task.Clock()
    clock.advance(1_000_000)
    (a,) = yield nodes(("127.0.0.1", relay.number, 0, None), prefix, clock, names="a")
    try:
        yield relay.down()
        yield until(lambda: not a.redis.connected)
        d = yield a.decide(("M1", "fault"))
        assert d.send and a.fallbacks == 1
        assert (yield a.decide(("M1", "fault"))).reason == "throttled"  # the local rules still hold
    finally:
        yield from stop(a)
        yield relay.down()


def test_without_a_cluster_decide_is_admit():
    clock = task.Clock()
    th = Throttle(clock, 120, 0)
    got = []
    th.decide("A").addCallback(got.append)
    th.decide("A").addCallback(got.append)
    assert [g.send for g in got] == [True, False] and got[1].reason == "throttled"


@pytest_twisted.inlineCallbacks
def test_admit_then_confirm_as_the_notifier_calls_them(redis_where, prefix):
    clock = task.Clock()
    clock.advance(1_000_000)
    a, b = yield nodes(redis_where, prefix, clock)
    try:
        key = ("M1", "alarm:r1")
        # Both nodes see the alert at once: each one's own rules let it through...
        assert a.admit(key).send and b.admit(key).send
        # ...and Redis lets exactly one of them send it.
        first = yield a.confirm(key)
        second = yield b.confirm(key)
        assert (first.send, second.send, second.reason) == (True, False, "throttled")
        assert a.admit(key).reason == "throttled"  # recorded by confirm, not by admit
    finally:
        yield from stop(a, b)
