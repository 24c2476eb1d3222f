"""HTTP policy: who may talk to the daemon on SERVER.PORT, decided in one place.

One :class:`HttpPolicy` holds SERVER.CORS_ORIGINS (:class:`CorsPolicy`) and
AUTH.API_TOKENS (:class:`TokenCheck`).  ``makeService`` builds it once and
passes the same object to the REST gate (:class:`tsrmon.web.gate.Gate`, which
also covers the dashboard's data) and to the live layer
(:class:`tsrmon.live.engineio.EngineServer` and
:class:`tsrmon.live.socketio.SocketServer`); SIGHUP calls
:meth:`HttpPolicy.reconfigure`, which swaps both parts at once, so every
surface sees the new origins and tokens on its next request, handshake or
CONNECT.  Nobody keeps a copy.

A token is presented as ``Authorization: Bearer <token>``, as ``?token=<token>``
or, on Socket.IO, in the CONNECT ``auth`` payload ``{"token": <token>}``.
"""

import hmac
from urllib.parse import parse_qs


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


def _as_bytes(token):
    if isinstance(token, str):
        return token.encode("utf-8")
    if isinstance(token, (bytes, bytearray)):
        return bytes(token)
    return None  # a number, a list, None: never a token


class TokenCheck:
    """AUTH.API_TOKENS, compared in constant time against every configured token."""

    def __init__(self, tokens):
        self.tokens = [t.encode("utf-8") for t in tokens if t]

    @property
    def enabled(self):
        return bool(self.tokens)

    def ok(self, token):
        """True when ``token`` (str or bytes) is a configured token."""
        given = _as_bytes(token)
        if not given:
            return False
        ok = False
        for expected in self.tokens:  # no early exit: time does not tell which matched
            ok |= hmac.compare_digest(given, expected)
        return ok

    @staticmethod
    def presented(authorization, query_token):
        """The token a request presents, as bytes, or None.

        ``authorization``: the Authorization header (str/bytes or None); a
        Bearer value wins.  Otherwise ``query_token`` (the first ``token=``
        query value, str/bytes or None)."""
        if authorization:
            if isinstance(authorization, bytes):
                authorization = authorization.decode("latin-1")
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip().encode("utf-8")
        if query_token is None:
            return None
        return _as_bytes(query_token)

    @classmethod
    def of_request(cls, request):
        """The token a twisted.web request presents, or None."""
        query = request.uri.partition(b"?")[2]
        values = parse_qs(query, keep_blank_values=True).get(b"token") if query else None
        return cls.presented(request.getHeader("authorization"), values[0] if values else None)

    def accepts(self, request):
        return self.ok(self.of_request(request))


class HttpPolicy:
    """CORS origins and API tokens of the whole HTTP site; one object, shared."""

    def __init__(self, cors_origins=("*",), tokens=()):
        self.cors = CorsPolicy(list(cors_origins))
        self.tokens = TokenCheck(list(tokens))
        # Called with no argument after each reconfigure (the live layer
        # disconnects clients whose token was removed).
        self.on_change = []

    @classmethod
    def from_config(cls, config):
        return cls(config.server.cors_origins, config.auth.api_tokens)

    def reconfigure(self, config):
        """SIGHUP: new origins and tokens for every surface's next request."""
        self.cors = CorsPolicy(list(config.server.cors_origins))
        self.tokens = TokenCheck(list(config.auth.api_tokens))
        for listener in list(self.on_change):
            listener()

    @property
    def tokens_required(self):
        return self.tokens.enabled

    def token_ok(self, token):
        return self.tokens.ok(token)
