"""The alarm room: server-side rules on per-second sums, DAQ silence and frame rate.

The hub calls :meth:`AlarmService.second` with the sums of each second of
each sensor (after the statistics reduced them); threshold and flat-line
rules are judged there, on sliding windows of those sums.  Machine rules
(DAQ silent, frame rate far below its usual rate) are judged every
``check_interval`` seconds on a LoopingCall of the injected clock, from the
hub's :class:`~tsrmon.hub.machines.Machine` counters (``machine_rules.py``).

Raised, cleared and acknowledged alarms go to ``emit(machine, "alarm",
payload)`` (the live layer's ``alarm`` event on ``/sio/<machine>``), each
raise to ``notify(machine, title, body, data)`` (the notifier applies its
own throttles), and every change to SQLite (``store.py``), from which a
restart resumes the active alarms without raising them again (``emission.py``).

Issue 17: ``crest``, ``kurtosis``, ``skewness`` and ``peak`` are judged per
second like the other window metrics (the sums carry the moments); the
spectra metrics (``velocity_rms``, ``band:<name>``, ``order:<n>``, bearing
tones ``bpfo|bpfi|bsf|ftf[:h]``) once per minute in :meth:`features`
(``feature_rules.py``), over the RMS of the minutes in the window.  The
ISO 10816-3 preset judges the true velocity RMS (from the spectra) of a
sensor whose rate and unit allow it, the RMS of the samples of a sensor whose unit is a velocity but whose
rate does not, and nothing otherwise; :meth:`rule_states` says which, and
why, per rule and sensor.
"""

import collections
import zoneinfo

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.alarms import engine
from tsrmon.alarms.emission import AlarmEmission
from tsrmon.alarms.engine import ACTIVE, CLEAR, INACTIVE, PENDING, RAISE, Tracker, WindowSums
from tsrmon.alarms.feature_rules import FeatureRules
from tsrmon.alarms.machine_rules import MIN_EXPECTED_FRAMES, FrameRate, MachineRules  # noqa: F401
from tsrmon.alarms.owner_sync import OwnerSync
from tsrmon.alarms.rule_model import FLATLINE, RATE_DROP, SEVERITIES, is_feature_metric
from tsrmon.store.backends import build_alarm_table
from tsrmon.config.checks import ConfigError
from tsrmon.rooms import ICounters, IHealth, IReconfigurable

CHECK_INTERVAL = 5.0
MAX_ACKED_BY = 200


@implementer(IHealth, ICounters, IReconfigurable)
class AlarmService(MachineRules, FeatureRules, AlarmEmission, OwnerSync, service.Service):
    """Owns the rules, the trackers, the active alarms and the alarm store.

    Split by job: DAQ silence and frame rate in ``machine_rules.py``, the
    per-minute spectra metrics in ``feature_rules.py``, raising and clearing
    (store row, live event, push) in ``emission.py``.
    """

    log = Logger()
    name = "alarms"
    health_key = "alarms"  # IHealth: its /healthz check
    counters_key = "alarms"  # ICounters: its /metrics prefix

    def __init__(self, config, clock, hub, emit=None, notify=None, reactor=None,
                 check_interval=CHECK_INTERVAL, catalog=None):
        self.config = config
        self.clock = clock
        self.hub = hub
        self.emit = emit
        self.notify = notify
        self.check_interval = float(check_interval)
        self.zone = zoneinfo.ZoneInfo(config.time.zone)
        self.store = build_alarm_table(config, reactor if reactor is not None else clock)
        self.trackers = {}  # (rule name, machine, sensor) -> Tracker
        self.active_alarms = {}  # alarm id -> Alarm
        self._windows = {}  # (machine, sensor, stype, window) -> WindowSums
        self._bindings = {}  # (machine, sensor, stype) -> (windows, ((rule, window, tracker), ...))
        self._rates = {}  # machine -> FrameRate
        self._set_rules(config.alarm.rule_objects(config.source))
        self._ready = False
        self._loaded = None
        self._loop = None
        self._template_warned = set()
        self._counters = collections.Counter()
        # Issue 17: sensor metadata (spectra/catalog.py) for the ISO preset,
        # and per (machine, sensor, window) the recent minutes' feature values.
        self.catalog = catalog
        self._minutes = {}  # (machine, sensor, rule name) -> deque[(t, value)]
        # Issue 16: a cluster's new owner of a machine reads its alarms first (owner_sync.py).
        self._init_owner_sync(config)

    # -- rules -------------------------------------------------------------------
    def _set_rules(self, rules):
        self.rules = rules
        self.rules_by_name = {r.name: r for r in rules}
        self._sensor_rules = [r for r in rules if r.scope == "sensor"]
        self._machine_rules = [r for r in rules if r.scope == "machine"]
        self._bindings = {}
        windows = {r.window for r in self._sensor_rules}
        self._windows = {k: w for k, w in self._windows.items() if k[3] in windows}

    def reconfigure(self, config):
        """New rules (SIGHUP); states of rules that did not change are kept.

        A changed rule keeps its active alarms (they clear by the new clear
        level) but forgets pending durations; a removed rule, or one that no
        longer covers a machine or sensor, clears its alarms.
        """
        try:
            rules = config.alarm.rule_objects(config.source)
        except ConfigError as e:
            self.log.error("alarm rules not reloaded: {error}", error=str(e))
            return
        old = self.rules_by_name
        self.config = config
        self._set_rules(rules)
        for key, tracker in list(self.trackers.items()):
            rule = self.rules_by_name.get(tracker.rule)
            if rule is None or not self._covers(rule, tracker):
                if tracker.alarm is not None:
                    self._clear(tracker, tracker.alarm.value, "rule removed or changed its scope")
                del self.trackers[key]
            elif rule != old.get(rule.name) and tracker.state == PENDING:
                tracker.state = INACTIVE
                tracker.since = None
        self.log.info("alarm rules: {n} in force", n=len(rules))

    @staticmethod
    def _covers(rule, tracker):
        if not rule.matches_machine(tracker.machine):
            return False
        if rule.scope == "machine":
            return tracker.sensor == ""
        return tracker.sensor != "" and rule.matches_sensor(tracker.sensor, tracker.stype)

    def _tracker(self, rule_name, machine, sensor, stype=None):
        key = (rule_name, machine, sensor)
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = Tracker(rule_name, machine, sensor, stype)
        elif stype is not None:
            tracker.stype = stype
        return tracker

    # -- the service ---------------------------------------------------------------
    def startService(self):
        super().startService()
        self._loaded = self.store.open(self.clock.seconds())
        self._loaded.addCallback(self._resume)
        self._loaded.addErrback(lambda f: self.log.failure("alarms: resuming the stored state failed", f))

    def _adopt(self, alarm):
        """``alarm`` (stored active) is active here again, not raised anew;
        returns its tracker when its rule no longer covers it (to clear)."""
        rule = self.rules_by_name.get(alarm.rule)
        tracker = self._tracker(alarm.rule, alarm.machine, alarm.sensor or "", alarm.stype)
        tracker.state = ACTIVE
        tracker.alarm = alarm
        self.active_alarms[alarm.id] = alarm
        if rule is None or not self._covers(rule, tracker):
            return tracker
        if rule.kind == RATE_DROP and alarm.level:
            # The usual rate is not stored, but the alarm's level is
            # ``below`` × usual: resume from it so the alarm can clear.
            rate_state = self._rates[alarm.machine] = FrameRate()
            rate_state.usual = alarm.level / rule.level
            rate_state.learned = rule.extra["warmup"]
        return None

    def whenReady(self):
        """Deferred firing once the stored state is loaded and rules are judged."""
        if self._loaded is None:
            return defer.fail(RuntimeError("the alarm service is not started"))
        d = defer.Deferred()
        self._loaded.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def _resume(self, alarms):
        cleared = [t for t in map(self._adopt, alarms) if t is not None]
        for tracker in cleared:
            self._clear(tracker, tracker.alarm.value, "rule removed or changed its scope")
        self._ready = True
        if alarms:
            self.log.info("alarms: {n} active alarm(s) resumed", n=len(alarms) - len(cleared))
        if self.running:
            self._loop = task.LoopingCall(self.check_machines)
            self._loop.clock = self.clock
            self._loop.start(self.check_interval, now=False).addErrback(
                lambda f: self.log.failure("alarms: the machine check loop stopped", f))

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        loaded = self._loaded if self._loaded is not None else defer.succeed(None)
        self._loaded = None

        def persist(_):
            # The latest values of active alarms; states were written as they changed.
            active = list(self.active_alarms.values())
            if self._sync_on:  # shared table: never over a row another node cleared
                self.store.update_active(active, "value", "peak")
            else:
                self.store.update_many(active, "value", "peak")
            return self.store.close()

        self._ready = False
        d = defer.Deferred()
        loaded.addBoth(lambda r: (d.callback(None), r)[1])
        return d.addCallback(persist)

    # -- per-second sums (called by the hub) -------------------------------------------
    def second(self, machine, sensor, stype, t, sums):
        """One second of one sensor; judges the sensor rules that cover it."""
        if not self._ready:
            self._counters["seconds_not_ready"] += 1
            return
        if self._sync_on and not self._owned(machine):
            return
        binding = self._bindings.get((machine, sensor, stype))
        if binding is None:
            binding = self._bind(machine, sensor, stype)
        windows, checks = binding
        for window in windows:
            window.add(t, sums)
        for rule, window, tracker in checks:
            if not window.covered:
                continue
            if rule.extra and rule.extra.get("preset") and self._iso_source(rule, tracker) != "samples":
                continue
            value = window.value(rule.metric)
            if value is None or (rule.kind == FLATLINE and window.count < 2):
                continue
            tripped = rule.trips(value)
            if not tripped and tracker.state is INACTIVE:
                continue  # the usual case: nothing to do
            event = engine.advance(tracker, t, tripped, rule.clears(value),
                                   rule.for_s, rule.clear_for)
            if tracker.alarm is not None:
                tracker.alarm.note(value, rule.condition == "above")
            if event is RAISE:
                more = {"at": window.minimum} if rule.kind == FLATLINE else {}
                self._raise(tracker, rule, value, more)
            elif event is CLEAR:
                self._clear(tracker, value)
        self._counters["seconds"] += 1

    def _bind(self, machine, sensor, stype):
        windows = {}
        checks = []
        for rule in self._sensor_rules:
            if not (rule.matches_machine(machine) and rule.matches_sensor(sensor, stype)):
                continue
            if is_feature_metric(rule.metric):
                continue  # judged per minute in features()
            key = (machine, sensor, stype, rule.window)
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = WindowSums(rule.window)
            windows[rule.window] = window
            checks.append((rule, window, self._tracker(rule.name, machine, sensor, stype)))
        binding = self._bindings[(machine, sensor, stype)] = (tuple(windows.values()), tuple(checks))
        return binding

    def _judge(self, tracker, rule, t, value, tripped, cleared, more):
        event = engine.advance(tracker, t, tripped, cleared, rule.for_s, rule.clear_for)
        if tracker.alarm is not None:
            tracker.alarm.note(value, rule.condition == "above")
        if event is RAISE:
            self._raise(tracker, rule, value, more)
        elif event is CLEAR:
            self._clear(tracker, value)

    # -- REST --------------------------------------------------------------------------
    def rule_states(self, machine=None):
        """Per (rule, machine, sensor): ``{"rule", "machine", "sensor", "state",
        "source", "note"}`` (``source``/``note``: what an ISO preset judges
        for that sensor and why, e.g. that the rate is too low for true
        velocity RMS).  For the REST layer."""
        out = []
        for (rule, m, sensor), tr in sorted(self.trackers.items()):
            if machine is not None and m != machine:
                continue
            out.append({"rule": rule, "machine": m, "sensor": sensor or None,
                        "state": tr.state, "source": tr.source, "note": tr.note})
        return out

    def active(self, machine=None):
        """The active alarms (of one machine if given), oldest first, as JSON-ready dicts."""
        alarms = sorted((a for a in self.active_alarms.values() if machine is None or a.machine == machine),
                        key=lambda a: (a.raised_t, a.id))
        return [a.as_dict(self.zone) for a in alarms]

    def history(self, start_t=None, end_t=None, machine=None):
        """Deferred[list of dicts]: alarms active at some time in [start_t, end_t].

        None means from the beginning / until now.  Oldest first, at most
        ``store.HISTORY_LIMIT`` rows.
        """
        start_t = 0.0 if start_t is None else float(start_t)
        end_t = self.clock.seconds() if end_t is None else float(end_t)
        d = self.store.query(start_t, end_t, machine)
        d.addCallback(lambda alarms: [self._current(a).as_dict(self.zone) for a in alarms])
        return d

    def _current(self, stored):
        # An active alarm's latest value lives in memory, not yet in the row.
        return self.active_alarms.get(stored.id, stored)

    def ack(self, alarm_id, by=None):
        """Acknowledge an active alarm: Deferred[dict]; KeyError if no active alarm has that id."""
        alarm = self.active_alarms.get(alarm_id)
        if alarm is None:
            raise KeyError(alarm_id)
        if alarm.acked_t is not None:
            return defer.succeed(alarm.as_dict(self.zone))
        now = self.clock.seconds()
        alarm.acked_t = now
        alarm.acked_by = None if by is None else str(by)[:MAX_ACKED_BY]
        self._counters["acknowledged"] += 1
        self.log.info("alarm acknowledged: {rule} on {machine} {sensor} by {by}", rule=alarm.rule,
                      machine=alarm.machine, sensor=alarm.sensor, by=alarm.acked_by or "-")
        d = self.store.update(alarm, "acked_t", "acked_by")
        self._emit(alarm, "acknowledged", now)
        return d.addCallback(lambda _: alarm.as_dict(self.zone))

    def counters(self):
        """Flat counters and gauges (Prometheus): active alarms per severity and totals."""
        out = {f"alarms_active_{s}": 0 for s in SEVERITIES}
        unacked = 0
        for alarm in self.active_alarms.values():
            out[f"alarms_active_{alarm.severity}"] = out.get(f"alarms_active_{alarm.severity}", 0) + 1
            if alarm.acked_t is None:
                unacked += 1
        c = self._counters
        out.update({
            "alarms_active": len(self.active_alarms),
            "alarms_unacknowledged": unacked,
            "alarms_pending": sum(1 for t in self.trackers.values() if t.state == PENDING),
            "alarm_rules": len(self.rules),
            "alarms_raised": c["raised"],
            "alarms_cleared": c["cleared"],
            "alarms_acknowledged": c["acknowledged"],
            "alarms_notified": c["notified"],
            "alarm_notify_errors": c["notify_errors"],
            "alarm_emit_errors": c["emit_errors"],
            "alarm_seconds_judged": c["seconds"],
            "alarm_minutes_judged": c["minutes"],
            "alarm_seconds_not_ready": c["seconds_not_ready"],
            "alarm_seconds_syncing": c["seconds_syncing"],
            "alarms_adopted": c["alarms_adopted"],
            "alarms_dropped_stale": c["alarms_dropped_stale"],
            "alarm_store_writes": self.store.writes,
            "alarm_store_errors": self.store.failures,
        })
        return out

    def healthy(self):
        """For /healthz: the store is the only part that can break."""
        # Still loading its state at start-up is not a fault (ready says so).
        return {"ok": bool(self.running) and not self.store.error, "ready": self._ready,
                "active": len(self.active_alarms), "rules": len(self.rules),
                "error": self.store.error}

    health = healthy  # IHealth
