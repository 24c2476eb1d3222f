"""One notification to one target, with retries and backoff.

A *target* is one place a notification goes: the FCM topic, one FCM device
token, one webhook.  It offers ``attempt(notification) -> Deferred`` that
fails with :class:`DeliveryError` (or any network failure, which is retried).
:class:`Delivery` runs the attempts on the injected clock and ends in an
:class:`Outcome`; it never fails, and logs a final failure exactly once.
"""

import uuid
from http import cookiejar

from treq.client import HTTPClient
from twisted.internet import defer, error, protocol, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import client as webclient

from tsrmon import __version__

BACKOFF_BASE = 2.0  # seconds before the first retry; doubles each time
BACKOFF_CAP = 60.0
RETRY_AFTER_CAP = 300.0
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = f"tsrmon/{__version__}"


def http_client(reactor, pool=None):
    """treq's client on an Agent; notifications are rare, so by default its
    pool keeps no persistent connections to hold open or close.  Its cookie
    jar refuses every cookie: a receiver's Set-Cookie must not come back to
    it (or go anywhere) with the next notification."""
    if pool is None:
        pool = webclient.HTTPConnectionPool(reactor, persistent=False)
    no_cookies = cookiejar.CookieJar(cookiejar.DefaultCookiePolicy(allowed_domains=()))
    return HTTPClient(webclient.Agent(reactor, pool=pool), cookiejar=no_cookies)


class Reply:
    """Status, headers (lower-case name -> last value) and the (capped) body."""

    __slots__ = ("code", "headers", "body")

    def __init__(self, code, headers, body):
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())

    def text(self, limit=300):
        """The body as one short line, for logs and the attempt history."""
        text = " ".join(self.body.decode("utf-8", "replace").split())
        return text if len(text) <= limit else text[:limit] + "…"


class _CappedBody(protocol.Protocol):
    """Up to ``cap`` bytes of a body.  treq reads whole bodies and its
    ``collect`` cannot be cancelled; a receiver is configured by an operator
    but is still somebody else's server, so we stop reading at the cap and
    abort the connection when the deadline cancels the read."""

    def __init__(self, cap):
        self.finished = defer.Deferred(lambda _: self._stop())
        self.cap = cap
        self.parts = []
        self.size = 0

    def _stop(self):
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data):
        room = self.cap - self.size
        if room > 0:
            self.parts.append(data[:room])
            self.size += min(len(data), room)
        if len(data) > room:
            self._stop()  # enough for a log line

    def connectionLost(self, reason):
        # A body cut short (by us or the receiver) still goes with its status.
        if not self.finished.called:
            self.finished.callback(b"".join(self.parts))


def post(http, clock, url, body, headers, timeout):
    """POST ``body`` with treq: Deferred[:class:`Reply`], failing with
    ``defer.TimeoutError`` when connect, send and the whole response take
    longer than ``timeout`` s on ``clock``.  Redirects are not followed."""
    # Latin-1, as the webhook configuration checks them (treq would encode str as UTF-8).
    headers = {k.encode("latin-1"): v.encode("latin-1")
               for k, v in {"user-agent": USER_AGENT, **headers}.items()}
    d = http.post(url, data=body, headers=headers, allow_redirects=False, unbuffered=True)

    def got(response):
        hdrs = {k.decode("latin-1").lower(): v[-1].decode("latin-1", "replace")
                for k, v in response.headers.getAllRawHeaders()}
        if response.length == 0:
            return Reply(response.code, hdrs, b"")
        reader = _CappedBody(MAX_RESPONSE_BYTES)
        response.deliverBody(reader)
        return reader.finished.addCallback(lambda data: Reply(response.code, hdrs, data))

    d.addCallback(got)
    # One deadline for the whole exchange (treq's ``timeout`` ends at the
    # response headers); cancelling the chain aborts the connection, and the
    # failure it leaves (ResponseNeverReceived, CancelledError) becomes a
    # TimeoutError that says what happened.
    expired = []

    def expire():
        expired.append(True)
        d.cancel()

    timer = clock.callLater(timeout, expire)

    def done(result):
        if timer.active():
            timer.cancel()
        if expired and isinstance(result, Failure):
            raise defer.TimeoutError(f"no answer within {timeout:g}s")
        return result

    return d.addBoth(done)


class Notification:
    """What is said, about which machine; the same for every target."""

    __slots__ = ("id", "machine", "kind", "title", "body", "data", "t", "suppressed")

    def __init__(self, machine, kind, title, body, data, t, suppressed=0, id=None):
        self.id = id or uuid.uuid4().hex
        self.machine = machine
        self.kind = kind
        self.title = title
        self.body = body
        self.data = data
        self.t = t
        self.suppressed = suppressed


class DeliveryError(Exception):
    """A failed attempt.  ``retryable`` False ends the delivery at once;
    ``retry_after`` is the receiver's own wish (seconds), if it said so."""

    def __init__(self, message, retryable=True, retry_after=None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Outcome:
    __slots__ = ("result", "attempts", "error", "t")

    def __init__(self, result, attempts, error, t):
        self.result = result  # "sent" | "failed" | "cancelled"
        self.attempts = attempts
        self.error = error
        self.t = t


def backoff(retry, retry_after=None):
    """Seconds to wait before retry number ``retry`` (1-based)."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (retry - 1))
    if retry_after is not None:
        delay = max(delay, min(RETRY_AFTER_CAP, retry_after))
    return delay


def describe(failure):
    """One line for a failed attempt, and whether it is worth retrying."""
    exc = failure.value
    if isinstance(exc, DeliveryError):
        return str(exc), exc.retryable, exc.retry_after
    if isinstance(exc, defer.TimeoutError):
        return "timed out", True, None
    if isinstance(exc, error.ConnectionRefusedError):
        return "connection refused", True, None
    if isinstance(exc, error.DNSLookupError):
        return f"DNS lookup failed: {exc}", True, None
    if isinstance(exc, (webclient.ResponseFailed, webclient.RequestTransmissionFailed,
                        webclient.ResponseNeverReceived)):
        reasons = getattr(exc, "reasons", None) or []
        inner = "; ".join(r.getErrorMessage() for r in reasons) or exc.__class__.__name__
        return f"connection failed: {inner}", True, None
    if isinstance(exc, (error.ConnectError, error.ConnectionLost, error.ConnectionDone)):
        return f"connection failed: {exc.__class__.__name__}: {exc}", True, None
    # Anything else is a bug or an unexpected library error: say what it was.
    return f"{exc.__class__.__name__}: {exc}", False, None


class Delivery:
    """Attempts of one notification to one target until sent, failed or cancelled."""

    log = Logger()

    def __init__(self, clock, target, notification):
        self.clock = clock
        self.target = target
        self.notification = notification
        self.cancelled = False
        self.winding_down = False
        self._waiting = None
        self._sleeping = False
        self.done = None  # the Deferred of run(), set by start()

    @property
    def sleeping(self):
        """Waiting out a backoff before the next retry."""
        return self._sleeping

    def start(self):
        self.done = self.run()
        return self.done

    def wind_down(self):
        """Shutdown begins: no more retries; a retry being waited for is given up."""
        self.winding_down = True
        if self._sleeping:
            self.cancel()

    def cancel(self):
        """Stop now (shutdown deadline): the outcome becomes ``cancelled``."""
        self.cancelled = True
        if self._waiting is not None:
            self._waiting.cancel()

    def _wait(self, d):
        self._waiting = d
        return d

    @defer.inlineCallbacks
    def run(self):
        target, note = self.target, self.notification
        attempts = 0
        last_error = None
        while True:
            attempts += 1
            try:
                yield self._wait(target.attempt(note))
            except defer.CancelledError:
                return self._end("cancelled", attempts, last_error or "cancelled at shutdown")
            except Exception:
                text, retryable, retry_after = describe(Failure())
                last_error = text
                if self.cancelled or (self.winding_down and retryable and attempts <= target.retries):
                    return self._end("cancelled", attempts, last_error)
                if not retryable or attempts > target.retries:
                    self.log.warn(
                        "{channel} {target}: notification for {machine} ({kind}) failed after "
                        "{attempts} attempt(s): {error}",
                        channel=target.channel, target=target.label, machine=note.machine,
                        kind=note.kind, attempts=attempts, error=text)
                    return self._end("failed", attempts, text)
                delay = backoff(attempts, retry_after)
                self.log.debug("{channel} {target}: attempt {attempts} for {machine} failed ({error});"
                               " retrying in {delay}s", channel=target.channel, target=target.label,
                               attempts=attempts, machine=note.machine, error=text, delay=delay)
                self._sleeping = True
                try:
                    yield self._wait(task.deferLater(self.clock, delay, lambda: None))
                except defer.CancelledError:
                    return self._end("cancelled", attempts, last_error)
                finally:
                    self._sleeping = False
                if self.cancelled:
                    return self._end("cancelled", attempts, last_error)
                continue
            finally:
                self._waiting = None
            if attempts > 1:
                self.log.info("{channel} {target}: notification for {machine} sent after {attempts} attempts",
                              channel=target.channel, target=target.label, machine=note.machine,
                              attempts=attempts)
            return self._end("sent", attempts, None)

    def _end(self, result, attempts, err):
        if result == "cancelled":
            self.log.warn("{channel} {target}: notification for {machine} ({kind}) given up at shutdown "
                          "after {attempts} attempt(s) ({error})", channel=self.target.channel,
                          target=self.target.label, machine=self.notification.machine,
                          kind=self.notification.kind, attempts=attempts, error=err)
        return Outcome(result, attempts, err, self.clock.seconds())
