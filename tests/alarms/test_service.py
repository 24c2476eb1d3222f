import random

import pytest
import pytest_twisted

from tests.alarms.conftest import T0, Conn, make_config
from tsrmon.stats.sums import PartialSums

NOISY_RULE = {"name": "vib-high", "machines": "pump*", "sensors": "vib*", "metric": "mean",
              "window": 1, "above": 10, "clear": 8, "for": 10, "clear_for": 10,
              "message": "{machine} {sensor} {metric} {value:.3f} > {level}"}
QUIET = [{"builtin": "daq-silent", "enabled": False}, {"builtin": "daq-rate-drop", "enabled": False}]


def noisy(rng, mean, n=30, sd=2.0):
    return [rng.gauss(mean, sd) for _ in range(n)]


def run_phase(rig, rng, mean, seconds, trace):
    for _ in range(seconds):
        values = noisy(rng, mean)
        trace.append(sum(values) / len(values))
        rig.feed("pump1", "vib1", values)


def crossings(trace, level):
    return sum(1 for a, b in zip(trace, trace[1:]) if (a > level) != (b > level))


@pytest_twisted.inlineCallbacks
def test_noisy_signal_raises_once_and_clears_once(rig_factory):
    rig = rig_factory([NOISY_RULE] + QUIET)
    yield rig.start()
    rng = random.Random(10816)
    trace = []
    run_phase(rig, rng, 5, 60, trace)
    assert rig.rec.events() == []
    high_from = rig.clock.seconds()
    run_phase(rig, rng, 10.5, 300, trace)   # crosses 10 many times, never below 8
    run_phase(rig, rng, 9.0, 120, trace)    # between the clear level and the level
    low_from = rig.clock.seconds()
    run_phase(rig, rng, 7.3, 300, trace)    # crosses the clear level now and then
    run_phase(rig, rng, 5, 30, trace)
    assert crossings(trace, 10) > 20 and crossings(trace, 8) > 10
    raised, cleared = rig.rec.events("raised"), rig.rec.events("cleared")
    assert len(raised) == 1 and len(cleared) == 1
    assert raised[0]["id"] == cleared[0]["id"]
    assert high_from < raised[0]["t"] < low_from <= cleared[0]["t"]
    assert raised[0]["rule"] == "vib-high" and raised[0]["sensor"] == "vib1"
    assert raised[0]["level"] == 10.0 and raised[0]["severity"] == "warning"
    assert raised[0]["message"] == f"pump1 vib1 mean {raised[0]['value']:.3f} > 10.0"
    assert raised[0]["time"].endswith("+09:00")  # TIME.ZONE Asia/Seoul
    assert [n[3]["id"] for n in rig.rec.notified] == [raised[0]["id"]]
    assert rig.svc.active() == []
    history = yield rig.svc.history(T0, rig.clock.seconds())
    assert [(h["id"], h["state"]) for h in history] == [(raised[0]["id"], "cleared")]
    c = rig.svc.counters()
    assert (c["alarms_raised"], c["alarms_cleared"], c["alarms_active"]) == (1, 1, 0)
    yield rig.stop()


@pytest_twisted.inlineCallbacks
def test_restart_in_the_middle_keeps_the_alarm(rig_factory):
    rig = rig_factory([NOISY_RULE] + QUIET)
    yield rig.start()
    rng = random.Random(3)
    trace = []
    run_phase(rig, rng, 12, 30, trace)
    [raised] = rig.rec.events("raised")
    assert rig.svc.counters()["alarms_active_warning"] == 1
    yield rig.stop()

    yield rig.start()  # a new service on the same file
    [active] = rig.svc.active()
    assert active["id"] == raised["id"] and active["state"] == "active"
    run_phase(rig, rng, 12, 60, trace)  # still above: no second alarm
    assert len(rig.rec.events("raised")) == 1
    run_phase(rig, rng, 5, 30, trace)
    [cleared] = rig.rec.events("cleared")
    assert cleared["id"] == raised["id"]
    assert len(rig.rec.notified) == 1
    yield rig.stop()


@pytest_twisted.inlineCallbacks
def test_ack_changes_state_emits_and_persists(rig_factory):
    rig = rig_factory([NOISY_RULE] + QUIET)
    yield rig.start()
    rng = random.Random(5)
    run_phase(rig, rng, 12, 20, [])
    [raised] = rig.rec.events("raised")
    with pytest.raises(KeyError):
        rig.svc.ack("no-such-alarm")
    acked = yield rig.svc.ack(raised["id"], by="operator kim")
    assert acked["acknowledged"] and acked["acked_by"] == "operator kim" and acked["state"] == "active"
    [event] = rig.rec.events("acknowledged")
    assert event["id"] == raised["id"] and event["acknowledged"]
    yield rig.svc.ack(raised["id"], by="someone else")  # idempotent: no second event
    assert len(rig.rec.events("acknowledged")) == 1
    assert rig.svc.counters()["alarms_unacknowledged"] == 0
    yield rig.stop()
    yield rig.start()
    [active] = rig.svc.active()
    assert active["acknowledged"] and active["acked_by"] == "operator kim"
    run_phase(rig, rng, 5, 15, [])
    with pytest.raises(KeyError):
        rig.svc.ack(raised["id"])  # cleared: no longer active
    yield rig.stop()


@pytest_twisted.inlineCallbacks
def test_daq_silent_fires_and_clears(rig_factory):
    rig = rig_factory([{"builtin": "daq-silent", "after": 60},
                       {"builtin": "daq-rate-drop", "enabled": False}])
    rig.hub.remember(["ghost"])  # known from storage, never sent data: never silent
    yield rig.start()
    machine = rig.hub.claim("press1", Conn())
    rig.hub.data(machine, [("s1", "VIB", [1.0, 2.0])])
    for _ in range(24):
        rig.clock.advance(5)
    [raised] = rig.rec.events("raised")
    assert raised["machine"] == "press1" and raised["sensor"] is None
    assert raised["rule"] == "daq-silent" and raised["value"] > 60
    assert "no data for" in raised["message"] and "connected" in raised["message"]
    rig.hub.data(machine, [("s1", "VIB", [1.0])])
    rig.clock.advance(5)
    [cleared] = rig.rec.events("cleared")
    assert cleared["id"] == raised["id"]
    rig.hub.release(machine, machine.connection)
    for _ in range(15):
        rig.clock.advance(5)
    raised = rig.rec.events("raised")
    assert len(raised) == 2 and "disconnected" in raised[1]["message"]
    assert {e["machine"] for e in rig.rec.events()} == {"press1"}
    assert len(rig.rec.notified) == 2
    yield rig.stop()


@pytest_twisted.inlineCallbacks
def test_flatline_fires_and_clears(rig_factory):
    rig = rig_factory([{"builtin": "sensor-flatline", "window": 10}] + QUIET)
    yield rig.start()
    rng = random.Random(1)
    for _ in range(30):
        rig.feed("fan2", "acc", noisy(rng, 0))
    assert rig.rec.events() == []
    for _ in range(30):
        rig.feed("fan2", "acc", [3.25] * 30)  # a broken cable: constant value
    [raised] = rig.rec.events("raised")
    assert raised["rule"] == "sensor-flatline" and raised["sensor"] == "acc"
    assert "3.25" in raised["message"]
    for _ in range(3):
        rig.feed("fan2", "acc", noisy(rng, 0))
    [cleared] = rig.rec.events("cleared")
    assert cleared["id"] == raised["id"]
    assert len(rig.rec.notified) == 1
    yield rig.stop()


@pytest_twisted.inlineCallbacks
def test_frame_rate_drop_fires_and_clears(rig_factory):
    rig = rig_factory([{"builtin": "daq-rate-drop", "window": 20, "for": 10, "learn": 60,
                        "warmup": 30},
                       {"builtin": "daq-silent", "enabled": False}])
    yield rig.start()
    machine = rig.hub.claim("mill", Conn())

    def run(seconds, per_second):
        for _ in range(seconds):
            for _ in range(per_second):
                rig.hub.data(machine, [("s1", "VIB", [1.0])])
            rig.clock.advance(1)

    run(120, 10)
    run(60, 0)   # silence is the silence rule's business, and is not learned
    run(60, 10)
    assert rig.rec.events() == []
    run(60, 1)
    [raised] = rig.rec.events("raised")
    assert raised["rule"] == "daq-rate-drop" and raised["machine"] == "mill"
    assert raised["value"] < raised["level"] < 10
    run(60, 1)
    assert len(rig.rec.events("raised")) == 1
    yield rig.stop()
    yield rig.start()  # the usual rate is not stored: the alarm's level brings it back
    run(60, 1)
    assert len(rig.rec.events("raised")) == 1 and rig.svc.active()[0]["id"] == raised["id"]
    run(60, 10)
    [cleared] = rig.rec.events("cleared")
    assert cleared["id"] == raised["id"]
    assert len(rig.rec.notified) == 1
    yield rig.stop()


@pytest_twisted.inlineCallbacks
def test_reconfigure_keeps_unchanged_rules_and_clears_removed(rig_factory, tmp_path):
    other = {"name": "vib-max", "metric": "max", "window": 5, "above": 15}
    rig = rig_factory([NOISY_RULE, other] + QUIET)
    yield rig.start()
    rng = random.Random(9)
    run_phase(rig, rng, 14, 20, [])
    raised = {e["rule"]: e["id"] for e in rig.rec.events("raised")}
    assert set(raised) == {"vib-high", "vib-max"}
    rig.svc.reconfigure(make_config(tmp_path, [NOISY_RULE] + QUIET))
    [cleared] = rig.rec.events("cleared")
    assert cleared["id"] == raised["vib-max"] and cleared["clear_reason"]
    assert [a["id"] for a in rig.svc.active()] == [raised["vib-high"]]
    run_phase(rig, rng, 14, 10, [])
    assert len(rig.rec.events("raised")) == 2
    # a changed rule keeps its active alarm
    changed = dict(NOISY_RULE, message="{machine}: too much vibration ({value:.1f})")
    rig.svc.reconfigure(make_config(tmp_path, [changed] + QUIET))
    assert [a["id"] for a in rig.svc.active()] == [raised["vib-high"]]
    assert len(rig.rec.events("cleared")) == 1
    yield rig.stop()


@pytest_twisted.inlineCallbacks
def test_failing_outputs_do_not_stop_the_alarm(rig_factory):
    rig = rig_factory([NOISY_RULE] + QUIET)
    svc = rig.new_service()

    def broken(*args):
        raise RuntimeError("receiver down")

    svc.emit = svc.notify = broken
    svc.second("pump1", "vib1", "VIB", T0, None)  # before the state is loaded: ignored
    svc.startService()
    yield svc.whenReady()
    run_phase(rig, random.Random(2), 12, 15, [])
    c = svc.counters()
    assert c["alarms_active"] == 1 and c["alarm_emit_errors"] == 1 and c["alarm_notify_errors"] == 1
    assert c["alarm_seconds_not_ready"] == 1
    yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_every_raise_is_one_notification_and_throttles_apply(rig_factory):
    from tsrmon.notify.throttle import Throttle

    rig = rig_factory([dict(NOISY_RULE, **{"for": 0, "clear_for": 0})] + QUIET)
    throttle = Throttle(rig.clock, 120, 60)  # the notifier's per-key spacing
    sent = []

    def notify(machine, title, body, data):
        rig.rec.notify(machine, title, body, data)
        if throttle.admit((machine, "alarm:" + data["rule"])).send:
            sent.append(data["id"])

    yield rig.start()
    rig.svc.notify = notify
    rng = random.Random(4)
    for _ in range(6):  # six alarms within two minutes
        run_phase(rig, rng, 12, 5, [])
        run_phase(rig, rng, 5, 5, [])
    raised = [e["id"] for e in rig.rec.events("raised")]
    assert len(raised) == 6 and len(set(raised)) == 6
    assert [n[3]["id"] for n in rig.rec.notified] == raised
    title = rig.rec.notified[0][1]
    assert "pump1" in title and "vib-high" in title and "warning" in title
    assert sent == raised[:1]  # the throttle held the other five back
    yield rig.stop()


@pytest_twisted.inlineCallbacks
def test_history_ranges_and_machine_filter(rig_factory):
    rule = dict(NOISY_RULE, **{"for": 0, "clear_for": 0, "machines": "*"})
    rig = rig_factory([rule] + QUIET)
    yield rig.start()

    def second(machine, value):
        rig.svc.second(machine, "vib1", "VIB", rig.clock.seconds(), PartialSums.of([value]))
        rig.clock.advance(1)

    second("pump1", 12)   # pump1 raised at T0
    second("pump1", 5)    # cleared at T0 + 1
    rig.clock.advance(100)
    second("fan1", 12)    # fan1 raised at T0 + 102, stays active
    second("fan1", 13)
    first, second_alarm = rig.rec.events("raised")
    everything = yield rig.svc.history()
    assert [h["id"] for h in everything] == [first["id"], second_alarm["id"]]
    early = yield rig.svc.history(T0, T0 + 50)
    assert [h["id"] for h in early] == [first["id"]]
    late = yield rig.svc.history(T0 + 50, T0 + 200)
    assert [h["id"] for h in late] == [second_alarm["id"]]
    assert late[0]["value"] == 13 and late[0]["peak"] == 13  # the live value, not the stored one
    fan = yield rig.svc.history(T0, T0 + 200, machine="fan1")
    assert [h["machine"] for h in fan] == ["fan1"]
    assert [a["machine"] for a in rig.svc.active(machine="fan1")] == ["fan1"]
    assert rig.svc.active(machine="pump1") == []
    health = rig.svc.healthy()
    assert health["ok"] and health["active"] == 1
    yield rig.stop()
