"""Issue 17 in the alarm room: the spectra metrics, judged once a minute.

The spectra room calls :meth:`FeatureRules.features` with a sensor's minute
features; feature metrics (``velocity_rms``, ``band:<name>``, ``order:<n>``,
bearing tones) are judged on the RMS of the minutes within the window.  The
ISO 10816-3 preset judges true velocity RMS from the spectra when the
sensor's rate and unit allow it (:meth:`FeatureRules._iso_source` says
which source, and why, per rule and sensor).
"""

import collections
import math

from tsrmon.alarms.rule_model import feature_value, is_feature_metric
from tsrmon.analytics import iso10816
from tsrmon.analytics import meta as _meta


class FeatureRules:
    """Mixin of :class:`~tsrmon.alarms.service.AlarmService`: uses its
    ``catalog``, ``config``, ``_sensor_rules``, ``_minutes``, ``_tracker`` and ``_judge``."""

    def _iso_source(self, rule, tracker, meta=None):
        """What an ISO 10816-3 preset judges for the tracker's sensor:
        ``"velocity_rms"`` (from spectra), ``"samples"`` (the RMS of the
        samples: a velocity sensor, or no catalog to ask) or None (nothing,
        ``tracker.note`` says why)."""
        if meta is None:
            meta = (self.catalog.meta(tracker.machine, tracker.sensor)
                    if self.catalog is not None else None)
        if meta is not None and meta is tracker.meta:
            return tracker.source
        tracker.meta = meta
        if meta is None:
            tracker.source, tracker.note = "samples", (
                "sensor metadata unknown: judging the RMS of the samples (for sensors that "
                "deliver velocity in mm/s)")
            return tracker.source
        why = iso10816.velocity_refusal(meta.rate, meta.unit)
        spectra_on = self.config.spectra.enabled
        if why is None and spectra_on:
            tracker.source, tracker.note = "velocity_rms", (
                "judging true velocity RMS (10-1000 Hz, mm/s) from the spectra, once a minute")
        elif meta.unit is not None and _meta.quantity(meta.unit) == "velocity":
            tracker.source, tracker.note = "samples", (
                f"a {meta.unit} sensor: judging the RMS of its samples"
                + (f" ({why})" if why else " (SPECTRA.ENABLED is false)"))
        else:
            tracker.source = None
            tracker.note = "not judged: " + (why or "SPECTRA.ENABLED is false")
        return tracker.source

    def features(self, machine, sensor, meta, t, feats, stype=None):
        """One minute's features of a sensor (the spectra room, once a minute;
        ``t`` the minute's end): judges the feature metrics and the ISO
        presets that judge true velocity RMS."""
        if not self._ready:
            return
        for rule in self._sensor_rules:
            if not (rule.matches_machine(machine) and rule.matches_sensor(sensor, stype)):
                continue
            preset = bool(rule.extra and rule.extra.get("preset"))
            if preset:
                tracker = self._tracker(rule.name, machine, sensor)
                if self._iso_source(rule, tracker, meta) != "velocity_rms":
                    continue
                metric = "velocity_rms"
            elif is_feature_metric(rule.metric):
                tracker = self._tracker(rule.name, machine, sensor)
                metric = rule.metric
            else:
                continue
            value = feature_value(metric, feats)
            if value is None:
                continue
            key = (machine, sensor, rule.name)
            recent = self._minutes.get(key)
            if recent is None:
                recent = self._minutes[key] = collections.deque()
            if recent and t <= recent[-1][0]:
                recent.clear()  # the clock went back (or late data): start again
            recent.append((t, value))
            span = max(60.0, float(rule.window))
            while recent and recent[0][0] <= t - span:
                recent.popleft()
            # Covered once the minutes reach back a whole window.
            if len(recent) * 60.0 < span:
                continue
            value = math.sqrt(sum(v * v for _t, v in recent) / len(recent))
            self._judge(tracker, rule, t, value, rule.trips(value), rule.clears(value), {})
            self._counters["minutes"] += 1
