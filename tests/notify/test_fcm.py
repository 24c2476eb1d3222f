"""The FCM path end to end against a local fake OAuth endpoint and FCM v1."""

import json

import pytest_twisted
from firebase_admin import messaging
from twisted.internet import reactor, task
from twisted.logger import globalLogPublisher

from tests.notify.conftest import T0
from tests.notify.fakes import get, make_config, records_rows, settle, until
from tsrmon.hub.machines import MachineHub
from tsrmon.notify.service import NotifierService


def start(tmp_path, clock, google, fcm=None, notify=None, **kw):
    fcm = dict({"CRED_PATH": google.cred_path}, **(fcm or {}))
    config = make_config(tmp_path, fcm=fcm, notify=notify)
    svc = NotifierService(config, clock, reactor, fcm_send_url=google.send_url, **kw)
    svc.startService()
    return svc


def expected_message(target_key, target, machine, score, threshold, t_iso, t, suppressed=0, body_suffix=""):
    return {"message": {
        target_key: target,
        "notification": {"title": f"{machine} 이상치 감지",
                         "body": f"상세 정보 : {score}/{threshold}{body_suffix}"},
        "data": {"machine": machine, "score": str(score), "threshold": str(threshold), "time": t_iso,
                 "t": str(t), "kind": "fault", "suppressed": str(suppressed)},
    }}


@pytest_twisted.inlineCallbacks
def test_push_end_to_end_exact_body_and_history(tmp_path, clock, google):
    svc = start(tmp_path, clock, google, fcm={"TOKENS": ["device-token-0123456789"]})
    assert svc.health()["channels"]["fcm"]["enabled"] is True
    svc.fault("ShotBlast", 7.0, 5.0, T0)
    yield settle(svc)

    # One token grant, signed by the account's key for the FCM scope.
    assert len(google.grants) == 1
    grant = google.grants[0]
    assert grant["iss"] == google.email
    assert grant["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert grant["aud"] == google.token_uri

    sends = google.sends()
    assert [s.path for s in sends] == ["/v1/projects/tsrmon-test/messages:send"] * 2
    for s in sends:
        assert s.method == "POST"
        assert s.headers["authorization"] == "Bearer tok-1"
        assert s.headers["content-type"].startswith("application/json")
    bodies = sorted((s.json() for s in sends), key=lambda b: "topic" in b["message"])
    iso = "2023-11-15T07:13:20.000+09:00"
    assert bodies[1] == expected_message("topic", "anomaly", "ShotBlast", 7.0, 5.0, iso, T0)
    assert bodies[0] == expected_message("token", "device-token-0123456789", "ShotBlast", 7.0, 5.0, iso, T0)

    # The same message as firebase-admin itself would encode it.
    sdk = messaging._MessagingService.encode_message(messaging.Message(
        topic="anomaly",
        notification=messaging.Notification(title="ShotBlast 이상치 감지", body="상세 정보 : 7.0/5.0"),
        data=bodies[1]["message"]["data"]))
    assert sdk == bodies[1]["message"]

    rows = yield svc.history(T0 - 1, T0 + 1)
    assert sorted(r["target"] for r in rows) == ["token:device-t…", "topic:anomaly"]
    for r in rows:
        assert (r["machine"], r["channel"], r["result"], r["attempts"], r["suppressed"], r["error"]) == \
            ("ShotBlast", "fcm", "sent", 1, 0, None)
        assert r["time"] == iso
    assert (yield svc.history(T0 + 1, T0 + 2)) == []
    assert svc.counters()["fcm_sent"] == 2
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_throttle_per_machine_from_last_send_with_suppressed_count(tmp_path, clock, google):
    svc = start(tmp_path, clock, google, fcm={"TIMEOUT": 120})
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    yield settle(svc)
    clock.advance(10)
    svc.fault("ShotBlast", 8.0, 5.0, clock.seconds())   # held back
    clock.advance(50)
    svc.fault("ShotBlast", 9.0, 5.0, clock.seconds())   # held back
    svc.fault("Dispenser", 6.5, 5.0, clock.seconds())   # another machine is not hidden
    yield settle(svc)
    assert [s.json()["message"]["data"]["machine"] for s in google.sends()] == ["ShotBlast", "Dispenser"]

    clock.advance(59)  # 119 s after ShotBlast's send: still held
    svc.fault("ShotBlast", 9.5, 5.0, clock.seconds())
    clock.advance(1)   # 120 s: goes, and says three were held back
    svc.fault("ShotBlast", 10.0, 5.0, clock.seconds())
    yield settle(svc)
    last = google.sends()[-1].json()["message"]
    assert last["notification"]["body"] == "상세 정보 : 10.0/5.0 (외 3건)"
    assert last["data"]["suppressed"] == "3"

    # A quiet night builds no debt: after 10 h, a burst of faults sends once.
    clock.advance(10 * 3600)
    for _ in range(5):
        svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
        clock.advance(1)
    yield settle(svc)
    assert len(google.sends()) == 4
    assert svc.counters()["throttled"] == 3 + 4
    rows = yield svc.history(0, clock.seconds())
    assert [r["suppressed"] for r in rows if r["machine"] == "ShotBlast"] == [0, 3, 0]
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_global_cap_over_a_sliding_hour(tmp_path, clock, google):
    svc = start(tmp_path, clock, google, fcm={"TIMEOUT": 0}, notify={"MAX_PER_HOUR": 3})
    for i in range(5):
        svc.fault(f"M{i}", 7.0, 5.0, clock.seconds())
        yield settle(svc)  # (advancing the clock mid-send would fire its deadline)
        clock.advance(60)
    assert [s.json()["message"]["data"]["machine"] for s in google.sends()] == ["M0", "M1", "M2"]
    assert svc.counters()["capped"] == 2
    assert svc.health()["throttle"]["sent_last_hour"] == 3

    # M0's send leaves the window one hour after it went out; M3 reports its held one.
    clock.advance(3600 - 5 * 60 + 1)
    svc.fault("M3", 7.0, 5.0, clock.seconds())
    svc.fault("M4", 7.0, 5.0, clock.seconds())  # still three in the last hour
    yield settle(svc)
    sends = google.sends()
    assert len(sends) == 4
    assert sends[-1].json()["message"]["data"]["machine"] == "M3"
    assert sends[-1].json()["message"]["data"]["suppressed"] == "1"
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_retries_with_backoff_then_success(tmp_path, clock, google):
    svc = start(tmp_path, clock, google)
    unavailable = google.fcm_error(503, "UNAVAILABLE", "try later")
    google.receiver.reply("/v1/", unavailable, unavailable)
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    for expected_delay in (2.0, 4.0):
        yield until(lambda: any(d.sleeping for d in svc.deliveries()))
        [call] = clock.getDelayedCalls()
        assert call.getTime() - clock.seconds() == expected_delay
        clock.advance(expected_delay)
    yield settle(svc)
    assert len(google.sends()) == 3
    assert google.issued == 1  # the token is reused across attempts
    [row] = yield svc.history(0, clock.seconds())
    assert (row["result"], row["attempts"], row["error"]) == ("sent", 3, None)
    assert svc.counters()["fcm_attempts"] == 3
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_gives_up_after_retries_and_honours_retry_after(tmp_path, clock, google):
    svc = start(tmp_path, clock, google, fcm_retries=1)
    google.receiver.reply("/v1/", *[google.fcm_error(429, "RESOURCE_EXHAUSTED", "quota",
                                                     error_code="QUOTA_EXCEEDED",
                                                     headers={"Retry-After": "30"})] * 2)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
        yield until(lambda: any(d.sleeping for d in svc.deliveries()))
        [call] = clock.getDelayedCalls()
        assert call.getTime() - clock.seconds() == 30.0
        clock.advance(30)
        yield settle(svc)
    finally:
        globalLogPublisher.removeObserver(events.append)
    [row] = yield svc.history(0, clock.seconds())
    assert (row["result"], row["attempts"]) == ("failed", 2)
    assert row["error"] == "HTTP 429 QUOTA_EXCEEDED: quota"
    failures = [e for e in events if "failed after" in e.get("log_format", "")]
    assert len(failures) == 1  # logged once, with context
    assert failures[0]["machine"] == "ShotBlast" and failures[0]["target"] == "topic:anomaly"
    assert svc.health()["ok"] is True
    assert svc.health()["channels"]["fcm"]["last_error"] == row["error"]
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_client_errors_are_not_retried(tmp_path, clock, google):
    svc = start(tmp_path, clock, google, fcm={"TOPIC": None, "TOKENS": ["stale-token-abcdef"]})
    google.receiver.reply("/v1/", google.fcm_error(404, "NOT_FOUND", "Requested entity was not found.",
                                                   error_code="UNREGISTERED"))
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    yield settle(svc)
    [row] = yield svc.history(0, clock.seconds())
    assert (row["result"], row["attempts"], row["target"]) == ("failed", 1, "token:stale-to…")
    assert "UNREGISTERED" in row["error"] and "FCM.TOKENS" in row["error"]
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_expired_token_is_refreshed(tmp_path, clock, google):
    svc = start(tmp_path, clock, google)
    google.receiver.reply("/v1/", google.fcm_error(401, "UNAUTHENTICATED", "token expired"))
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    yield until(lambda: any(d.sleeping for d in svc.deliveries()))
    clock.advance(2)
    yield settle(svc)
    assert [s.headers["authorization"] for s in google.sends()] == ["Bearer tok-1", "Bearer tok-2"]
    # A token is reused until shortly before it expires, then fetched again.
    clock.advance(3000)
    svc.fault("Dispenser", 7.0, 5.0, clock.seconds())
    yield settle(svc)
    clock.advance(400)
    svc.fault("AROPump", 7.0, 5.0, clock.seconds())
    yield settle(svc)
    assert [s.headers["authorization"] for s in google.sends()][2:] == ["Bearer tok-2", "Bearer tok-3"]
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_refused_credential_is_not_retried(tmp_path, clock, google):
    google.email = "someone-else@example.com"  # the fake now refuses our grant
    svc = start(tmp_path, clock, google)
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    yield settle(svc)
    [row] = yield svc.history(0, clock.seconds())
    assert (row["result"], row["attempts"]) == ("failed", 1)
    assert row["error"] == "OAuth token endpoint: HTTP 400 invalid_grant"
    assert google.sends() == []
    yield svc.stopService()


class FakeDAQ:
    peer_host = "127.0.0.1"

    def takeover(self, reason):
        pass

    def storage_congested(self, congested):
        pass


@pytest_twisted.inlineCallbacks
def test_ingest_goes_on_while_fcm_hangs(tmp_path, clock, google, receiver):
    hook_rec = receiver  # the same server also takes the webhook, which answers at once
    svc = start(tmp_path, clock, google, fcm_retries=1,
                notify={"WEBHOOKS": [{"url": hook_rec.base + "/hook", "retries": 0}]})
    google.receiver.routes["/v1/"] = "hang"
    hub = MachineHub(make_config(tmp_path), clock, notifier=svc)
    machine = hub.claim("ShotBlast", FakeDAQ())
    hub.fault(machine, 7.0, 5.0)
    send = yield get(google.receiver.requests)
    while not send.path.startswith("/v1/"):
        send = yield get(google.receiver.requests)
    # FCM hangs; frames keep flowing and the webhook is delivered meanwhile.
    for _ in range(1000):
        hub.data(machine, [("vib1", "VIB", [0.1] * 30)])
    yield until(lambda: len(hook_rec.paths("/hook")) == 1)
    other = hub.claim("Dispenser", type("D2", (FakeDAQ,), {"peer_host": "127.0.0.2"})())
    hub.fault(other, 8.0, 5.0)
    yield until(lambda: len(hook_rec.paths("/hook")) == 2)
    assert machine.frames == 1001 and machine.samples == 30000
    yield until(lambda: len(svc.deliveries()) == 2)  # the webhooks are done; the two FCM sends hang
    # The deadline (FCM timeout 10 s on the injected clock) ends each attempt.
    clock.advance(10)
    yield until(lambda: all(d.sleeping for d in svc.deliveries()))
    clock.advance(2)
    yield until(lambda: len(google.sends()) == 4)
    clock.advance(10)
    yield settle(svc)
    rows = yield svc.history(0, clock.seconds())
    fcm = [r for r in rows if r["channel"] == "fcm"]
    assert [(r["result"], r["attempts"], r["error"]) for r in fcm] == [("failed", 2, "timed out")] * 2
    assert sorted(r["machine"] for r in rows if r["channel"] == "webhook" and r["result"] == "sent") == \
        ["Dispenser", "ShotBlast"]
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_hanging_token_endpoint_does_not_block(tmp_path, clock, google):
    google.receiver.routes["/token"] = "hang"
    svc = start(tmp_path, clock, google, fcm_retries=0)
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    yield get(google.receiver.requests)
    ticks = []
    yield task.deferLater(reactor, 0.01, ticks.append, 1)  # the reactor runs on
    assert ticks == [1]
    clock.advance(10)
    yield settle(svc)
    [row] = yield svc.history(0, clock.seconds())
    assert (row["result"], row["error"]) == ("failed", "timed out")
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_stop_waits_for_sends_then_gives_up(tmp_path, clock, google):
    google.receiver.routes["/v1/"] = "hang"
    svc = start(tmp_path, clock, google, stop_timeout=5.0)
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    yield until(lambda: len(google.sends()) == 1)
    stopped = svc.stopService()
    assert not stopped.called
    svc.fault("Dispenser", 7.0, 5.0, clock.seconds())  # refused: stopping
    assert svc.counters()["not_running"] == 1
    clock.advance(5)
    yield stopped
    [row] = records_rows(tmp_path)
    assert (row["machine"], row["result"], row["attempts"]) == ("ShotBlast", "cancelled", 1)


@pytest_twisted.inlineCallbacks
def test_stop_lets_a_quick_send_finish(tmp_path, clock, google):
    svc = start(tmp_path, clock, google)
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    yield svc.stopService()  # no clock advance needed: the fake answers
    [row] = records_rows(tmp_path)
    assert row["result"] == "sent"


def _capture():
    events = []
    globalLogPublisher.addObserver(events.append)
    return events


@pytest_twisted.inlineCallbacks
def test_missing_credential_file_is_a_warning_and_disabled(tmp_path, clock):
    events = _capture()
    try:
        config = make_config(tmp_path)  # CRED_PATH points to a file that does not exist
        svc = NotifierService(config, clock, reactor)
        svc.startService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [e for e in events if "FCM push DISABLED" in e.get("log_format", "")]
    assert len(warnings) == 1 and "does not exist" in warnings[0]["reason"]
    health = svc.health()
    assert health["ok"] is True and health["enabled"] is False
    assert health["channels"]["fcm"]["enabled"] is False
    assert "missing.json does not exist" in health["channels"]["fcm"]["reason"]
    svc.fault("ShotBlast", 7.0, 5.0, clock.seconds())
    assert svc.counters()["no_channel"] == 1
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_invalid_credential_files(tmp_path, clock):
    cases = {
        "not-json.json": ("{nope", "is not JSON"),
        "wrong-type.json": (json.dumps({"type": "authorized_user"}), '"type" field set to "service_account"'),
        "bad-key.json": (json.dumps({"type": "service_account", "client_email": "a@b", "token_uri": "x",
                                     "private_key": "garbage", "project_id": "p"}),
                         "Failed to initialize"),
    }
    for name, (text, reason) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        svc = NotifierService(make_config(tmp_path, fcm={"CRED_PATH": str(path)}), clock, reactor)
        svc.startService()
        fcm = svc.health()["channels"]["fcm"]
        assert fcm["enabled"] is False and reason in fcm["reason"], (name, fcm["reason"])
        assert svc.health()["ok"] is True
        yield svc.stopService()
