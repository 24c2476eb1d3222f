"""Webhooks (``NOTIFY.WEBHOOKS``): a JSON POST per notification.

Each item is a URL or a mapping::

    NOTIFY:
      WEBHOOKS:
        - https://alerts.example/tsrmon              # format json, no signature
        - url: https://hooks.slack.com/services/T/B/X
          format: slack
        - url: https://ntfy.sh/plant-alerts
          format: ntfy
          priority: 5
        - url: https://receiver.example/hook
          name: ops                # label in logs and history (default: host)
          secret: s3cret           # adds X-Tsrmon-Signature: sha256=<hex HMAC of the body>
          timeout: 5               # seconds per attempt (default 10)
          retries: 2               # retries after the first attempt (default 3)
          headers: {Authorization: Bearer abc}

A webhook URL often is a secret itself (Slack's is), so logs and the
history name a hook by ``name`` or its host only.
"""

import hashlib
import hmac
import json
import urllib.parse

from tsrmon.notify.delivery import DeliveryError, post

FORMATS = ("json", "slack", "teams", "ntfy")
FIELDS = ("url", "name", "format", "secret", "timeout", "retries", "headers", "topic", "priority")
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3
SIGNATURE_HEADER = "X-Tsrmon-Signature"
_RETRYABLE_STATUS = (408, 425, 429, 500, 502, 503, 504)


def signature(secret, body):
    """The value of the signature header: ``sha256=<hex HMAC-SHA256 of the raw body>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class Webhook:
    """One configured receiver."""

    channel = "webhook"

    def __init__(self, url, name=None, format="json", secret=None, timeout=DEFAULT_TIMEOUT,
                 retries=DEFAULT_RETRIES, headers=None, topic=None, priority=4):
        self.url = url
        parts = urllib.parse.urlsplit(url)
        self.name = name or parts.netloc.rsplit("@", 1)[-1]
        self.label = self.name
        self.format = format
        self.secret = secret
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.headers = dict(headers or {})
        self.priority = priority
        self.post_url = url
        self.topic = topic
        if format == "ntfy" and topic is None:
            # ntfy's JSON publishing goes to the server root with the topic in
            # the body; users know the topic URL, so split it.
            path = parts.path.rstrip("/")
            base, _, last = path.rpartition("/")
            self.topic = last
            self.post_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, base + "/", "", ""))
        # Set by the notifier: a treq HTTPClient and the clock of the deadline.
        self.http = None
        self.clock = None

    def render(self, note):
        """(body bytes, headers) for one notification."""
        if self.format == "slack":
            doc = {"text": f"*{_slack(note.title)}*\n{_slack(note.body)}"}
        elif self.format == "teams":
            doc = _teams_card(note)
        elif self.format == "ntfy":
            doc = {"topic": self.topic, "title": note.title, "message": note.body,
                   "priority": self.priority, "tags": ["warning"]}
        else:
            doc = {"id": note.id, "kind": note.kind, "machine": note.machine, "title": note.title,
                   "body": note.body, "suppressed": note.suppressed, "t": note.t, "data": note.data}
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"content-type": "application/json; charset=utf-8",
                   "x-tsrmon-event": note.kind,
                   # The same id on every retry, so a receiver can drop duplicates.
                   "x-tsrmon-delivery": note.id}
        if self.secret is not None:
            headers[SIGNATURE_HEADER.lower()] = signature(self.secret, body)
        headers.update(self.headers)
        return body, headers

    def attempt(self, note):
        body, headers = self.render(note)
        d = post(self.http, self.clock, self.post_url, body, headers, self.timeout)
        d.addCallback(self._check)
        return d

    def _check(self, result):
        if 200 <= result.code < 300:
            return result
        retry_after = None
        value = result.header("retry-after")
        if value and value.strip().isdigit():
            retry_after = float(value.strip())
        text = f"HTTP {result.code}"
        if 300 <= result.code < 400:
            text += " redirect (not followed; configure the final URL)"
        elif result.body:
            text += f": {result.text(200)}"
        raise DeliveryError(text, retryable=result.code in _RETRYABLE_STATUS, retry_after=retry_after)

    def health(self):
        return {"name": self.name, "format": self.format, "signed": self.secret is not None,
                "timeout": self.timeout, "retries": self.retries}


def _slack(text):
    # Slack's mrkdwn needs these three escaped, nothing else.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _teams_card(note):
    """A Teams message with an Adaptive Card, as Teams Workflows webhooks accept."""
    facts = [{"title": "machine", "value": note.machine}]
    for k, v in note.data.items():
        if k not in ("machine", "t"):
            facts.append({"title": str(k), "value": v if isinstance(v, str) else json.dumps(v)})
    return {
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": note.title, "weight": "Bolder", "size": "Medium",
                     "wrap": True},
                    {"type": "TextBlock", "text": note.body, "wrap": True},
                    {"type": "FactSet", "facts": facts},
                ],
            },
        }],
    }


def parse_webhooks(items):
    """``NOTIFY.WEBHOOKS`` (as the config loader left it) -> [Webhook].

    Raises ValueError naming the item and the field, so the config loader
    (or the notifier at start) can refuse a bad entry in one line.
    """
    hooks = []
    names = set()
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"url": item}
        where = f"item {i}"
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise ValueError(f"{where}: expected a URL or a mapping with 'url'")
        unknown = sorted(set(item) - set(FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(map(str, unknown))} "
                             f"(known: {', '.join(FIELDS)})")
        url = item["url"]
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{where}: {_redact(url)!r} is not an http(s) URL")
        try:
            url.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: the URL must be ASCII (percent-encode it)") from None
        fmt = item.get("format", "json")
        if fmt not in FORMATS:
            raise ValueError(f"{where}: format {fmt!r} is not one of {', '.join(FORMATS)}")
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"{where}: name must be a non-empty string")
        secret = item.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ValueError(f"{where}: secret must be a non-empty string")
        timeout = item.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= 300:
            raise ValueError(f"{where}: timeout must be a number of seconds from 0.1 to 300")
        retries = item.get("retries", DEFAULT_RETRIES)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise ValueError(f"{where}: retries must be an integer from 0 to 10")
        headers = item.get("headers") or {}
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and _latin1(k + v) and "\n" not in k + v
                for k, v in headers.items()):
            raise ValueError(f"{where}: headers must map header names to single-line latin-1 strings")
        topic = item.get("topic")
        priority = item.get("priority", 4)
        if fmt != "ntfy" and ("topic" in item or "priority" in item):
            raise ValueError(f"{where}: topic and priority are for format ntfy only")
        if topic is not None and (not isinstance(topic, str) or not topic):
            raise ValueError(f"{where}: topic must be a non-empty string")
        if isinstance(priority, bool) or priority not in (1, 2, 3, 4, 5):
            raise ValueError(f"{where}: priority must be 1 to 5")
        if fmt == "ntfy" and topic is None and not parts.path.strip("/"):
            raise ValueError(f"{where}: an ntfy URL needs the topic as its last path segment "
                             "(https://ntfy.sh/<topic>) or a topic field")
        hook = Webhook(url, name=name, format=fmt, secret=secret, timeout=timeout, retries=retries,
                       headers=headers, topic=topic, priority=priority)
        if hook.name in names:
            hook.name = hook.label = f"{hook.name}#{i}"
        names.add(hook.name)
        hooks.append(hook)
    return hooks


def _latin1(text):
    try:
        text.encode("latin-1")
        return True
    except UnicodeEncodeError:
        return False


def _redact(url):
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…" if parts.netloc else url[:20]
