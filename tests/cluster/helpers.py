"""A TCP relay in front of Redis that a test can cut and restore (an outage
without touching the shared Redis), and small waiting helpers."""

from twisted.internet import defer, protocol, reactor, task
from twisted.protocols import portforward


class Relay:
    def __init__(self, host, port):
        self.factory = portforward.ProxyFactory(host, port)
        self.factory.protocol = _Tracked
        self.factory.live = set()
        self.port = None
        self.number = 0

    def up(self):
        self.port = reactor.listenTCP(self.number, self.factory, interface="127.0.0.1")
        self.number = self.port.getHost().port
        return self

    def down(self):
        """Stop listening and cut every relayed connection."""
        d = defer.maybeDeferred(self.port.stopListening)
        for p in list(self.factory.live):
            p.transport.abortConnection()
        return d


class Collect(protocol.Protocol):
    """A client that keeps what it receives; ``done`` fires with it at the close."""

    def connectionMade(self):
        self.data = b""
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(self.data)


class _Tracked(portforward.ProxyServer):
    def connectionMade(self):
        self.factory.live.add(self)
        super().connectionMade()

    def connectionLost(self, reason):
        self.factory.live.discard(self)
        super().connectionLost(reason)


@defer.inlineCallbacks
def until(predicate, timeout=5.0, step=0.02):
    """Wait (on the real reactor) until ``predicate()`` is true."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        yield task.deferLater(reactor, step, lambda: None)
        waited += step
