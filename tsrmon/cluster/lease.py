"""One owner per machine across the cluster: a lease in Redis.

``{prefix}:lease:{machine}`` holds ``"<node> <peer host>"`` with a TTL of
CLUSTER.LEASE_TTL.  The node whose DAQ connection feeds the machine holds
it, renews it every ttl/3 and deletes it when the DAQ disconnects.  Every
step is a Lua script, so it is atomic and compares the holder first: a node
never renews or deletes a lease that another node holds now (a node that
was paused past the TTL finds its lease gone and is told through
``on_lost``).

The takeover rule is the single node's (``hub/registry.py``), across nodes:

- the lease is free, or this node holds it: the DAQ is accepted;
- another node holds it for the **same** DAQ address (the DAQ reconnected
  through the balancer, its old connection still open over there): that
  node is asked, on ``{prefix}:takeover:{node}``, to close its connection
  and release (``on_takeover``); the new connection is accepted as soon as
  the lease is free, waiting up to the TTL (at least TAKEOVER_WAIT): a
  dead node answers nothing, and its lease expires within the TTL, so the
  DAQ that reconnected after its node died is accepted on that connection
  rather than closed and made to reconnect again (the frames it writes
  into a closed connection are lost); a holder that keeps renewing past
  the TTL is alive and the connection is refused;
- another node holds it for **another** address: refused, so two PCs with
  one name cannot knock each other off.

Redis away: a node keeps the leases it holds and keeps feeding (ingest
never stops for Redis); a new DAQ is accepted provisionally (counted in
``unverified``), and when Redis is back every held lease is re-acquired;
one that another node took meanwhile goes to ``on_lost``.
"""

import orjson
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.cluster.redis import RedisLink, RedisUnavailable, Subscribed
from tsrmon.rooms import ICounters, IHealth

TAKEOVER_WAIT = 2.0  # seconds (at least; up to the lease TTL) a same-address reconnect waits for the old node
TAKEOVER_POLL = 0.1

# KEYS[1] lease key; ARGV: node, peer, ttl ms.  Returns {1 or 0, previous value}.
ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if (not v) or string.match(v, '^(%S+)') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
  return {1, v or ''}
end
return {0, v}
"""
# KEYS[1] lease key; ARGV: node, ttl ms.  1 when renewed, 0 when not ours.
RENEW = """
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^(%S+)') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# KEYS[1] lease key; ARGV: node.  1 when deleted, 0 when not ours.
RELEASE = """
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^(%S+)') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


def holder(value):
    """``(node, peer)`` of a lease value."""
    node, _, peer = (value or "").partition(" ")
    return node, peer


@implementer(IHealth, ICounters)
class Leases(Subscribed, service.Service):
    """This node's machine leases.

    ``on_lost(machine)``: a lease this node held is now another node's (close
    that DAQ connection); ``on_takeover(machine, peer)``: another node asks
    this one to close ``machine``'s connection from ``peer`` and release.
    ``clock`` drives renewal and waits (a ``task.Clock`` in tests);
    ``reactor`` makes the Redis connections.
    """

    log = Logger()
    name = "cluster_leases"
    health_key = "cluster_leases"
    counters_key = "cluster_leases"

    def __init__(self, reactor, where, node, ttl, on_lost=None, on_takeover=None, prefix="tsrmon", clock=None):
        self.clock = clock if clock is not None else reactor
        self.node = node
        self.ttl = float(ttl)
        self.on_lost = on_lost or (lambda machine: None)
        self.on_takeover = on_takeover or (lambda machine, peer: None)
        self.prefix = prefix
        self.held = {}  # machine -> peer, leases this node holds (or holds provisionally)
        self._unverified = set()  # accepted while Redis was away
        self.link = RedisLink(reactor, self.clock, where, "lease", on_ready=self._reconnected)
        self.requests = RedisLink(reactor, self.clock, where, "takeover", subscriber=True,
                                  on_message=self._takeover_request, on_ready=self._subscribe)
        self._renewal = None
        self._subscribed = defer.Deferred()
        self._counters = dict.fromkeys((
            "acquired", "refused", "takeovers_asked", "takeovers_done", "renewed", "lost", "released",
            "unverified", "renew_failures"), 0)

    @classmethod
    def from_config(cls, config, reactor, on_lost=None, on_takeover=None, prefix="tsrmon"):
        c = config.cluster
        return cls(reactor, c.connection(), c.node, c.lease_ttl, on_lost, on_takeover, prefix)

    def key(self, machine):
        return f"{self.prefix}:lease:{machine}"

    @property
    def ttl_ms(self):
        return int(self.ttl * 1000)

    # -- life ------------------------------------------------------------------
    def startService(self):
        super().startService()
        self.link.start()
        self.requests.start()
        self._renewal = task.LoopingCall(self.renew)
        self._renewal.clock = self.clock
        self._renewal.start(self.ttl / 3, now=False).addErrback(
            lambda f: self.log.failure("cluster: lease renewal stopped", f))

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._renewal is not None and self._renewal.running:
            self._renewal.stop()
        # A node that stops gives its machines up at once (no TTL wait).
        yield defer.gatherResults([self.release(m) for m in list(self.held)], consumeErrors=True).addErrback(
            lambda _: None)
        yield defer.gatherResults([self.link.stop(), self.requests.stop()], consumeErrors=True)

    def _subscribe(self, protocol):
        return protocol.subscribe(f"{self.prefix}:takeover:{self.node}").addCallback(self._listening)

    # -- the API ---------------------------------------------------------------
    @defer.inlineCallbacks
    def acquire(self, machine, peer=""):
        """True when this node may feed ``machine`` from ``peer`` (the lease
        is now this node's); False when another node keeps it."""
        try:
            ok, value = yield self._acquire(machine, peer)
            if not ok:
                node, held_peer = holder(value)
                if peer and held_peer == peer:
                    # The same DAQ reconnected here: ask the old node to let go.
                    self._counters["takeovers_asked"] += 1
                    yield self.link.command("PUBLISH", f"{self.prefix}:takeover:{node}",
                                            orjson.dumps([machine, peer, self.node]))
                    waited, limit = 0.0, max(TAKEOVER_WAIT, self.ttl + TAKEOVER_POLL)
                    while not ok and waited < limit:
                        yield task.deferLater(self.clock, TAKEOVER_POLL, lambda: None)
                        waited += TAKEOVER_POLL
                        ok, value = yield self._acquire(machine, peer)
        except RedisUnavailable:
            # Ingest never waits for Redis: accepted, checked when it is back.
            self._counters["unverified"] += 1
            self._unverified.add(machine)
            self.held[machine] = peer
            return True
        if ok:
            self._counters["acquired"] += 1
            self.held[machine] = peer
            self._unverified.discard(machine)
        else:
            self._counters["refused"] += 1
        return bool(ok)

    def _acquire(self, machine, peer):
        d = self.link.eval(ACQUIRE, [self.key(machine)], [self.node, peer, self.ttl_ms])
        return d.addCallback(lambda r: (int(r[0]), r[1]))

    def release(self, machine):
        """The DAQ of ``machine`` disconnected: give the lease up (only if
        it is still this node's).  A Deferred (True when deleted)."""
        self.held.pop(machine, None)
        self._unverified.discard(machine)
        d = self.link.eval(RELEASE, [self.key(machine)], [self.node])

        def done(n):
            self._counters["released"] += int(n)
            return bool(n)
        return d.addCallbacks(done, lambda f: f.trap(RedisUnavailable) and False)

    def owner(self, machine):
        """``(node, peer)`` holding ``machine``, or None (a Deferred)."""
        d = self.link.command("GET", self.key(machine))
        return d.addCallback(lambda v: holder(v) if v else None)

    def holds(self, machine):
        return machine in self.held

    # -- renewal -----------------------------------------------------------------
    def renew(self):
        """Extend every held lease (the LoopingCall, every ttl/3)."""
        if not self.held or not self.link.connected:
            return None
        ds = [self._renew_one(m) for m in list(self.held)]
        return defer.gatherResults(ds, consumeErrors=True).addErrback(lambda _: None)

    def _renew_one(self, machine):
        if machine in self._unverified:
            return self._verify(machine)
        d = self.link.eval(RENEW, [self.key(machine)], [self.node, self.ttl_ms])

        def done(n):
            if n:
                self._counters["renewed"] += 1
            elif machine in self.held:
                self._lost(machine)

        def failed(f):
            # Redis away: keep feeding; the next renewal tries again.
            self._counters["renew_failures"] += 1
        return d.addCallbacks(done, failed)

    def _verify(self, machine):
        peer = self.held[machine]
        d = self._acquire(machine, peer)

        def done(result):
            ok, value = result
            if machine not in self.held:
                return
            self._unverified.discard(machine)
            if ok:
                self._counters["acquired"] += 1
            else:
                self._lost(machine, value)
        return d.addCallbacks(done, lambda f: None)

    def _lost(self, machine, value=None):
        self.held.pop(machine, None)
        self._counters["lost"] += 1
        self.log.warn("cluster: the lease of {machine} is no longer this node's ({holder}); its DAQ "
                      "connection here is closed", machine=machine, holder=value or "expired or taken")
        self.on_lost(machine)

    def _reconnected(self, protocol):
        # Back after an outage: check what was accepted meanwhile at once.
        if self._unverified:
            return defer.gatherResults([self._verify(m) for m in list(self._unverified) if m in self.held],
                                       consumeErrors=True).addErrback(lambda _: None)
        return None

    # -- takeover requests from other nodes ---------------------------------------
    def _takeover_request(self, pattern, chan, message):
        try:
            machine, peer, asker = orjson.loads(message)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return
        if self.held.get(machine) != peer:
            return  # not ours any more, or another address: the single-node rule refuses it
        self._counters["takeovers_done"] += 1
        self.log.info("cluster: {machine} reconnected from {peer} through node {asker}: closing it here",
                      machine=machine, peer=peer, asker=asker)
        self.on_takeover(machine, peer)
        if machine in self.held:  # on_takeover normally releases through the disconnect
            self.release(machine)

    # -- rooms -------------------------------------------------------------------
    def health(self):
        return {"ok": self.link.connected, "held": len(self.held), "unverified": len(self._unverified),
                "redis": self.link.health()}

    def counters(self):
        out = dict(self._counters)
        out["held"] = len(self.held)
        out["redis_outages"] = self.link.outages + self.requests.outages
        return out
