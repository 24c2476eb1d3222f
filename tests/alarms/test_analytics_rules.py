"""Issue 17 alarm metrics: crest and kurtosis per second from the moment sums,
velocity_rms / band: / order: / bearing tones per minute from the spectra
features, and the ISO 10816-3 preset judging true velocity RMS only when the
sensor's rate and unit allow it (and saying why not)."""

import math

import numpy as np
import pytest
import pytest_twisted

from tests.alarms.conftest import Rig
from tsrmon.alarms.rules import feature_value, is_feature_metric, parse_rules
from tsrmon.analytics import signals
from tsrmon.analytics.moments import Moments
from tsrmon.config import ConfigError
from tsrmon.spectra.catalog import SensorCatalog
from tsrmon.stats.sums import PartialSums


def second_sums(x):
    s = PartialSums.of(x)
    s.moments = Moments.of(x, 0.0)
    return s


def feed(rig, sensor, x):
    t = rig.clock.seconds()
    rig.svc.second("M", sensor, "VIB", t, second_sums(x))
    rig.clock.advance(1)


@pytest_twisted.inlineCallbacks
def test_kurtosis_and_crest_rules_raise_on_impacts_not_on_a_sine(tmp_path):
    rig = Rig(tmp_path, [
        {"name": "impacts", "metric": "kurtosis", "above": 6, "window": 5},
        {"name": "crest", "metric": "crest", "above": 4, "window": 5},
    ])
    yield rig.start()
    for k in range(10):
        feed(rig, "vib", signals.tone(2560, 2560, 50, 1.0, start=k * 2560))
    assert rig.rec.events("raised") == []
    for k in range(10):
        feed(rig, "vib", signals.impulses(2560, 2560, 7.0, 5.0, resonance=800, decay=0.002,
                                          start=k * 2560))
    raised = {e["rule"]: e for e in rig.rec.events("raised")}
    assert set(raised) == {"impacts", "crest"}
    assert raised["impacts"]["value"] > 6 and raised["crest"]["value"] > 4
    yield rig.stop()


def test_feature_metrics_parse_and_read():
    rules = {r.name: r for r in parse_rules([
        {"name": "v", "metric": "velocity_rms", "above": 4.5},
        {"name": "b", "metric": "band:high", "above": 0.1},
        {"name": "o", "metric": "order:2", "above": 0.2},
        {"name": "t", "metric": "bpfo:2", "above": 0.01},
        {"name": "t2", "metric": "bearing:bsf", "above": 0.01},
    ])}
    assert all(is_feature_metric(rules[n].metric) for n in "v b o t t2".split())
    feats = {"velocity_rms": 5.0, "bands": {"high": 0.3}, "orders": {"2": [49.3, 0.25]},
             "bearing": {"bpfo": [[1, 89.6, 0.02], [2, 179.2, 0.015]], "bsf": [[1, 58.9, 0.001]]}}
    assert feature_value("velocity_rms", feats) == 5.0
    assert feature_value("band:high", feats) == 0.3
    assert feature_value("order:2", feats) == 0.25
    assert feature_value("bpfo:2", feats) == 0.015
    assert feature_value("bearing:bsf", feats) == 0.001
    assert feature_value("order:3", feats) is None
    for bad in ("order:0", "band:", "bpfx", "velocity"):
        with pytest.raises(ConfigError, match="unknown metric"):
            parse_rules([{"name": "r", "metric": bad, "above": 1}])


@pytest_twisted.inlineCallbacks
def test_feature_rules_are_judged_once_a_minute_over_their_window(tmp_path):
    rig = Rig(tmp_path, [
        {"name": "vel", "metric": "velocity_rms", "above": 4.5, "clear": 4.0, "window": "3 min"},
        {"name": "outer", "metric": "bpfo", "above": 0.05},
        {"name": "temp-only", "metric": "velocity_rms", "above": 1.0, "types": ["TEMP"]},
    ])
    yield rig.start()
    svc = rig.svc
    t = rig.clock.seconds()
    quiet = {"velocity_rms": 2.0, "bearing": {"bpfo": [[1, 89.6, 0.01]]}}
    loud = {"velocity_rms": 6.0, "bearing": {"bpfo": [[1, 89.6, 0.2]]}}
    for k, f in enumerate([quiet, quiet, loud]):
        svc.features("M", "vib", None, t + 60 * (k + 1), f, "VIB")
    # bpfo over one minute trips at once; velocity's 3-min RMS is
    # sqrt((4 + 4 + 36) / 3) = 3.83: not yet.
    # ("temp-only" is for TEMP sensors: never judged on this VIB sensor.)
    assert [e["rule"] for e in rig.rec.events("raised")] == ["outer"]
    svc.features("M", "vib", None, t + 240, loud, "VIB")
    raised = [e for e in rig.rec.events("raised") if e["rule"] == "vel"]
    assert [e["sensor"] for e in rig.rec.events("raised") if e["rule"] == "temp-only"] == []
    assert len(raised) == 1
    assert raised[0]["value"] == pytest.approx(math.sqrt((4 + 36 + 36) / 3))
    yield rig.stop()


def catalog_for(config, entries_meta):
    """A SensorCatalog that has seen each sensor once (frames of ``n`` values)."""
    cat = SensorCatalog(config)
    for sensor, stype, n in entries_meta:
        cat.observe("M", sensor, stype, n)
    return cat


@pytest_twisted.inlineCallbacks
def test_iso_preset_judges_true_velocity_rms_or_says_why_not(tmp_path):
    rig = Rig(tmp_path, [{"name": "iso", "preset": "iso10816-3", "group": 2,
                          "foundation": "rigid", "window": 60, "for": 0}])
    rig.config = rig.config.replace(sensors=[{"match": "M/vel", "unit": "mm/s"}])
    yield rig.start()
    svc = rig.svc
    svc.catalog = catalog_for(rig.config, [("acc", "VIB", 25600), ("legacy", "VIB", 30),
                                           ("vel", "VIB", 30)])
    # 60 s of samples: the acc sensor's raw RMS (g) is large but is not judged
    # as mm/s; the legacy 30/s feed cannot give velocity; the mm/s sensor's
    # samples are judged as they are.
    for _ in range(61):
        t = rig.clock.seconds()
        for sensor in ("acc", "legacy", "vel"):
            svc.second("M", sensor, "VIB", t, second_sums(np.full(30, 5.0)))
        rig.clock.advance(1)
    raised = {(e["rule"], e["sensor"]) for e in rig.rec.events("raised")}
    assert raised == {("iso.zone-C", "vel"), ("iso.zone-D", "vel")}
    states = {(s["rule"], s["sensor"]): s for s in svc.rule_states("M")}
    assert states[("iso.zone-C", "acc")]["source"] == "velocity_rms"
    legacy = states[("iso.zone-C", "legacy")]
    assert legacy["source"] is None and "not judged" in legacy["note"]
    assert "legacy feed" in legacy["note"]
    assert states[("iso.zone-C", "vel")]["source"] == "samples"
    # The accelerometer is judged from its spectra: 22.07 mm/s is zone D.
    meta = svc.catalog.meta("M", "acc")
    svc.features("M", "acc", meta, rig.clock.seconds(), {"velocity_rms": 22.07})
    raised = {(e["rule"], e["sensor"]) for e in rig.rec.events("raised")}
    assert ("iso.zone-D", "acc") in raised and ("iso.zone-C", "acc") in raised
    yield rig.stop()
