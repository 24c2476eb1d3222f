"""``/socket.io/`` as a twisted.web resource: the handshake, long-polling,
CORS and the hand-over of WebSocket upgrades to Autobahn."""

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tsrmon.live.engineio.codec import (
    BAD_HANDSHAKE_METHOD, BAD_REQUEST, ERROR_MESSAGES, FORBIDDEN, TRANSPORT_UNKNOWN, UNKNOWN_SID,
    UNSUPPORTED_PROTOCOL_VERSION, dumps)


def cors_headers(request, server):
    """The Engine.IO reference server's CORS answer (``cors: {origin, credentials}``),
    for the origins of the shared policy."""
    cors = server.policy.cors
    if cors.any:
        request.setHeader(b"access-control-allow-origin", b"*")
        return
    origin = request.getHeader(b"origin")
    if origin is not None and cors.allow(origin.decode("latin-1")) is not None:
        request.setHeader(b"access-control-allow-origin", origin)
        request.setHeader(b"access-control-allow-credentials", b"true")
        request.setHeader(b"vary", b"Origin")


def error_body(request, code, server):
    server.counters["bad_requests"] += 1
    request.setResponseCode(403 if code == FORBIDDEN else 400)
    request.setHeader(b"content-type", b"application/json")
    return dumps({"code": code, "message": ERROR_MESSAGES[code]}).encode("utf-8")


def write_poll_body(request, text):
    body = text.encode("utf-8")
    request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
    request.setHeader(b"content-length", str(len(body)).encode("ascii"))
    request.write(body)
    request.finish()


class EngineResource(Resource):
    """``/socket.io/``: long-polling here, WebSocket upgrades to Autobahn."""

    isLeaf = True

    def __init__(self, server):
        super().__init__()
        self.engine = server

    def render(self, request):
        server = self.engine
        cors_headers(request, server)
        request.setHeader(b"cache-control", b"no-store")
        method = request.method
        if method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"access-control-allow-methods", b"GET,HEAD,PUT,PATCH,POST,DELETE")
            wanted = request.getHeader(b"access-control-request-headers")
            if wanted:
                request.setHeader(b"access-control-allow-headers", wanted)
            request.setHeader(b"vary", b"Access-Control-Request-Headers")
            request.setHeader(b"content-length", b"0")
            return b""
        args = request.args

        def arg(name):
            v = args.get(name.encode("ascii"))
            return v[0].decode("utf-8", "replace") if v else None

        transport = arg("transport")
        upgrade = (request.getHeader(b"upgrade") or b"").lower() == b"websocket"
        if transport not in ("polling", "websocket"):
            return error_body(request, TRANSPORT_UNKNOWN, server)
        sid = arg("sid")
        if sid is not None:
            session = server.get_session(sid)
            if upgrade:
                if session is None:
                    return self._refuse_upgrade(request)
                # A second WebSocket for a session that is upgrading or already
                # upgraded is accepted and closed at once (EngineWebSocket.onOpen),
                # as the Engine.IO reference server does: the client sees a
                # close, not a failed handshake.
                return server._ws_resource.render(request)
            if session is None:
                return error_body(request, UNKNOWN_SID, server)
            if session.ws is not None or transport != "polling":
                return error_body(request, BAD_REQUEST, server)
            if method == b"GET":
                return session.poll(request)
            if method == b"POST":
                return self._post(request, session)
            return error_body(request, BAD_REQUEST, server)
        # Handshake.
        if method != b"GET":
            return error_body(request, BAD_HANDSHAKE_METHOD, server)
        protocol = server.protocol_of(arg("EIO"))
        if protocol is None:
            return error_body(request, UNSUPPORTED_PROTOCOL_VERSION, server)
        policy = server.policy
        token = policy.tokens.presented(request.getHeader(b"authorization"), arg("token"))
        # No token is fine here: the Socket.IO CONNECT may bring one in its
        # auth payload.  A wrong one is refused at once.
        if policy.tokens_required and token is not None and not policy.token_ok(token):
            return error_body(request, FORBIDDEN, server)
        if not server.accepting:
            return error_body(request, BAD_REQUEST, server)
        if upgrade:
            # Also a WebSocket whose query says transport=polling (the native
            # Dart client without setTransports does this).
            return server._ws_resource.render(request)
        if transport != "polling":
            return error_body(request, BAD_REQUEST, server)
        query = {k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace")
                 for k, v in args.items() if v}
        peer = getattr(request.getClientAddress(), "host", None)
        session = server.open_session(None, token, query, protocol, peer=peer)
        write_poll_body(request, session._poll_encode([session.open_packet]))
        return NOT_DONE_YET

    def _post(self, request, session):
        server = self.engine
        ctype = (request.getHeader(b"content-type") or b"").lower()
        binary = ctype.startswith(b"application/octet-stream")
        if binary and session.protocol == 4:
            session.close("binary payload over polling")
            return error_body(request, BAD_REQUEST, server)
        content = request.content
        content.seek(0, 2)
        size = content.tell()
        if size > server.max_payload:
            session.close("payload too large")
            request.setResponseCode(413)
            request.setHeader(b"content-type", b"application/json")
            return dumps({"code": 1, "message": "Payload Too Large"}).encode("utf-8")
        content.seek(0)
        return session.post(request, content.read(), binary)

    def _refuse_upgrade(self, request):
        self.engine.counters["bad_requests"] += 1
        request.setResponseCode(400)
        request.setHeader(b"content-type", b"text/html")
        request.setHeader(b"connection", b"close")
        return b"Session ID unknown"
