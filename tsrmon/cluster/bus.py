"""Live events between cluster nodes, and the cluster-wide machine directory.

The bus is one more ``LiveSink`` (``hub/sinks.py``) on the hub's live bus:
whatever this node's live layer gets (a finished ``second`` of a sensor, an
``anomaly``, a machine's ``status`` change, an alarm rule's broadcast) is
also published on Redis, with this node's id, and every other node hands it
to its ``deliver(machine, event, payload, origin)`` callable
(:class:`LiveDelivery` feeds it into that node's live layer, which then
builds ``update``/``second``/``status`` for its own clients exactly as for a
machine fed locally).  ``publish(machine, event, payload)`` sends any other
event (``spectrum``...).

Wire: one channel ``{prefix}:live``; a message is the orjson array
``[origin node, [[machine, event, payload], ...]]`` holding every event of
one reactor turn (a statistics roll hands over every sensor's second in one
loop: one PUBLISH, not hundreds).  A node ignores its own messages.

Redis down: publications are dropped and counted (local clients are served
by the live layer directly, never through Redis), the outage is one log
line, the link reconnects with backoff, and ``/healthz`` says so.

Directory: the hash ``{prefix}:machines`` maps each machine to
``{"node", "connected", "last_frame", "connected_since", "disconnected_at", "t"}``,
written by the node that feeds it at each status change and every
DIRECTORY_EVERY seconds; ``{prefix}:node:{node}`` (expiring after a few
refreshes) says which nodes are alive, so :meth:`ClusterBus.machines` shows
a machine whose node died as disconnected.
"""

import orjson
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.cluster.redis import RedisLink, RedisUnavailable, Subscribed
from tsrmon.rooms import ICounters, IHealth
from tsrmon.stats.sums import PartialSums

DIRECTORY_EVERY = 5.0  # seconds between directory refreshes of the machines fed here
NODE_ALIVE = 3 * DIRECTORY_EVERY  # a node key outlives a few missed refreshes
STATUS_FIELDS = ("connected", "last_frame", "connected_since", "disconnected_at")

# KEYS[1] the directory; ARGV: this node, then (machine, entry, connected 1/0)
# triples.  A disconnect here must not hide the node that feeds it now (a
# refused claim, a takeover by another node): a "disconnected" entry replaces
# only this node's own entry or another disconnected one.
DIRECTORY_WRITE = """
for i = 2, #ARGV, 3 do
  local write = ARGV[i + 2] == '1'
  if not write then
    local cur = redis.call('HGET', KEYS[1], ARGV[i])
    if not cur then
      write = true
    else
      local e = cjson.decode(cur)
      write = e['node'] == ARGV[1] or not e['connected']
    end
  end
  if write then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""


def channel(prefix):
    return f"{prefix}:live"


@implementer(IHealth, ICounters)
class ClusterBus(Subscribed, service.Service):
    """Publishes this node's live events and delivers the other nodes'.

    ``where``: ``(host, port, db, password)`` of Redis; ``node``: this node's
    id; ``deliver(machine, event, payload, origin)``: called for every event
    of another node; ``registry`` (optional): the machine registry, whose
    connected machines the directory refresh reports; ``prefix``: of every
    key and channel (tests use a unique one); ``owns(machine)``: whether
    this node holds the machine's lease (the status of a machine this node
    does not own is not announced).
    """

    log = Logger()
    name = "cluster"
    health_key = "cluster"
    counters_key = "cluster"

    def __init__(self, reactor, where, node, deliver, registry=None, prefix="tsrmon", clock=None, owns=None):
        self.reactor = reactor
        self.owns = owns  # owns(machine) -> bool: the lease is this node's (None: no leases)
        self._announced = set()  # machines whose "connected" status went out
        self.clock = clock if clock is not None else reactor
        self.node = node
        self.deliver = deliver
        self.registry = registry
        self.prefix = prefix
        self.channel = channel(prefix)
        self.directory_key = f"{prefix}:machines"
        self.commands = RedisLink(reactor, self.clock, where, "command")
        self.subscriber = RedisLink(reactor, self.clock, where, "subscriber", subscriber=True,
                                    on_message=self._message, on_ready=self._subscribe)
        self._pending = []  # [machine, event, payload] of this turn
        self._flush_call = None
        self._refresh = None
        self._subscribed = defer.Deferred()  # fires at the first subscription (tests wait on it)
        self._counters = dict.fromkeys((
            "published_events", "published_messages", "dropped_events", "received_events",
            "received_messages", "delivery_errors", "bad_messages", "directory_writes",
            "directory_failures"), 0)

    @classmethod
    def from_config(cls, config, reactor, deliver, registry=None, prefix="tsrmon", owns=None):
        cluster = config.cluster
        return cls(reactor, cluster.connection(), cluster.node, deliver, registry=registry, prefix=prefix,
                   owns=owns)

    # -- life ------------------------------------------------------------------
    def startService(self):
        super().startService()
        self.commands.start()
        self.subscriber.start()
        self._refresh = task.LoopingCall(self._refresh_directory)
        self._refresh.clock = self.clock
        self._refresh.start(DIRECTORY_EVERY, now=False).addErrback(
            lambda f: self.log.failure("cluster: directory refresh stopped", f))

    def stopService(self):
        super().stopService()
        if self._refresh is not None and self._refresh.running:
            self._refresh.stop()
        self._flush()
        # Whatever was published just now goes out before the link closes.
        return defer.gatherResults([self.commands.stop(), self.subscriber.stop()], consumeErrors=True)

    def _subscribe(self, protocol):
        return protocol.subscribe(self.channel).addCallback(self._listening)

    # -- publishing (LiveSink) ---------------------------------------------------
    def publish(self, machine, event, payload):
        """``event`` of ``machine`` to every other node (never blocks; dropped
        and counted while Redis is away)."""
        self._pending.append((machine, event, payload))
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def second(self, machine, sensor, stype, t, sums):
        if sums.count:
            self.publish(machine, "second", [sensor, stype, t, sums.count, sums.total, sums.total_abs,
                                             sums.minimum, sums.maximum, sums.total_sq])

    def anomaly(self, machine, score, threshold, t):
        self.publish(machine, "anomaly", [float(score), float(threshold), t])

    def machine_status(self, machine):
        name = machine.name
        if self.owns is not None:
            # With leases, a machine is announced once its lease is this node's
            # (the lease gate calls again then): a claim another node keeps
            # shows no connected/disconnected flicker elsewhere.
            if machine.connected and not self.owns(name):
                return
            if not machine.connected and name not in self._announced:
                return
        if machine.connected:
            self._announced.add(name)
        else:
            self._announced.discard(name)
        fields = {k: getattr(machine, k) for k in STATUS_FIELDS}
        self.publish(name, "status", fields)
        self._write_directory([machine])

    def broadcast(self, machine, event, payload):
        self.publish(machine, event, payload)

    def _flush(self):
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        events, self._pending = self._pending, []
        if not events:
            return
        if not self.commands.connected:
            self._counters["dropped_events"] += len(events)
            return
        try:
            message = orjson.dumps([self.node, events], option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            self._counters["bad_messages"] += 1
            self.log.failure("cluster: a live event could not be encoded; {n} events dropped", n=len(events))
            return
        self._counters["published_events"] += len(events)
        self._counters["published_messages"] += 1
        self.commands.command("PUBLISH", self.channel, message).addErrback(self._publish_failed, len(events))

    def _publish_failed(self, failure, n):
        self._counters["dropped_events"] += n
        self._counters["published_events"] -= n
        if not failure.check(RedisUnavailable):
            self.log.failure("cluster: PUBLISH failed", failure)

    # -- receiving ---------------------------------------------------------------
    def _message(self, pattern, chan, message):
        try:
            origin, events = orjson.loads(message)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            self._counters["bad_messages"] += 1
            return
        if origin == self.node:
            return
        self._counters["received_messages"] += 1
        for machine, event, payload in events:
            self._counters["received_events"] += 1
            try:
                self.deliver(machine, event, payload, origin)
            except Exception:
                self._counters["delivery_errors"] += 1
                if self._counters["delivery_errors"] == 1 or self._counters["delivery_errors"] % 1000 == 0:
                    self.log.failure("cluster: delivering {event} of {machine} from {origin} failed "
                                     "({n} so far)", event=event, machine=machine, origin=origin,
                                     n=self._counters["delivery_errors"])

    # -- directory -----------------------------------------------------------------
    def _entry(self, machine):
        entry = {k: getattr(machine, k) for k in STATUS_FIELDS}
        entry["node"] = self.node
        entry["t"] = self.clock.seconds()
        return orjson.dumps(entry)

    def _write_directory(self, machines):
        if not machines or not self.commands.connected:
            return defer.succeed(None)
        args = [self.node]
        for m in machines:
            args += [m.name, self._entry(m), 1 if m.connected else 0]
        self._counters["directory_writes"] += 1
        d = self.commands.eval(DIRECTORY_WRITE, [self.directory_key], args)
        d.addErrback(self._directory_failed)
        # The node is alive as of this write too (not only from the periodic refresh).
        return defer.gatherResults([d, self._alive()], consumeErrors=True).addErrback(lambda _: None)

    def _alive(self):
        d = self.commands.command("SET", f"{self.prefix}:node:{self.node}", self.clock.seconds(),
                                  "PX", int(NODE_ALIVE * 1000))
        return d.addErrback(self._directory_failed)

    def _directory_failed(self, failure):
        self._counters["directory_failures"] += 1

    def _refresh_directory(self):
        if not self.commands.connected:
            return None
        fed = [] if self.registry is None else [m for m in self.registry.machines.values() if m.connected
                                                and (self.owns is None or self.owns(m.name))]
        return self._write_directory(fed) if fed else self._alive()

    def machines(self):
        """``{machine: {"node", "connected", "last_frame", ...}}`` across the
        cluster (a Deferred); a machine whose node stopped refreshing shows
        as disconnected with ``"node_alive": False``.  Fails with
        :class:`RedisUnavailable` while Redis is away."""
        d = self.commands.command("HGETALL", self.directory_key)

        @defer.inlineCallbacks
        def decode(raw):
            out = {}
            items = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2])
            for name, value in items:
                name = name.decode() if isinstance(name, bytes) else name
                out[name] = orjson.loads(value)
            nodes = sorted({e["node"] for e in out.values()} - {self.node})
            alive = {self.node}
            if nodes:
                stamps = yield self.commands.command("MGET", *[f"{self.prefix}:node:{n}" for n in nodes])
                alive.update(n for n, s in zip(nodes, stamps) if s is not None)
            for entry in out.values():
                entry["node_alive"] = entry["node"] in alive
                if not entry["node_alive"]:
                    entry["connected"] = False
            return out
        return d.addCallback(decode)

    # -- rooms -------------------------------------------------------------------
    def health(self):
        ok = self.commands.connected and self.subscriber.connected
        return {"ok": ok, "node": self.node, "commands": self.commands.health(),
                "subscriber": self.subscriber.health()}

    def counters(self):
        out = dict(self._counters)
        out["redis_outages"] = self.commands.outages + self.subscriber.outages
        out["redis_connected"] = int(self.commands.connected and self.subscriber.connected)
        out["redis_failed_commands"] = self.commands.failed_commands
        return out


class LiveDelivery:
    """``deliver`` for a node's live layer: another node's events enter it as
    if this node's hub had produced them, so clients of any node get every
    machine's ``update``, ``second``, ``anomaly``, ``status`` and alarm events.

    ``live``: a ``LiveService``, or the hub's ``LiveBus`` (then every attached
    live layer but the cluster bus itself gets them, looked up at each event,
    so the cluster room can be built before the live layer).
    """

    def __init__(self, live):
        self.target = live

    def layers(self):
        sinks = getattr(self.target, "sinks", None)
        if sinks is None:
            return (self.target,)
        return tuple(s for s in sinks if not isinstance(s, ClusterBus))

    def __call__(self, machine, event, payload, origin):
        for live in self.layers():
            self._deliver(live, machine, event, payload, origin)

    @staticmethod
    def _deliver(live, machine, event, payload, origin):
        if event == "second":
            sensor, stype, t, count, total, total_abs, lo, hi, total_sq = payload
            live.second(machine, sensor, stype, t,
                        PartialSums(count, total, total_abs, _num(lo), _num(hi, -1), total_sq))
        elif event == "anomaly":
            score, threshold, t = payload
            live.anomaly(machine, score, threshold, t)
        elif event == "status":
            if not hasattr(live, "namespace"):
                return  # not a Socket.IO layer: nothing to build a status with
            ns = live.namespace(machine)
            status = ns.status_payload()
            text = live.time_text
            status.update({k: payload.get(k) for k in STATUS_FIELDS})
            last = payload.get("last_frame")
            status["last_frame_time"] = text(last) if last is not None else None
            if last is not None:
                status["last_seen"], status["last_seen_time"] = last, text(last)
            status["node"] = origin
            live.count_sent(ns.broadcast("status", status))
        else:
            live.broadcast(machine, event, payload)


def _num(v, sign=1):
    # orjson writes an infinite min/max (no samples) as null.
    return sign * float("inf") if v is None else v
