"""Local fakes for the notifier tests: an HTTP receiver with scripted
answers, Google's OAuth token endpoint and FCM's v1 send endpoint, all on
127.0.0.1 port 0, plus a service-account file with a fresh RSA key."""

import json
import os
import socket

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt as google_jwt
from twisted.internet import defer, reactor, task
from twisted.web import resource, server

from tsrmon.config import build_config

WAIT = 5.0  # seconds a test waits for a network event before failing


class Received:
    def __init__(self, request, body):
        self.method = request.method.decode()
        self.path = request.path.decode()
        self.headers = {k.decode().lower(): v[-1].decode("latin-1")
                        for k, v in request.requestHeaders.getAllRawHeaders()}
        self.body = body

    def json(self):
        return json.loads(self.body)


class Receiver(resource.Resource):
    """Answers every request with the next scripted reply, then the default.

    A reply is ``(code, body_bytes, headers)``, a callable ``(Received) ->
    reply``, or ``"hang"`` (the request is never answered).
    """

    isLeaf = True

    def __init__(self, default=(200, b"{}", {})):
        super().__init__()
        self.default = default
        self.script = {}  # path prefix -> list of replies
        self.routes = {}  # path prefix -> default reply for that prefix
        self.requests = defer.DeferredQueue()
        self.log = []
        self.hanging = []

    def reply(self, prefix, *replies):
        self.script.setdefault(prefix, []).extend(replies)

    def render(self, request):
        got = Received(request, request.content.read())
        self.log.append(got)
        self.requests.put(got)
        answer = self.default
        for prefix in sorted(set(self.script) | set(self.routes), key=len, reverse=True):
            if got.path.startswith(prefix):
                queue = self.script.get(prefix)
                answer = queue.pop(0) if queue else self.routes.get(prefix, self.default)
                break
        if callable(answer):
            answer = answer(got)
        if answer == "hang":
            self.hanging.append(request)
            return server.NOT_DONE_YET
        code, body, headers = answer
        request.setResponseCode(code)
        for k, v in headers.items():
            request.setHeader(k, v)
        return body

    def paths(self, prefix=""):
        return [r for r in self.log if r.path.startswith(prefix)]


def listen(receiver):
    """Serve ``receiver`` on 127.0.0.1; returns (port, base URL)."""
    site = server.Site(receiver)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return port, f"http://127.0.0.1:{port.getHost().port}"


def dead_url():
    """A URL on a local port nobody listens on (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/hook"


def get(queue, timeout=WAIT):
    """The next item of a DeferredQueue, failing the test if none comes in time."""
    d = queue.get()
    d.addTimeout(timeout, reactor)
    return d


def settle(svc, timeout=WAIT):
    """``svc.settled()``, failing the test if it does not come in time."""
    d = svc.settled()
    d.addTimeout(timeout, reactor)
    return d


@defer.inlineCallbacks
def until(predicate, timeout=WAIT):
    """Wait (real time, bounded) until ``predicate()`` is true."""
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        yield task.deferLater(reactor, 0.005, lambda: None)
        waited += 0.005


class FakeGoogle:
    """OAuth token endpoint (``/token``) and FCM v1 (``/v1/projects/...``).

    Token requests are checked like Google does: a JWT bearer grant signed
    by the service account's key, for the FCM scope, addressed to us.
    """

    def __init__(self, receiver, base, public_pem, email):
        self.receiver = receiver
        self.base = base
        self.public_pem = public_pem
        self.email = email
        self.issued = 0
        self.sent = 0
        self.grants = []
        receiver.routes["/token"] = self._token
        receiver.routes["/v1/"] = self._send

    @property
    def token_uri(self):
        return self.base + "/token"

    @property
    def send_url(self):
        return self.base + "/v1/projects/{project}/messages:send"

    def _token(self, got):
        form = dict(p.split("=", 1) for p in got.body.decode().split("&"))
        assert form["grant_type"] == "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
        # The notifier signs with the injected (test) clock, so only the
        # lifetime is checked here, not the wall-clock expiry.
        claims = google_jwt.decode(form["assertion"], certs=self.public_pem, audience=self.token_uri,
                                   clock_skew_in_seconds=10**10)
        assert claims["exp"] - claims["iat"] == 3600
        self.grants.append(claims)
        if claims["iss"] != self.email:
            return (400, json.dumps({"error": "invalid_grant"}).encode(), {})
        self.issued += 1
        return (200, json.dumps({"access_token": f"tok-{self.issued}", "expires_in": 3599,
                                 "token_type": "Bearer"}).encode(), {"content-type": "application/json"})

    def _send(self, got):
        self.sent += 1
        project = got.path.split("/")[3]
        return (200, json.dumps({"name": f"projects/{project}/messages/{self.sent}"}).encode(),
                {"content-type": "application/json"})

    def sends(self):
        return self.receiver.paths("/v1/")

    def fcm_error(self, code, status, message, error_code=None, headers=None):
        err = {"code": code, "message": message, "status": status}
        if error_code:
            err["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                               "errorCode": error_code}]
        return (code, json.dumps({"error": err}).encode(), headers or {})


def service_account(path, token_uri, project="tsrmon-test"):
    """Write a service-account JSON with a new RSA key; returns (public PEM, email)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    email = f"firebase-adminsdk@{project}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "0123456789abcdef",
        "private_key": private_pem,
        "client_email": email,
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(info, f)
    return public_pem, email


def make_config(tmp_path, fcm=None, notify=None):
    raw = {
        "FCM": dict({"CRED_PATH": str(tmp_path / "missing.json")}, **(fcm or {})),
        "NOTIFY": notify or {},
        "TIME": {"ZONE": "Asia/Seoul"},
        "DATABASE": {"PATH": str(tmp_path / "db")},
        "DATA": {"PATH": str(tmp_path / "data")},
        "LOGGER": {"PATH": str(tmp_path / "log")},
    }
    return build_config(raw, None, str(tmp_path))


def records_rows(tmp_path):
    """The attempt history read straight from the file (after the service stopped)."""
    import sqlite3
    conn = sqlite3.connect(os.path.join(str(tmp_path / "db"), ".notifications.sqlite"))
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM notification_attempts ORDER BY id")]
    finally:
        conn.close()
