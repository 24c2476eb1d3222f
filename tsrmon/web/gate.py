"""The resource in front of the whole HTTP site: CORS, API tokens, request metrics.

Everything on SERVER.PORT (REST and ``/socket.io/``) passes through
:class:`Gate`, so one place decides who may talk to the daemon.
"""

import hmac
import re
import time
from urllib.parse import parse_qs

import orjson
from twisted.logger import Logger
from twisted.web.resource import Resource

# Paths that need no token: the health check (load balancers, systemd
# watchdogs and the like have no token).
OPEN_PATHS = frozenset({b"/healthz"})
ALLOWED_METHODS = b"GET, HEAD, OPTIONS"
# The only routes that change state (acknowledging an alarm).
POST_ROUTE = re.compile(rb"^/alarms/[^/]+/ack$")


def allowed_methods(path):
    """The ``Allow`` value of a path: POST routes take only POST."""
    return b"POST, OPTIONS" if POST_ROUTE.match(path) else ALLOWED_METHODS
PREFLIGHT_MAX_AGE = b"600"


def error_body(message, parameter=None):
    return orjson.dumps({"error": message, "parameter": parameter})


class CorsPolicy:
    """SERVER.CORS_ORIGINS: ``*`` allows any origin (without credentials)."""

    def __init__(self, origins):
        self.any = "*" in origins
        self.origins = frozenset(o.rstrip("/") for o in origins if o != "*")

    def allow(self, origin):
        """The Access-Control-Allow-Origin value for ``origin``, or None."""
        if not origin:
            return None
        if self.any:
            return "*"
        if origin.rstrip("/") in self.origins:
            return origin
        return None


class TokenCheck:
    """AUTH.API_TOKENS: a Bearer header or ``?token=``, compared in constant time."""

    def __init__(self, tokens):
        self.tokens = [t.encode("utf-8") for t in tokens if t]

    @property
    def enabled(self):
        return bool(self.tokens)

    def accepts(self, request):
        given = None
        header = request.getHeader("authorization")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "bearer":
                given = value.strip().encode("utf-8")
        if given is None:
            query = request.uri.partition(b"?")[2]
            values = parse_qs(query, keep_blank_values=True).get(b"token") if query else None
            if values:
                given = values[0]
        if not given:
            return False
        ok = False
        for token in self.tokens:  # no early exit: time does not tell which matched
            ok |= hmac.compare_digest(given, token)
        return ok


class Gate(Resource):
    """Wraps the Klein resource; a leaf, so Klein still sees the whole path."""

    isLeaf = True
    log = Logger()

    def __init__(self, inner, cors, tokens, observe=None):
        super().__init__()
        self.inner = inner
        self.cors = cors
        self.tokens = tokens
        self.observe = observe  # observe(request, seconds) when a response ends

    def render(self, request):
        if self.observe is not None:
            started = time.perf_counter()
            request.notifyFinish().addBoth(self._finished, request, started)
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
        if self.tokens.enabled and request.path not in OPEN_PATHS and not self.tokens.accepts(request):
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
