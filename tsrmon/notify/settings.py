"""The notifier's sections: FCM (push through Firebase) and NOTIFY (webhooks
and the global cap).  Checked once at load (:mod:`tsrmon.config`), so a bad
template, topic or webhook refuses the file before anything is created;
the notifier reads ``config.fcm.title``, ``config.notify.webhooks`` etc."""

import re

import attrs

from tsrmon.config.checks import ConfigError, any_list, integer, number, optional_string, string, string_list
from tsrmon.config.section import Section, setting
from tsrmon.notify.webhook import parse_webhooks

# Placeholders the FCM.TITLE / FCM.BODY templates may use.
TEMPLATE_FIELDS = ("machine", "score", "threshold", "time", "kind", "suppressed")
_SAMPLE = {"machine": "M", "score": 1.5, "threshold": 1.0, "time": "2024-01-01 00:00:00",
           "kind": "fault", "suppressed": 0}

_TOPIC = re.compile(r"^[a-zA-Z0-9\-_.~%]{1,900}$")


def topic_problem(topic):
    """Why ``topic`` cannot be an FCM topic, or None."""
    if not _TOPIC.match(topic) or topic.startswith("/"):
        return "an FCM topic is 1-900 of the characters a-z A-Z 0-9 - _ . ~ %"
    return None


def check_template(source, key, text):
    """Refuse a title/body template that would not format a notification."""
    try:
        text.format(**_SAMPLE)
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise ConfigError(source, key, f"bad template {text!r} ({e.__class__.__name__}: {e}); "
                          f"placeholders: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}") from None


def webhooks(v):
    """NOTIFY.WEBHOOKS: URLs or mappings; every per-hook field (secret,
    timeout, retries, format...) is checked here too, so a bad hook stops
    start-up like any other bad key."""
    any_list(v)
    out = []
    for i, hook in enumerate(v):
        if isinstance(hook, str):
            hook = {"url": hook}
        if not isinstance(hook, dict) or not isinstance(hook.get("url"), str):
            raise ValueError(f"item {i}: expected a URL or a mapping with 'url'")
        if not hook["url"].startswith(("http://", "https://")):
            raise ValueError(f"item {i}: {hook['url']!r} is not an http(s) URL")
        out.append(dict(hook))
    parse_webhooks(out)
    return out


@attrs.frozen
class FcmSettings(Section):
    SECTION = "FCM"

    cred_path: str = setting("CRED_PATH", "resources/fcm-credentials.json", string, path=True)
    timeout: float = setting("TIMEOUT", 120, number(0))
    topic: str | None = setting("TOPIC", "anomaly", optional_string)
    tokens: list = setting("TOKENS", [], string_list)
    title: str = setting("TITLE", "{machine} 이상치 감지", string)
    body: str = setting("BODY", "상세 정보 : {score}/{threshold}", string)

    def finish(self, source):
        check_template(source, "FCM.TITLE", self.title)
        check_template(source, "FCM.BODY", self.body)
        if self.topic is not None and topic_problem(self.topic):
            raise ConfigError(source, "FCM.TOPIC", f"{self.topic!r}: {topic_problem(self.topic)}")
        return self


@attrs.frozen
class NotifySettings(Section):
    SECTION = "NOTIFY"

    webhooks: list = setting("WEBHOOKS", [], webhooks)
    max_per_hour: int = setting("MAX_PER_HOUR", 60, integer(0))
