"""Firebase Cloud Messaging, HTTP v1, as the deployed app expects it.

The service-account file (``FCM.CRED_PATH``) is read and checked with
firebase-admin's ``credentials.Certificate``; the OAuth token exchange (a
JWT signed with the account's key, RFC 7523) and the ``messages:send`` call
are made here with treq (Twisted's asynchronous HTTP client) instead of
firebase-admin's blocking ``messaging.send``:

* nothing blocks the reactor and no thread can hang at shutdown: every
  request has a deadline on the injected clock and is cancelled when it
  passes;
* retries are ours alone (firebase-admin's HTTP adapter retries 5xx on its
  own, which would multiply attempts behind our backoff);
* the send URL is a constructor argument, so tests send to a fake on
  127.0.0.1 through exactly the code production runs, rather than patching
  firebase-admin's private ``_MessagingService.FCM_URL``.

The request body is FCM v1's documented ``{"message": {...}}``; a test checks
it against firebase-admin's own encoder so the two cannot drift apart.
"""

import json
import os
import urllib.parse

from firebase_admin import credentials as fb_credentials
from google.auth import jwt as google_jwt
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from tsrmon import __version__
from tsrmon.notify.delivery import DeliveryError, post
from tsrmon.notify.settings import topic_problem

FCM_SEND_URL = "https://fcm.googleapis.com/v1/projects/{project}/messages:send"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Refresh an access token this long before Google says it expires.
TOKEN_MARGIN = 300.0
# Keys FCM refuses in a data payload.
_RESERVED_DATA = ("from", "notification", "message_type")
_RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)


class CredentialProblem(Exception):
    """The service-account file cannot be used; the text says why."""


class ServiceAccount:
    """What a Firebase service-account file gives us: project, identity, key."""

    def __init__(self, project_id, email, token_uri, signer):
        self.project_id = project_id
        self.email = email
        self.token_uri = token_uri
        self.signer = signer

    @classmethod
    def load(cls, path):
        if not os.path.exists(path):
            raise CredentialProblem(f"credential file {path} does not exist")
        try:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
        except OSError as e:
            raise CredentialProblem(f"cannot read credential file {path}: {e.strerror}") from None
        except ValueError as e:
            raise CredentialProblem(f"credential file {path} is not JSON: {e}") from None
        if not isinstance(info, dict):
            raise CredentialProblem(f"credential file {path} is not a service-account JSON object")
        try:
            cert = fb_credentials.Certificate(info)
        except ValueError as e:
            raise CredentialProblem(f"credential file {path}: {e}") from None
        google = cert.get_credential()
        if not cert.project_id:
            raise CredentialProblem(f"credential file {path} has no project_id")
        token_uri = info.get("token_uri")
        if not isinstance(token_uri, str) or not token_uri.startswith(("https://", "http://")):
            raise CredentialProblem(f"credential file {path} has no usable token_uri")
        return cls(cert.project_id, google.service_account_email, token_uri, google.signer)

    def assertion(self, now):
        """The signed JWT exchanged for an access token."""
        now = int(now)
        claims = {"iss": self.email, "scope": FCM_SCOPE, "aud": self.token_uri,
                  "iat": now, "exp": now + 3600}
        return google_jwt.encode(self.signer, claims)


class AccessTokens:
    """An OAuth access token, fetched when needed and shared by all sends."""

    log = Logger()

    def __init__(self, account, http, clock, timeout):
        self.account = account
        self.http = http
        self.clock = clock
        self.timeout = timeout
        self._token = None
        self._expires = 0.0
        self._waiters = []
        self._refreshing = False
        self.refreshes = 0
        self.failures = 0

    def invalidate(self):
        self._token = None

    def get(self):
        if self._token is not None and self.clock.seconds() < self._expires - TOKEN_MARGIN:
            return defer.succeed(self._token)

        def forget(d):
            if d in self._waiters:
                self._waiters.remove(d)

        d = defer.Deferred(forget)
        self._waiters.append(d)
        if not self._refreshing:
            self._refresh()
        return d

    def _refresh(self):
        self._refreshing = True
        body = urllib.parse.urlencode({
            "grant_type": JWT_GRANT,
            "assertion": self.account.assertion(self.clock.seconds()).decode("ascii"),
        }).encode("ascii")
        d = post(self.http, self.clock, self.account.token_uri, body,
                 {"content-type": "application/x-www-form-urlencoded"}, self.timeout)
        d.addCallback(self._got)
        d.addBoth(self._wake)

    def _got(self, result):
        try:
            doc = json.loads(result.body)
        except ValueError:
            doc = None
        if result.code == 200 and isinstance(doc, dict) and isinstance(doc.get("access_token"), str):
            self.refreshes += 1
            self._token = doc["access_token"]
            expires_in = doc.get("expires_in", 3600)
            self._expires = self.clock.seconds() + (expires_in if isinstance(expires_in, (int, float)) else 3600)
            return self._token
        self.failures += 1
        what = result.text()
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            what = doc["error"] + (f": {doc['error_description']}" if doc.get("error_description") else "")
        # 4xx is a refused credential (invalid_grant, deleted key): retrying won't help.
        raise DeliveryError(f"OAuth token endpoint: HTTP {result.code} {what}",
                            retryable=result.code in _RETRYABLE_STATUS)

    def _wake(self, result):
        self._refreshing = False
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if isinstance(result, Failure):
                w.errback(result)
            else:
                w.callback(result)
        return None


def fcm_message(target_key, target_value, notification):
    """The v1 request body for one target (``topic`` or ``token``)."""
    data = {}
    for k, v in notification.data.items():
        if k in _RESERVED_DATA or k.startswith(("google", "gcm")):
            continue
        data[str(k)] = v if isinstance(v, str) else json.dumps(v)
    return {"message": {
        target_key: target_value,
        "notification": {"title": notification.title, "body": notification.body},
        "data": data,
    }}


class FcmTarget:
    """The topic, or one device token."""

    channel = "fcm"

    def __init__(self, fcm, key, value):
        self.fcm = fcm
        self.key = key
        self.value = value
        # A device token is a credential of sorts: show only its start.
        self.label = f"topic:{value}" if key == "topic" else f"token:{value[:8]}…"
        self.retries = fcm.retries

    def attempt(self, notification):
        fcm = self.fcm
        body = json.dumps(fcm_message(self.key, self.value, notification), ensure_ascii=False).encode("utf-8")
        d = fcm.tokens.get()

        def send(token):
            headers = {
                "authorization": f"Bearer {token}",
                "content-type": "application/json; charset=UTF-8",
                "x-goog-api-format-version": "2",
                "x-firebase-client": f"tsrmon/{__version__}",
            }
            return post(fcm.http, fcm.clock, fcm.send_url, body, headers, fcm.timeout)

        d.addCallback(send)
        d.addCallback(self._check)
        return d

    def _check(self, result):
        if result.code == 200:
            return result
        try:
            err = json.loads(result.body).get("error") or {}
        except (ValueError, AttributeError):
            err = {}
        if not isinstance(err, dict):
            err = {}
        code = err.get("status") or ""
        for detail in err.get("details") or ():
            if isinstance(detail, dict) and detail.get("errorCode"):
                code = detail["errorCode"]
        message = err.get("message") or result.text()
        retryable = result.code in _RETRYABLE_STATUS
        if result.code == 401:
            # The token expired early or was revoked: fetch a new one and retry.
            self.fcm.tokens.invalidate()
            retryable = True
        retry_after = None
        value = result.header("retry-after")
        if value and value.strip().isdigit():
            retry_after = float(value.strip())
        text = f"HTTP {result.code} {code}: {message}".replace(" : ", ": ")
        if code == "UNREGISTERED":
            text += " (remove this token from FCM.TOKENS)"
        raise DeliveryError(text, retryable=retryable, retry_after=retry_after)


class FcmChannel:
    """FCM push: enabled when the credential file loads and there is a target."""

    log = Logger()
    name = "fcm"

    def __init__(self, section, http, clock, send_url=None, timeout=10.0, retries=3):
        """``http``: a treq ``HTTPClient`` (``delivery.http_client``)."""
        self.http = http
        self.clock = clock
        self.timeout = timeout
        self.retries = retries
        self._send_url = send_url
        self.configure(section)
        self.account = None
        self.tokens = None
        self.send_url = None
        self.enabled = False
        self.reason = "not started"

    def configure(self, section):
        topic = section.topic
        if topic is not None and topic_problem(topic):
            raise ValueError(f"FCM.TOPIC {topic!r}: {topic_problem(topic)}")
        self.cred_path = section.cred_path
        self.topic = topic
        self.device_tokens = list(section.tokens)

    def load(self):
        """Read the credential file; returns the targets (empty when disabled)."""
        self.enabled = False
        self.account = self.tokens = None
        if self.topic is None and not self.device_tokens:
            self.reason = "no target: FCM.TOPIC is null and FCM.TOKENS is empty"
            self.log.warn("FCM push disabled: {reason}", reason=self.reason)
            return []
        try:
            account = ServiceAccount.load(self.cred_path)
        except CredentialProblem as e:
            self.reason = str(e)
            self.log.warn("FCM push DISABLED: {reason} (FCM.CRED_PATH). Put a Firebase service-account "
                          "JSON there to enable push notifications.", reason=self.reason)
            return []
        self.account = account
        self.tokens = AccessTokens(account, self.http, self.clock, self.timeout)
        self.send_url = (self._send_url or FCM_SEND_URL).format(project=urllib.parse.quote(account.project_id))
        self.enabled = True
        self.reason = None
        targets = []
        if self.topic is not None:
            targets.append(FcmTarget(self, "topic", self.topic))
        targets.extend(FcmTarget(self, "token", t) for t in self.device_tokens)
        self.log.info("FCM push enabled for project {project} ({targets})", project=account.project_id,
                      targets=", ".join(t.label for t in targets))
        return targets

    def health(self):
        out = {"enabled": self.enabled, "reason": self.reason,
               "topic": self.topic, "tokens": len(self.device_tokens)}
        if self.account is not None:
            out["project"] = self.account.project_id
        if self.tokens is not None:
            out["token_refreshes"] = self.tokens.refreshes
            out["token_failures"] = self.tokens.failures
        return out
