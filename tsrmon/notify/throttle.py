"""When a notification may go out: per machine spacing and a global cap.

The deployed sender kept one ``limit_time`` for every machine and advanced it
by the interval from its *old* value, so one machine's alarm hid another's
and a quiet night built up a debt that was paid out as a burst.  Here every
key (machine and kind of alert) has its own last-send time, the next send is
allowed ``interval`` seconds after it, and nothing accumulates.  Suppressed
alerts are counted so the next one that goes out can say how many there were.

The global cap counts sends over a sliding hour, so a storm from many (or
spoofed) machines cannot flood phones or receivers.

With a cluster (issue 16, CLUSTER.REDIS), :class:`ClusterThrottle` keeps the
last send per key, the held counts and the hour's sends in Redis and decides
in one Lua script, so one anomaly is pushed once across all nodes and the
cap is the cluster's.  Without one, :class:`Throttle` is all there is.
"""

import collections

import orjson
from twisted.internet import defer
from twisted.logger import Logger

# Beyond this many keys, keys with nothing to report are forgotten.
_PRUNE_AT = 4096


class Decision:
    """What :meth:`Throttle.admit` decided.

    ``send`` is True when the notification goes out; ``suppressed`` is then the
    number of notifications for the same key held back since the previous
    send.  ``reason`` is ``"throttled"`` or ``"capped"`` when held back.
    """

    __slots__ = ("send", "suppressed", "reason")

    def __init__(self, send, suppressed=0, reason=None):
        self.send = send
        self.suppressed = suppressed
        self.reason = reason

    def __repr__(self):
        return f"Decision(send={self.send}, suppressed={self.suppressed}, reason={self.reason!r})"


class Throttle:
    """Per-key spacing of ``interval`` seconds plus at most ``max_per_hour`` sends.

    ``max_per_hour == 0`` means no global cap; ``interval == 0`` no spacing.
    """

    def __init__(self, clock, interval, max_per_hour):
        self.clock = clock
        self.interval = float(interval)
        self.max_per_hour = int(max_per_hour)
        self._last = {}  # key -> time of its last send
        self._held = collections.Counter()  # key -> suppressed since its last send
        self._window = collections.deque()  # send times within the last hour
        self.throttled = 0
        self.capped = 0

    def configure(self, interval, max_per_hour):
        self.interval = float(interval)
        self.max_per_hour = int(max_per_hour)

    def admit(self, key):
        now = self.clock.seconds()
        held = self._check(key, now)
        if held is not None:
            return held
        return self._record(key, now)

    def decide(self, key):
        """:meth:`admit` as a Deferred (the form a cluster-wide throttle needs)."""
        return defer.succeed(self.admit(key))

    def _check(self, key, now):
        """A held-back Decision (counted), or None when ``key`` may go out."""
        last = self._last.get(key)
        # A wall clock stepped backwards must not hold a machine silent.
        if last is not None and last <= now < last + self.interval:
            self._held[key] += 1
            self.throttled += 1
            return Decision(False, reason="throttled")
        if self.max_per_hour and self.sent_last_hour(now) >= self.max_per_hour:
            self._held[key] += 1
            self.capped += 1
            return Decision(False, reason="capped")
        return None

    def _record(self, key, now, suppressed=None):
        self._last[key] = now
        self._window.append(now)
        if len(self._last) > _PRUNE_AT:
            self._prune(now)
        held = self._held.pop(key, 0)
        return Decision(True, suppressed=held if suppressed is None else suppressed)

    def sent_last_hour(self, now=None):
        if now is None:
            now = self.clock.seconds()
        window = self._window
        while window and window[0] <= now - 3600:
            window.popleft()
        return len(window)

    def held(self, key):
        """Notifications for ``key`` suppressed since its last send."""
        return self._held.get(key, 0)

    def held_total(self):
        return sum(self._held.values())

    def _prune(self, now):
        for key, last in list(self._last.items()):
            if now - last >= self.interval and not self._held.get(key):
                del self._last[key]


# KEYS: last send of the key, its held count, the cluster's sends of the hour
# (a sorted set by time).  ARGV: now, interval, cap, a unique member.
# Returns {1 sent or 0, reason, suppressed}.
CLUSTER_ADMIT = """
local now, interval, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local last = tonumber(redis.call('GET', KEYS[1]))
if last and last <= now and now < last + interval then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], 86400)
  return {0, 'throttled', 0}
end
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 3600)
  if redis.call('ZCARD', KEYS[3]) >= cap then
    redis.call('INCR', KEYS[2])
    redis.call('EXPIRE', KEYS[2], 86400)
    return {0, 'capped', 0}
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.max(1000, math.ceil(interval * 1000)))
redis.call('ZADD', KEYS[3], now, ARGV[4])
redis.call('EXPIRE', KEYS[3], 3700)
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('DEL', KEYS[2])
return {1, '', held}
"""


class ClusterThrottle(Throttle):
    """The same rules, decided cluster-wide in Redis, in two steps:

    :meth:`admit` (synchronous, as the notifier calls it) is this node's
    pre-filter: what this node sent the cluster sent too, so its spacing and
    cap can only hold back what Redis would; it records nothing.
    :meth:`confirm` (a Deferred) then decides in Redis and records the send;
    :meth:`decide` is both.  ``redis``: anything with
    ``eval(script, keys, args) -> Deferred`` that fails when Redis is away
    (``tsrmon.cluster.redis.RedisLink``).  While Redis is away the node
    decides alone (a push may then go out once per node: better than none),
    counted in ``fallbacks``.
    """

    log = Logger()

    def __init__(self, clock, interval, max_per_hour, redis, prefix="tsrmon", node="node"):
        super().__init__(clock, interval, max_per_hour)
        self.redis = redis
        self.prefix = prefix
        self.node = node
        self.fallbacks = 0
        self._seq = 0
        self._falling_back = False

    def _keys(self, key):
        name = orjson.dumps(list(key) if isinstance(key, tuple) else key).decode()
        base = f"{self.prefix}:throttle"
        return [f"{base}:last:{name}", f"{base}:held:{name}", f"{base}:window"]

    def admit(self, key):
        held = self._check(key, self.clock.seconds())
        if held is not None:
            # Held here already; Redis still counts it for the next send's "suppressed".
            self.redis.eval("redis.call('INCR', KEYS[1]) redis.call('EXPIRE', KEYS[1], 86400)",
                            self._keys(key)[1:2], []).addErrback(lambda _: None)
            return held
        return Decision(True, suppressed=self._held.get(key, 0))

    def confirm(self, key):
        """After a passing :meth:`admit`: the cluster's Decision (a Deferred)."""
        now = self.clock.seconds()
        self._seq += 1
        member = f"{self.node}:{now!r}:{self._seq}"
        d = self.redis.eval(CLUSTER_ADMIT, self._keys(key), [repr(now), repr(self.interval),
                                                             self.max_per_hour, member])
        d.addCallbacks(self._decided, self._alone, callbackArgs=(key, now), errbackArgs=(key, now))
        return d

    def decide(self, key):
        decision = self.admit(key)
        if not decision.send:
            return defer.succeed(decision)
        return self.confirm(key)

    def _decided(self, result, key, now):
        sent, reason, suppressed = int(result[0]), result[1], int(result[2])
        if self._falling_back:
            self._falling_back = False
            self.log.info("notify: the cluster throttle is back in Redis")
        if sent:
            self._held.pop(key, None)
            return self._record(key, now, suppressed)
        self._held[key] += 1
        if reason == "capped":
            self.capped += 1
        else:
            self.throttled += 1
        return Decision(False, reason=reason)

    def _alone(self, failure, key, now):
        self.fallbacks += 1
        if not self._falling_back:
            self._falling_back = True
            self.log.warn("notify: Redis unreachable ({why}); throttling on this node alone until it "
                          "is back", why=failure.getErrorMessage())
        return self._record(key, now)  # admit() already passed this node's own rules
