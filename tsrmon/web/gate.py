"""The resource in front of the whole HTTP site: CORS, API tokens, request metrics.

Everything on SERVER.PORT (REST, the dashboard's data and ``/socket.io/``)
passes through :class:`Gate`.  Who may talk to the daemon is decided by one
:class:`tsrmon.web.policy.HttpPolicy` (shared with the live layer, reloaded
by SIGHUP): the gate applies it to REST; ``/socket.io/`` requests go on to
the live layer, which applies the same object to its handshakes (there a
session id, not a header, authorises the polling requests that follow, and
a token may also come in the Socket.IO CONNECT ``auth`` payload).
"""

import re
import time

import orjson
from twisted.logger import Logger
from twisted.web.resource import Resource

from tsrmon.peerlog import PeerLog, peer_text
from tsrmon.web.policy import CorsPolicy, HttpPolicy, TokenCheck  # noqa: F401 (re-exported)

# Paths that need no token: the health check (load balancers, systemd
# watchdogs and the like have no token).
OPEN_PATHS = frozenset({b"/healthz"})
ALLOWED_METHODS = b"GET, HEAD, OPTIONS"
# The only routes that change state (acknowledging an alarm).
POST_ROUTE = re.compile(rb"^/alarms/[^/]+/ack$")
# The live layer's endpoint: its own CORS answers and token rules (same policy).
LIVE_PREFIX = b"/socket.io"


def is_live(path):
    return path == LIVE_PREFIX or path.startswith(LIVE_PREFIX + b"/")


def allowed_methods(path):
    """The ``Allow`` value of a path: POST routes take only POST."""
    return b"POST, OPTIONS" if POST_ROUTE.match(path) else ALLOWED_METHODS
PREFLIGHT_MAX_AGE = b"600"


def error_body(message, parameter=None):
    return orjson.dumps({"error": message, "parameter": parameter})


class Gate(Resource):
    """Wraps the Klein resource; a leaf, so Klein still sees the whole path."""

    isLeaf = True
    log = Logger()

    def __init__(self, inner, policy, clock, observe=None, live=False):
        super().__init__()
        self.inner = inner
        # live: /socket.io/ is served by the live layer, which applies the
        # policy itself (without one, the path is gated like any other).
        self.live = live
        self.policy = policy  # an HttpPolicy, shared (never copied)
        self.observe = observe  # observe(request, seconds) when a response ends
        self.peerlog = PeerLog(self.log, clock)  # refused tokens, per client

    @property
    def cors(self):
        return self.policy.cors

    @property
    def tokens(self):
        return self.policy.tokens

    def render(self, request):
        if self.observe is not None:
            started = time.perf_counter()
            request.notifyFinish().addBoth(self._finished, request, started)
        if self.live and is_live(request.path):
            return self.inner.render(request)
        origin = request.getHeader("origin")
        allowed = self.cors.allow(origin)
        if allowed is not None:
            request.setHeader(b"Access-Control-Allow-Origin", allowed.encode("utf-8"))
            request.setHeader(b"Access-Control-Expose-Headers", b"Content-Disposition")
            if allowed != "*":
                request.setHeader(b"Vary", b"Origin")
        if request.method == b"OPTIONS":
            return self._options(request, origin, allowed)
        try:
            b"/".join(request.postpath).decode("utf-8")
        except UnicodeDecodeError:
            request.setResponseCode(400)
            request.setHeader(b"Content-Type", b"application/json")
            return error_body("the URL path is not valid UTF-8", None)
        tokens = self.policy.tokens
        if tokens.enabled and request.path not in OPEN_PATHS and not tokens.accepts(request):
            client = str(getattr(request.getClientAddress(), "host", None) or "local")
            self.peerlog.warn(client, "refused token", "{method} {path} from {client}: 401, missing or "
                              "invalid API token", method=peer_text(request.method, 8),
                              path=peer_text(request.path), client=client)
            request.setResponseCode(401)
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="tsrmon"')
            request.setHeader(b"Content-Type", b"application/json")
            return error_body("missing or invalid API token (Authorization: Bearer ... or ?token=...)",
                              "token")
        return self.inner.render(request)

    def _options(self, request, origin, allowed):
        methods = allowed_methods(request.path)
        request.setHeader(b"Allow", methods)
        wanted = request.getHeader("access-control-request-method")
        if origin and wanted:
            if allowed is None:
                request.setResponseCode(403)
                request.setHeader(b"Content-Type", b"application/json")
                return error_body(f"origin {origin!r} is not in SERVER.CORS_ORIGINS", "Origin")
            if wanted.upper().encode("ascii", "replace") not in methods.split(b", "):
                request.setResponseCode(405)
                request.setHeader(b"Content-Type", b"application/json")
                return error_body(f"method {wanted!r} is not allowed", "Access-Control-Request-Method")
            request.setHeader(b"Access-Control-Allow-Methods", methods)
            headers = request.getHeader("access-control-request-headers")
            if headers:
                request.setHeader(b"Access-Control-Allow-Headers", headers.encode("utf-8"))
            request.setHeader(b"Access-Control-Max-Age", PREFLIGHT_MAX_AGE)
        request.setResponseCode(204)
        return b""

    def _finished(self, result, request, started):
        try:
            self.observe(request, time.perf_counter() - started)
        except Exception:
            self.log.failure("recording request metrics for {path}", path=request.path)
        return None
