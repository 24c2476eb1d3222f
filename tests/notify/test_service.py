"""The notifier's own contract: templates, the generic entry, history, health, counters."""

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.notify.conftest import T0
from tests.notify.fakes import make_config, settle
from tsrmon.config import ConfigError
from tsrmon.notify.service import NotifierService


def start(tmp_path, clock, receiver, fcm=None, **notify):
    config = make_config(tmp_path, fcm=fcm,
                         notify=dict({"WEBHOOKS": [{"url": receiver.base + "/hook"}]}, **notify))
    svc = NotifierService(config, clock, reactor)
    svc.startService()
    return svc


@pytest.mark.parametrize("key, template", [("TITLE", "{machine} {nope}"), ("BODY", "{score:d}"),
                                           ("BODY", "{0}"), ("TITLE", "{machine")])
def test_bad_templates_are_refused(tmp_path, clock, key, template):
    with pytest.raises(ConfigError) as e:
        NotifierService(make_config(tmp_path, fcm={key: template}), clock, reactor)
    assert f"FCM.{key}" in str(e.value) and "{machine}" in str(e.value)


def test_bad_topic_is_refused(tmp_path, clock):
    with pytest.raises(ConfigError) as e:
        NotifierService(make_config(tmp_path, fcm={"TOPIC": "/topics/a b"}), clock, reactor)
    assert "FCM.TOPIC" in str(e.value)


@pytest_twisted.inlineCallbacks
def test_custom_templates_and_suppressed_placeholder(tmp_path, clock, receiver):
    svc = start(tmp_path, clock, receiver, fcm={
        "TITLE": "[{kind}] {machine}", "BODY": "{score:.1f} > {threshold:.1f} at {time} (+{suppressed})"})
    svc.fault("ShotBlast", 7.25, 5.0, T0)
    svc.fault("ShotBlast", 7.0, 5.0, T0)
    yield settle(svc)
    clock.advance(120)
    svc.fault("ShotBlast", 9.0, 5.0, clock.seconds())
    yield settle(svc)
    bodies = [r.json() for r in receiver.log]
    assert [b["title"] for b in bodies] == ["[fault] ShotBlast"] * 2
    # The template places {suppressed} itself, so no suffix is added.
    assert [b["body"] for b in bodies] == ["7.2 > 5.0 at 2023-11-15 07:13:20 (+0)",
                                           "9.0 > 5.0 at 2023-11-15 07:15:20 (+1)"]
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_generic_notify_is_throttled_per_machine_and_kind(tmp_path, clock, receiver):
    svc = start(tmp_path, clock, receiver)
    assert svc.fault("ShotBlast", 7.0, 5.0, T0) is None
    assert svc.notify("ShotBlast", "temperature", "ShotBlast hot", "81 °C", {"value": 81.0}) is True
    assert svc.notify("ShotBlast", "temperature", "ShotBlast hot", "82 °C", {"value": 82.0}) is False
    yield settle(svc)
    [fault, rule] = sorted((r.json() for r in receiver.log), key=lambda b: b["kind"])
    assert fault["kind"] == "fault"
    assert (rule["kind"], rule["title"], rule["body"], rule["data"]["value"]) == \
        ("temperature", "ShotBlast hot", "81 °C", 81.0)
    assert rule["data"]["machine"] == "ShotBlast" and rule["data"]["t"] == T0
    counters = svc.counters()
    assert (counters["faults"], counters["requests"], counters["admitted"], counters["throttled"]) == (1, 2, 2, 1)
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_history_range_and_machine_filter(tmp_path, clock, receiver):
    svc = start(tmp_path, clock, receiver)
    for machine in ["A", "B", "A"]:
        svc.fault(machine, 7.0, 5.0, clock.seconds())
        yield settle(svc)
        clock.advance(200)
    rows = yield svc.history(T0, T0 + 400)
    assert [(r["machine"], r["t"]) for r in rows] == [("A", T0), ("B", T0 + 200), ("A", T0 + 400)]
    assert [r["machine"] for r in (yield svc.history(T0 + 1, T0 + 400))] == ["B", "A"]
    assert [r["t"] for r in (yield svc.history(0, 2e9, machine="A"))] == [T0, T0 + 400]
    assert len((yield svc.history(0, 2e9, limit=1))) == 1
    assert set(rows[0]) >= {"time", "t", "machine", "kind", "channel", "target", "result", "attempts",
                            "suppressed", "error"}
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_history_survives_a_restart(tmp_path, clock, receiver):
    svc = start(tmp_path, clock, receiver)
    svc.fault("A", 7.0, 5.0, T0)
    yield settle(svc)
    yield svc.stopService()
    again = start(tmp_path, clock, receiver)
    rows = yield again.history(0, 2e9)
    assert [(r["machine"], r["result"]) for r in rows] == [("A", "sent")]
    yield again.stopService()


@pytest_twisted.inlineCallbacks
def test_health_and_counters_shape(tmp_path, clock, receiver):
    svc = start(tmp_path, clock, receiver, MAX_PER_HOUR=10)
    health = svc.health()
    assert health["ok"] is True and health["enabled"] is True
    assert health["channels"]["fcm"]["enabled"] is False
    assert health["throttle"] == {"interval": 120.0, "max_per_hour": 10, "sent_last_hour": 0, "held": 0}
    counters = svc.counters()
    assert all(isinstance(v, int) for v in counters.values())
    assert counters["webhooks"] == 1 and counters["fcm_enabled"] == 0
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_unusable_history_folder_is_unhealthy_but_notifies(tmp_path, clock, receiver):
    (tmp_path / "db").write_text("not a folder")
    config = make_config(tmp_path / "x", notify={"WEBHOOKS": [receiver.base + "/hook"]})
    config = config.replace(database={"path": str(tmp_path / "db" / "sub")})
    svc = NotifierService(config, clock, reactor)
    svc.startService()
    yield svc._opened
    svc.fault("A", 7.0, 5.0, T0)
    yield settle(svc)
    assert len(receiver.log) == 1
    health = svc.health()
    assert health["ok"] is False and "cannot create" in health["history"]["error"]
    assert svc.counters()["records_failed"] == 1
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_reconfigure_takes_new_targets_and_limits(tmp_path, clock, receiver):
    svc = start(tmp_path, clock, receiver)
    svc.reconfigure(make_config(tmp_path, fcm={"TIMEOUT": 5},
                                notify={"WEBHOOKS": [{"url": receiver.base + "/new", "name": "new"}]}))
    svc.fault("A", 7.0, 5.0, T0)
    yield settle(svc)
    clock.advance(4)
    svc.fault("A", 7.0, 5.0, clock.seconds())  # held: FCM.TIMEOUT is now 5 s
    clock.advance(1)
    svc.fault("A", 7.0, 5.0, clock.seconds())
    yield settle(svc)
    assert [r.path for r in receiver.log] == ["/new", "/new"]
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_in_flight_cap_drops_and_counts(tmp_path, clock, receiver):
    receiver.routes["/hook"] = "hang"
    config = make_config(tmp_path, fcm={"TIMEOUT": 0}, notify={"WEBHOOKS": [receiver.base + "/hook"]})
    svc = NotifierService(config, clock, reactor, max_in_flight=2)
    svc.startService()
    for machine in "ABC":
        svc.fault(machine, 7.0, 5.0, T0)
    assert svc.counters()["overload_dropped"] == 1 and svc.counters()["in_flight"] == 2
    stopped = svc.stopService()
    clock.advance(5)
    yield stopped
