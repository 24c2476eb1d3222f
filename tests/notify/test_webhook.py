"""Webhooks against a local HTTP server: formats, signature, dead and slow receivers."""

import hashlib
import hmac
import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import globalLogPublisher

from tests.notify.conftest import T0
from tests.notify.fakes import dead_url, make_config, settle, until
from tsrmon.config import ConfigError
from tsrmon.notify.service import NotifierService
from tsrmon.notify.webhook import parse_webhooks


def start(tmp_path, clock, hooks, **notify):
    config = make_config(tmp_path, notify=dict({"WEBHOOKS": hooks}, **notify))
    svc = NotifierService(config, clock, reactor)
    svc.startService()
    return svc


@pytest_twisted.inlineCallbacks
def test_formats_and_signature(tmp_path, clock, receiver):
    base = receiver.base
    svc = start(tmp_path, clock, [
        {"url": base + "/json", "secret": "s3cret", "name": "ops"},
        {"url": base + "/services/T0/B0/XYZ", "format": "slack"},
        {"url": base + "/workflows/teams", "format": "teams", "name": "teams"},
        {"url": base + "/plant-alerts", "format": "ntfy", "priority": 5, "headers": {"Authorization": "Bearer tk"}},
    ])
    svc.fault("ShotBlast", 7.0, 5.0, T0)
    yield settle(svc)
    got = {r.path: r for r in receiver.log}
    assert set(got) == {"/json", "/services/T0/B0/XYZ", "/workflows/teams", "/"}
    ids = {r.headers["x-tsrmon-delivery"] for r in receiver.log}
    assert len(ids) == 1  # one notification, the same id for every receiver

    j = got["/json"]
    assert j.headers["x-tsrmon-signature"] == "sha256=" + hmac.new(b"s3cret", j.body, hashlib.sha256).hexdigest()
    assert j.headers["x-tsrmon-event"] == "fault"
    assert j.headers["content-type"] == "application/json; charset=utf-8"
    assert j.json() == {
        "id": ids.pop(), "kind": "fault", "machine": "ShotBlast", "title": "ShotBlast 이상치 감지",
        "body": "상세 정보 : 7.0/5.0", "suppressed": 0, "t": T0,
        "data": {"machine": "ShotBlast", "score": 7.0, "threshold": 5.0,
                 "time": "2023-11-15T07:13:20.000+09:00", "t": T0, "kind": "fault", "suppressed": 0},
    }
    assert "x-tsrmon-signature" not in got["/services/T0/B0/XYZ"].headers
    assert got["/services/T0/B0/XYZ"].json() == {"text": "*ShotBlast 이상치 감지*\n상세 정보 : 7.0/5.0"}

    card = got["/workflows/teams"].json()
    assert card["type"] == "message"
    [att] = card["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert att["content"]["type"] == "AdaptiveCard"
    texts = [b.get("text") for b in att["content"]["body"]]
    assert texts[:2] == ["ShotBlast 이상치 감지", "상세 정보 : 7.0/5.0"]
    facts = {f["title"]: f["value"] for f in att["content"]["body"][2]["facts"]}
    assert facts["machine"] == "ShotBlast" and facts["score"] == "7.0" and facts["threshold"] == "5.0"

    ntfy = got["/"]
    assert ntfy.headers["authorization"] == "Bearer tk"
    assert ntfy.json() == {"topic": "plant-alerts", "title": "ShotBlast 이상치 감지",
                           "message": "상세 정보 : 7.0/5.0", "priority": 5, "tags": ["warning"]}

    rows = yield svc.history(0, T0 + 1)
    # Hooks are named by their host (a Slack URL is a secret) unless named.
    assert sorted(r["target"] for r in rows) == sorted(["ops", "teams", "127.0.0.1:%d" % receiver_port(receiver),
                                                        "127.0.0.1:%d#3" % receiver_port(receiver)])
    assert {r["result"] for r in rows} == {"sent"}
    assert set(svc.health()["channels"]) == {"fcm", "webhook:ops", "webhook:teams",
                                             f"webhook:127.0.0.1:{receiver_port(receiver)}",
                                             f"webhook:127.0.0.1:{receiver_port(receiver)}#3"}
    yield svc.stopService()


def receiver_port(receiver):
    return int(receiver.base.rsplit(":", 1)[1])


@pytest_twisted.inlineCallbacks
def test_dead_endpoint_is_retried_then_recorded_failed(tmp_path, clock, receiver):
    svc = start(tmp_path, clock, [{"url": dead_url(), "retries": 2, "name": "dead"},
                                  {"url": receiver.base + "/ok", "name": "ok"}])
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
        # The live receiver does not wait for the dead one.
        yield until(lambda: len(receiver.log) == 1)
        for delay in (2.0, 4.0):
            yield until(lambda: any(d.sleeping for d in svc.deliveries()))
            clock.advance(delay)
        yield settle(svc)
    finally:
        globalLogPublisher.removeObserver(events.append)
    rows = {r["target"]: r for r in (yield svc.history(0, clock.seconds()))}
    assert (rows["ok"]["result"], rows["ok"]["attempts"]) == ("sent", 1)
    assert (rows["dead"]["result"], rows["dead"]["attempts"], rows["dead"]["error"]) == \
        ("failed", 3, "connection refused")
    logged = [e for e in events if "failed after" in e.get("log_format", "")]
    assert len(logged) == 1 and logged[0]["target"] == "dead"
    counters = svc.counters()
    assert (counters["webhook_sent"], counters["webhook_failed"], counters["webhook_attempts"]) == (1, 1, 4)
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_slow_endpoint_times_out_per_attempt(tmp_path, clock, receiver):
    receiver.routes["/slow"] = "hang"
    svc = start(tmp_path, clock, [{"url": receiver.base + "/slow", "timeout": 3, "retries": 1, "name": "slow"},
                                  {"url": receiver.base + "/ok", "name": "ok"}])
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    yield until(lambda: len(receiver.paths("/ok")) == 1 and len(receiver.paths("/slow")) == 1)
    yield until(lambda: len(svc.deliveries()) == 1)  # only the slow one is left
    clock.advance(3)
    yield until(lambda: any(d.sleeping for d in svc.deliveries()))
    clock.advance(2)
    yield until(lambda: len(receiver.paths("/slow")) == 2)
    clock.advance(3)
    yield settle(svc)
    rows = {r["target"]: r for r in (yield svc.history(0, clock.seconds()))}
    assert (rows["slow"]["result"], rows["slow"]["attempts"], rows["slow"]["error"]) == ("failed", 2, "timed out")
    assert rows["ok"]["result"] == "sent"
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_status_codes(tmp_path, clock, receiver):
    receiver.reply("/flaky", (500, b"oops", {}))
    receiver.reply("/bad", (400, b'{"error": "no such channel"}', {}))
    receiver.reply("/moved", (301, b"", {"Location": "https://elsewhere/"}))
    receiver.reply("/busy", (429, b"", {"Retry-After": "30"}))
    names = ("flaky", "bad", "moved", "busy")
    svc = start(tmp_path, clock, [{"url": f"{receiver.base}/{n}", "name": n} for n in names])
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    yield until(lambda: len(receiver.log) == 4)
    yield until(lambda: len(svc.deliveries()) == 2 and all(d.sleeping for d in svc.deliveries()))
    waits = sorted(round(c.getTime() - clock.seconds()) for c in clock.getDelayedCalls())
    assert waits == [2, 30]  # backoff, and the receiver's Retry-After
    clock.advance(2)
    yield until(lambda: len(receiver.paths("/flaky")) == 2)
    yield until(lambda: len(svc.deliveries()) == 1)  # /flaky is answered before the clock moves on
    clock.advance(28)
    yield settle(svc)
    rows = {r["target"]: r for r in (yield svc.history(0, clock.seconds()))}
    assert (rows["flaky"]["result"], rows["flaky"]["attempts"]) == ("sent", 2)
    assert (rows["busy"]["result"], rows["busy"]["attempts"]) == ("sent", 2)
    assert (rows["bad"]["result"], rows["bad"]["attempts"]) == ("failed", 1)
    assert rows["bad"]["error"] == 'HTTP 400: {"error": "no such channel"}'
    assert (rows["moved"]["result"], rows["moved"]["attempts"]) == ("failed", 1)
    assert "redirect" in rows["moved"]["error"]
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_huge_response_body_is_capped(tmp_path, clock, receiver):
    receiver.reply("/big", (503, b"x" * (1024 * 1024), {}))
    svc = start(tmp_path, clock, [{"url": receiver.base + "/big", "retries": 0}])
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    yield settle(svc)
    [row] = yield svc.history(0, clock.seconds())
    assert row["result"] == "failed" and row["error"].startswith("HTTP 503: xxx") and len(row["error"]) < 300
    yield svc.stopService()


@pytest.mark.parametrize("hook, problem", [
    ({"url": "ftp://x/y"}, "not an http(s) URL"),
    ({"url": "http://x/y", "color": "red"}, "unknown field(s) color"),
    ({"url": "http://x/y", "format": "discord"}, "format 'discord'"),
    ({"url": "http://x/y", "timeout": 0}, "timeout must be"),
    ({"url": "http://x/y", "timeout": "5"}, "timeout must be"),
    ({"url": "http://x/y", "retries": -1}, "retries must be"),
    ({"url": "http://x/y", "retries": True}, "retries must be"),
    ({"url": "http://x/y", "secret": ""}, "secret must be"),
    ({"url": "http://x/y", "headers": {"X-A": "é\n"}}, "headers must map"),
    ({"url": "http://x/y", "priority": 5}, "for format ntfy only"),
    ({"url": "https://ntfy.sh/", "format": "ntfy"}, "needs the topic"),
    ({"url": "https://ntfy.sh/t", "format": "ntfy", "priority": 9}, "priority must be"),
    ("https://ex.ample/경로", "must be ASCII"),
])
def test_bad_webhook_config_is_refused_in_one_line(tmp_path, clock, hook, problem):
    with pytest.raises(ConfigError) as e:
        # The config loader checks the URL; the notifier checks the rest.
        NotifierService(make_config(tmp_path, notify={"WEBHOOKS": ["http://fine.example/", hook]}),
                        clock, reactor)
    assert "NOTIFY.WEBHOOKS" in str(e.value) and "item 1" in str(e.value) and problem in str(e.value)
    assert "\n" not in str(e.value)


def test_parse_defaults_and_ntfy_split():
    plain, ntfy, explicit = parse_webhooks([
        "https://user:pw@alerts.example:8443/hook?key=secret",
        {"url": "https://ntfy.example/base/plant", "format": "ntfy"},
        {"url": "https://ntfy.example/", "format": "ntfy", "topic": "t1"},
    ])
    assert (plain.name, plain.format, plain.timeout, plain.retries, plain.secret) == \
        ("alerts.example:8443", "json", 10.0, 3, None)
    assert (ntfy.post_url, ntfy.topic, ntfy.priority) == ("https://ntfy.example/base/", "plant", 4)
    assert (explicit.post_url, explicit.topic) == ("https://ntfy.example/", "t1")


def test_slack_text_is_escaped():
    from tsrmon.notify.delivery import Notification
    [hook] = parse_webhooks([{"url": "https://hooks.example/x", "format": "slack"}])
    body, headers = hook.render(Notification("M", "rule", "a<b & c>d", "x", {}, 0.0))
    assert json.loads(body) == {"text": "*a&lt;b &amp; c&gt;d*\nx"}


@pytest_twisted.inlineCallbacks
def test_infinite_score_still_makes_valid_json(tmp_path, clock, receiver):
    svc = start(tmp_path, clock, [receiver.base + "/hook"])
    svc.fault("ShotBlast", float("inf"), 5.0, T0)
    yield settle(svc)
    [got] = receiver.log
    doc = json.loads(got.body, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert doc["data"]["score"] == "inf" and doc["body"] == "상세 정보 : inf/5.0"
    yield svc.stopService()
