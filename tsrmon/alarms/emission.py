"""An alarm's raise and clear: the row in the alarm store, the live ``alarm``
event (``emit(machine, "alarm", payload)``, on ``/sio/<machine>``) and, on a
raise, the push/webhook notification (``notify(machine, title, body, data)``;
the notifier applies its own throttles).  A failing live layer or notifier
is counted and logged, never raised into the hub.
"""

import uuid

from tsrmon.alarms import engine
from tsrmon.alarms.engine import INACTIVE, Alarm
from tsrmon.alarms.rule_model import render


class AlarmEmission:
    """Mixin of :class:`~tsrmon.alarms.service.AlarmService`: uses its ``clock``,
    ``store``, ``zone``, ``emit``, ``notify``, ``active_alarms`` and ``_counters``."""

    def _raise(self, tracker, rule, value, more):
        now = self.clock.seconds()
        fields = rule.fields(tracker.machine, tracker.sensor, tracker.stype, value, **more)
        try:
            message = render(rule.message, fields)
        except Exception as e:
            message = f"{rule.name}: {tracker.machine} {tracker.sensor} {value:g}".replace("  ", " ")
            if rule.name not in self._template_warned:
                self._template_warned.add(rule.name)
                self.log.warn("alarm rule {rule}: message template failed ({error}); plain text used",
                              rule=rule.name, error=repr(e))
        alarm = Alarm(id=uuid.uuid4().hex, rule=rule.name, kind=rule.kind, machine=tracker.machine,
                      sensor=tracker.sensor, stype=tracker.stype, metric=rule.metric,
                      severity=rule.severity, level=fields["level"], clear_level=fields["clear"],
                      message=message, state="active", raised_t=now, value=value, peak=value)
        tracker.alarm = alarm
        self.active_alarms[alarm.id] = alarm
        self._counters["raised"] += 1
        self.log.warn("alarm raised [{severity}] {message}", severity=rule.severity, message=message)
        self.store.insert(alarm)
        self._emit(alarm, "raised", now)
        if rule.notify and self.notify is not None:
            title = f"[{rule.severity}] {tracker.machine}: {rule.name}"
            # Small on purpose: push payloads are capped at 4 KB.
            data = {"id": alarm.id, "rule": rule.name, "sensor": alarm.sensor or None,
                    "severity": rule.severity, "value": value, "level": alarm.level,
                    "event": "raised", "t": now}
            try:
                self.notify(tracker.machine, title, message, data)
                self._counters["notified"] += 1
            except Exception:
                self._counters["notify_errors"] += 1
                self.log.failure("alarm {alarm}: the notifier failed", alarm=alarm.id)

    def _clear(self, tracker, value, reason=None):
        alarm = tracker.alarm
        tracker.alarm = None
        tracker.state = INACTIVE
        tracker.since = tracker.clear_since = None
        if alarm is None:
            return
        now = self.clock.seconds()
        alarm.state = "cleared"
        alarm.cleared_t = now
        alarm.clear_reason = reason
        if value is not None:
            alarm.value = value
        self.active_alarms.pop(alarm.id, None)
        self._counters["cleared"] += 1
        self.log.info("alarm cleared: {rule} on {machine} {sensor}{reason}", rule=alarm.rule,
                      machine=alarm.machine, sensor=alarm.sensor,
                      reason=f" ({reason})" if reason else "")
        self.store.update(alarm, "state", "cleared_t", "clear_reason", "value", "peak")
        self._emit(alarm, "cleared", now)

    def _emit(self, alarm, event, t):
        payload = alarm.as_dict(self.zone)
        payload["event"] = event
        payload["t"] = t
        payload["time"] = engine.iso_time(t, self.zone)
        if self.emit is not None:
            try:
                self.emit(alarm.machine, "alarm", payload)
            except Exception:
                self._counters["emit_errors"] += 1
                self.log.failure("alarm {alarm}: the live layer failed on {event}",
                                 alarm=alarm.id, event=event)
        return payload
