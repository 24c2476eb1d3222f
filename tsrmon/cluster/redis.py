"""One Redis connection kept up with backoff, on the injected reactor.

txredisapi's own factories reconnect through a ``ClientService`` on the
global reactor and say nothing about an outage; here each link is one
``txredisapi`` protocol connected through an endpoint built on the injected
reactor, reconnected by the link itself (exponential backoff on the injected
clock, capped), so an outage is one warning, one "back" line and a count,
and a command while Redis is away fails at once (:class:`RedisUnavailable`)
instead of waiting: callers keep their local work going.
"""

import random

import txredisapi
from twisted.internet import defer, endpoints
from twisted.logger import Logger

COMMAND_TIMEOUT = 5.0  # seconds a command may take before it counts as failed
MIN_DELAY, MAX_DELAY = 0.5, 10.0  # reconnect backoff


class RedisUnavailable(Exception):
    """Redis is not connected (or did not answer in time)."""


class _Factory:
    """What txredisapi's protocol asks of its factory when AUTH or SELECT fails."""

    isLazy = False

    def __init__(self, link):
        self.link = link

    def stopTrying(self):
        pass

    def connectionError(self, msg):
        self.link.auth_failed(msg)


class _Subscriber(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern, channel, message):
        self.link.on_message(pattern, channel, message)


class RedisLink:
    """A connection to ``(host, port, db, password)`` kept up until :meth:`stop`.

    ``subscriber=True``: a pub/sub connection (messages to ``on_message``);
    ``on_ready(protocol)`` runs after each (re)connection, e.g. to
    (re)subscribe.  ``label`` names the link in log lines.
    """

    log = Logger()

    def __init__(self, reactor, clock, where, label, subscriber=False, on_message=None, on_ready=None):
        self.reactor = reactor
        self.clock = clock
        self.host, self.port, self.db, self.password = where
        self.label = label
        self.subscriber = subscriber
        self.on_message = on_message or (lambda pattern, channel, message: None)
        self.on_ready = on_ready
        self.protocol = None  # the connected, ready protocol, or None
        self.outages = 0  # times the link went down (or never came up) after start
        self.connects = 0
        self.failed_commands = 0
        self._down_since = None
        self._retry = None
        self._attempt = 0
        self._stopped = True
        self._connecting = None
        self._auth_error = None

    # -- state -----------------------------------------------------------------
    @property
    def connected(self):
        return self.protocol is not None

    def health(self):
        out = {"connected": self.connected, "outages": self.outages}
        if self._down_since is not None:
            out["down_for"] = round(self.clock.seconds() - self._down_since, 1)
        if self._auth_error:
            out["error"] = self._auth_error
        return out

    # -- life ------------------------------------------------------------------
    def start(self):
        self._stopped = False
        self._connect()

    def stop(self):
        """Stop reconnecting and close; a Deferred that fires once closed."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()
        protocol, self.protocol = self.protocol, None
        if protocol is None or protocol.transport is None:
            return defer.succeed(None)
        d = protocol.whenDisconnected()
        protocol.transport.loseConnection()
        return d.addCallback(lambda _: None)

    def _connect(self):
        if self._stopped:
            return
        endpoint = endpoints.TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=COMMAND_TIMEOUT) \
            if _is_ipv4(self.host) else endpoints.HostnameEndpoint(self.reactor, self.host, self.port,
                                                                   timeout=COMMAND_TIMEOUT)
        if self.subscriber:
            protocol = _Subscriber(charset=None, convertNumbers=False, password=self.password)
        else:
            protocol = txredisapi.RedisProtocol(password=self.password, dbid=self.db or None)
        protocol.factory = _Factory(self)
        protocol.link = self
        self._connecting = d = endpoints.connectProtocol(endpoint, protocol)
        d.addCallback(_when_ready)
        d.addCallbacks(self._ready, self._failed)

    def _ready(self, protocol):
        self._connecting = None
        if self._stopped:
            protocol.transport.loseConnection()
            return
        protocol.whenDisconnected().addCallback(self._lost)
        self.protocol = protocol
        self.connects += 1
        self._attempt = 0
        self._auth_error = None
        if self._down_since is not None:
            self.log.info("cluster: Redis {label} link back at {host}:{port} after {s:.1f} s",
                          label=self.label, host=self.host, port=self.port,
                          s=self.clock.seconds() - self._down_since)
            self._down_since = None
        if self.on_ready is not None:
            d = defer.maybeDeferred(self.on_ready, protocol)
            d.addErrback(lambda f: self.log.failure("cluster: Redis {label} link set-up failed", f,
                                                    label=self.label))

    def _failed(self, failure):
        self._connecting = None
        if self._stopped:
            return
        self._went_down(failure.getErrorMessage())

    def _lost(self, protocol):
        if protocol is not self.protocol:
            return
        self.protocol = None
        if not self._stopped:
            self._went_down("connection lost")

    def _went_down(self, why):
        if self._down_since is None:
            # One line per outage, however long it lasts; retries are quiet.
            self._down_since = self.clock.seconds()
            self.outages += 1
            self.log.warn("cluster: Redis {label} link to {host}:{port} is down ({why}); local work goes "
                          "on, retrying with backoff", label=self.label, host=self.host, port=self.port, why=why)
        delay = min(MAX_DELAY, MIN_DELAY * 2 ** min(self._attempt, 10))
        self._attempt += 1
        self._retry = self.clock.callLater(delay * random.uniform(0.8, 1.2), self._connect)

    def auth_failed(self, msg):
        self._auth_error = msg

    # -- commands --------------------------------------------------------------
    def command(self, *args):
        """``execute_command(*args)``: a Deferred; fails with
        :class:`RedisUnavailable` at once when disconnected, or after
        COMMAND_TIMEOUT."""
        protocol = self.protocol
        if protocol is None:
            self.failed_commands += 1
            return defer.fail(RedisUnavailable(f"Redis {self.label} link is down"))
        d = protocol.execute_command(*args)
        d.addTimeout(COMMAND_TIMEOUT, self.clock)
        d.addErrback(self._command_failed)
        return d

    def eval(self, script, keys, args):
        protocol = self.protocol
        if protocol is None:
            self.failed_commands += 1
            return defer.fail(RedisUnavailable(f"Redis {self.label} link is down"))
        d = protocol.eval(script, keys, args)
        d.addTimeout(COMMAND_TIMEOUT, self.clock)
        d.addErrback(self._command_failed)
        return d

    def _command_failed(self, failure):
        self.failed_commands += 1
        if failure.check(txredisapi.ResponseError):
            return failure  # Redis answered: a real error, not an outage
        raise RedisUnavailable(f"Redis {self.label}: {failure.getErrorMessage()}")


def _when_ready(protocol):
    """Fires with ``protocol`` once AUTH/SELECT passed; fails if it closes first."""
    ready = defer.Deferred()

    def up(p):
        if not ready.called:
            ready.callback(p)

    def closed(_):
        if not ready.called:
            ready.errback(RedisUnavailable(protocol.link._auth_error or "closed during set-up"))

    protocol.whenConnected().addCallback(up)
    protocol.whenDisconnected().addCallback(closed)
    return ready


def _is_ipv4(host):
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


class Subscribed:
    """A mixin of the bus and the lease: ``self._subscribed`` (a Deferred)
    fires the first time their subscriber listens."""

    def subscribed(self):
        """A Deferred that fires once the subscriber listens (for tests)."""
        if self._subscribed.called:
            return defer.succeed(None)
        d = defer.Deferred()
        self._subscribed.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def _listening(self, _=None):
        if not self._subscribed.called:
            self._subscribed.callback(None)
