"""A small asynchronous HTTP POST for the notifier's channels.

Built on ``twisted.web.client.Agent`` so a send never blocks the reactor and
never needs a thread: a hung receiver costs one idle socket until the
deadline (driven by the injected clock) cancels the request.  Response bodies
are read up to a cap, since a receiver is configured by an operator but is
still somebody else's server.
"""

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

MAX_RESPONSE_BYTES = 64 * 1024


class HTTPResult:
    """Status, headers (lower-case name -> last value) and the (capped) body."""

    def __init__(self, code, headers, body):
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())

    def text(self, limit=300):
        """The body as one short line, for logs and the attempt history."""
        text = self.body.decode("utf-8", "replace").strip()
        text = " ".join(text.split())
        return text if len(text) <= limit else text[:limit] + "…"


@implementer(IBodyProducer)
class _BytesProducer:
    def __init__(self, data):
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _CappedBody(protocol.Protocol):
    def __init__(self, finished, cap):
        self.finished = finished
        self.cap = cap
        self.parts = []
        self.size = 0

    def dataReceived(self, data):
        room = self.cap - self.size
        if room > 0:
            self.parts.append(data[:room])
            self.size += min(len(data), room)
        if len(data) > room and self.transport is not None:
            # Enough for a log line: stop reading the rest.
            self.transport.stopProducing()

    def connectionLost(self, reason):
        # A body cut short by us (or by a receiver that drops the connection)
        # still goes with the status we care about.
        if not self.finished.called:
            self.finished.callback(b"".join(self.parts))


def _read_capped(response, cap):
    if response.length == 0:
        return defer.succeed(b"")
    def abort(_):
        if reader.transport is not None:
            reader.transport.stopProducing()

    finished = defer.Deferred(abort)
    reader = _CappedBody(finished, cap)
    response.deliverBody(reader)
    return finished


class HTTPPoster:
    """POST bytes with a deadline; one per notifier, owning its connection pool."""

    def __init__(self, reactor, clock, user_agent):
        self.reactor = reactor
        self.clock = clock
        self.user_agent = user_agent
        # Notifications are rare: no persistent connections to keep or close.
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._agent = Agent(reactor, pool=self._pool)

    def post(self, url, body, headers, timeout):
        """Deferred[HTTPResult]; fails with ``defer.TimeoutError`` after ``timeout`` s."""
        h = Headers({b"user-agent": [self.user_agent.encode()]})
        for name, value in headers.items():
            h.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])
        d = self._agent.request(b"POST", url.encode("ascii"), h, _BytesProducer(body))

        def got(response):
            hdrs = {k.decode("latin-1").lower(): v[-1].decode("latin-1", "replace")
                    for k, v in response.headers.getAllRawHeaders()}
            rd = _read_capped(response, MAX_RESPONSE_BYTES)
            rd.addCallback(lambda data: HTTPResult(response.code, hdrs, data))
            return rd

        d.addCallback(got)
        # One deadline for connect, send and the whole response; cancelling
        # the chain aborts the connection.  (Not ``addTimeout``: Agent turns
        # the cancellation into ResponseNeverReceived, which hides the cause.)
        expired = []

        def expire():
            expired.append(True)
            d.cancel()

        timer = self.clock.callLater(timeout, expire)

        def done(result):
            if timer.active():
                timer.cancel()
            if expired and isinstance(result, Failure):
                raise defer.TimeoutError(f"no answer within {timeout:g}s")
            return result

        d.addBoth(done)
        return d
