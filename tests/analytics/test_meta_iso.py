"""Sensor metadata (meta.py), ISO 10816-3 zones (iso10816.py), features.py."""

import math

import pytest

from tsrmon.analytics import features as F
from tsrmon.analytics import iso10816 as ISO
from tsrmon.analytics import meta as M
from tsrmon.analytics.envelope import bearing_factors, envelope_spectrum_of
from tsrmon.analytics.signals import BEARING_6205, FaultSignal, tone
from tsrmon.analytics.spectrum import spectrum_of

RATE = 25600


# -- units ------------------------------------------------------------------------

@pytest.mark.parametrize("text,canon", [
    ("g", "g"), ("G", "g"), ("m/s^2", "m/s²"), ("m/s2", "m/s²"), ("m/s²", "m/s²"),
    ("mm/s", "mm/s"), ("IPS", "in/s"), ("degC", "°C"), ("°C", "°C"), ("C", "°C"),
    ("um", "µm"), ("mV", "mV"),
])
def test_units_normalise(text, canon):
    assert M.normalise_unit(text) == canon


def test_unit_factors():
    assert M.to_g("g") == 1.0
    assert M.to_g("m/s²") == pytest.approx(1 / 9.80665)
    assert M.to_mm_s2("g") == pytest.approx(9806.65)
    assert M.to_mm_s2("m/s^2") == pytest.approx(1000.0)
    assert M.to_mm_s2("mm/s2") == pytest.approx(1.0)
    assert M.to_mm_s("in/s") == 25.4 and M.to_mm_s("m/s") == 1000.0
    assert M.quantity("°C") == "temperature"
    assert M.temperature_to_c(212.0, "°F") == pytest.approx(100.0)
    assert M.temperature_to_c(300.0, "K") == pytest.approx(26.85)
    with pytest.raises(ValueError, match="not an acceleration"):
        M.to_g("mm/s")
    with pytest.raises(ValueError, match="not a velocity"):
        M.to_mm_s("g")
    with pytest.raises(ValueError, match="unknown"):
        M.normalise_unit("furlong/fortnight")
    with pytest.raises(ValueError):
        M.normalise_unit("")


# -- rate -------------------------------------------------------------------------

def test_infer_rate_legacy_frames():
    assert M.infer_rate(30) == 30.0
    assert M.infer_rate(25600) == 25600.0
    assert M.infer_rate(15, frame_seconds=0.5) == 30.0
    assert M.infer_rate(0) is None
    with pytest.raises(ValueError):
        M.infer_rate(-1)
    with pytest.raises(ValueError):
        M.infer_rate(30, 0)


def test_rate_estimator_ignores_a_short_frame():
    est = M.RateEstimator()
    assert est.rate is None
    for n in (30, 30, 12, 30, 0):
        est.add(n)
    assert est.rate == 30.0
    for n in [25600] * 20:
        est.add(n)
    assert est.rate == 25600.0          # the window moved on


# -- SENSORS entries -----------------------------------------------------------------

ENTRIES = [
    {"match": "*/*vib*", "unit": "g", "group": 2},
    {"match": "ShotBlast/*", "rate": 25600, "rpm": 1480, "foundation": "flexible"},
    {"match": "ShotBlast/motor_vib", "bearing": BEARING_6205,
     "bands": {"low": [10, 1000], "high": [1000, 10000]}, "envelope_band": [2000, 5000]},
    {"match": "ShotBlast/oil_*", "unit": "degC"},
]


def test_validate_entries_normalises():
    got = M.validate_entries(ENTRIES)
    assert got[0]["unit"] == "g"
    assert got[1]["rate"] == 25600.0
    assert got[2]["bearing"] == bearing_factors(**BEARING_6205)
    assert got[2]["bands"] == {"low": (10.0, 1000.0), "high": (1000.0, 10000.0)}
    assert got[3]["unit"] == "°C"
    assert M.validate_entries(None) == []


@pytest.mark.parametrize("entry,words", [
    ({"rate": 10}, "match"),
    ({"match": "nomachine"}, "match"),
    ({"match": "a/b", "rate": -5}, "rate"),
    ({"match": "a/b", "rate": True}, "rate"),
    ({"match": "a/b", "rpm": float("nan")}, "rpm"),
    ({"match": "a/b", "unit": "parsec"}, "unknown"),
    ({"match": "a/b", "colour": "red"}, "unknown field"),
    ({"match": "a/b", "bands": {"x": [5, 1]}}, "bands.x"),
    ({"match": "a/b", "envelope_band": [1]}, "envelope_band"),
    ({"match": "a/b", "bearing": {"n_balls": 2, "ball_diameter": 1, "pitch_diameter": 5}},
     "n_balls"),
    ({"match": "a/b", "group": 3}, "group"),
    ({"match": "a/b", "foundation": "soft"}, "foundation"),
])
def test_bad_entries_are_refused_naming_the_field(entry, words):
    with pytest.raises(ValueError, match=words) as e:
        M.validate_entries([{"match": "x/y"}, entry])
    if "match" in entry:
        assert "SENSORS[1]" in str(e.value)


def test_match_entries_in_order_later_overrides():
    entries = M.validate_entries(ENTRIES + [{"match": "ShotBlast/motor_vib", "rpm": 1490}])
    got = M.match_entries(entries, "ShotBlast", "motor_vib")
    assert got["unit"] == "g" and got["rate"] == 25600.0 and got["rpm"] == 1490.0
    assert "bearing" in got
    assert M.match_entries(entries, "Press", "oil_temp") == {}
    assert M.match_entries(entries, "shotblast", "motor_vib")["unit"] == "g"   # */*vib*
    assert "rate" not in M.match_entries(entries, "shotblast", "motor_vib")   # case-sensitive


def test_resolve_precedence_config_daq_inferred_type():
    entries = M.validate_entries(ENTRIES)
    m = M.resolve("ShotBlast", "motor_vib", "VIB", entries,
                  reported={"rate": 51200, "unit": "m/s2", "rpm": 1000}, inferred_rate=30)
    assert (m.rate, m.unit, m.rpm) == (25600.0, "g", 1480.0)
    assert m.sources == {"rate": "config", "unit": "config", "rpm": "config",
                         "bearing": "config", "bands": "config", "envelope_band": "config",
                         "group": "config", "foundation": "config"}
    m = M.resolve("Press", "p1", "VIB", entries, reported={"rate": 51200, "unit": "m/s2"})
    assert (m.rate, m.unit, m.rpm) == (51200.0, "m/s²", None)
    assert m.sources == {"rate": "daq", "unit": "daq"}
    m = M.resolve("Press", "p1", "VIB", entries, inferred_rate=30)
    assert (m.rate, m.unit) == (30.0, "g")
    assert m.sources == {"rate": "inferred", "unit": "type"}
    assert M.resolve("Press", "t", "TEMP").unit == "°C"
    d = M.resolve("ShotBlast", "motor_vib", "VIB", entries).as_dict()
    assert d["envelope_band"] == [2000.0, 5000.0] and d["sources"]["rate"] == "config"
    with pytest.raises(ValueError, match="rate"):
        M.resolve("Press", "p1", "VIB", reported={"rate": "fast"})


def test_spectra_possible():
    assert M.spectra_possible(M.SensorMeta(rate=25600.0)) is None
    assert "legacy" in M.spectra_possible(M.SensorMeta(rate=30.0))
    assert "unknown" in M.spectra_possible(M.SensorMeta())


# -- ISO 10816-3 ----------------------------------------------------------------------

def test_zone_table():
    assert ISO.boundaries(1, "rigid") == (2.3, 4.5, 7.1)
    assert ISO.boundaries(1, "flexible") == (3.5, 7.1, 11.0)
    assert ISO.boundaries(2, "rigid") == (1.4, 2.8, 4.5)
    assert ISO.boundaries(2, "flexible") == (2.3, 4.5, 7.1)
    with pytest.raises(ValueError):
        ISO.boundaries(3, "rigid")


@pytest.mark.parametrize("v,zone", [(0.0, "A"), (1.39, "A"), (1.4, "B"), (2.79, "B"),
                                    (2.8, "C"), (4.49, "C"), (4.5, "D"), (50.0, "D")])
def test_zone_boundaries_belong_to_the_higher_zone(v, zone):
    assert ISO.zone(v, 2, "rigid") == zone


def test_zone_refuses_negative():
    with pytest.raises(ValueError):
        ISO.zone(-1.0)


def test_judge_the_50hz_tone():
    lines, fine = spectrum_of(tone(RATE, 4 * RATE, 50.0, 1.0), RATE)
    v = F.velocity_mm_s(fine, "g")
    assert v == pytest.approx(22.07, abs=0.02)
    j = ISO.judge(v, RATE, "g", group=1, foundation="flexible")
    assert j.judged and j.zone == "D" and j.reason is None
    assert j.meaning == ISO.MEANING["D"]
    j = ISO.judge(3.0, RATE, "g", group=1, foundation="flexible")
    assert j.zone == "A"


@pytest.mark.parametrize("rate,unit,words", [
    (30.0, "g", "legacy feed"),
    (2000.0, "g", "2560"),
    (None, "g", "sample rate unknown"),
    (RATE, None, "unit unknown"),
    (RATE, "°C", "temperature"),
    (RATE, "V", "voltage"),
    (RATE, "bogus", "unknown"),
])
def test_judge_refuses_and_says_why(rate, unit, words):
    j = ISO.judge(5.0, rate, unit)
    assert not j.judged and j.zone is None
    assert words in j.reason
    assert j.as_dict()["reason"] == j.reason


def test_judge_sensor_uses_meta_group_and_foundation():
    meta = M.SensorMeta(rate=RATE, unit="mm/s", group=1, foundation="rigid")
    assert ISO.judge_sensor(meta, 4.0).zone == "B"
    assert ISO.judge_sensor(M.SensorMeta(rate=RATE, unit="g"), 4.0).zone == "C"   # 2, rigid
    assert ISO.band_for_rpm(300) == (2.0, 1000.0) and ISO.band_for_rpm(1500) == (10.0, 1000.0)


# -- features -----------------------------------------------------------------------

def test_features_of_an_outer_race_defect():
    entries = M.validate_entries([
        {"match": "m/*", "rpm": 1500, "bearing": BEARING_6205, "bands": {"hf": [2000, 5000]}}])
    meta = M.resolve("m", "vib", "VIB", entries, reported={"rate": RATE})
    x = FaultSignal(RATE, "outer_race", rpm=1500, level=0.5, base=0.3, seed=1).read(4 * RATE)
    lines, fine = spectrum_of(x, RATE)
    env = envelope_spectrum_of(x, RATE, band=(2000, 5000))
    got = F.features(fine, meta, env)
    assert got["notes"] == []
    assert got["velocity_rms"] > 0 and got["iso"]["zone"] in "ABCD"
    f1, a1 = got["orders"]["1"]
    assert abs(f1 - 25.0) <= fine.df and a1 == pytest.approx(0.3 / math.sqrt(2), rel=0.05)
    bpfo = got["bearing"]["bpfo"][0]
    assert bpfo[0] == 1 and abs(bpfo[1] - 89.62) < 2 * env.df
    assert got["bearing"]["bpfo"][0][2] > 10 * got["bearing"]["ftf"][0][2]
    assert got["bands"]["hf"] > 0 and len(got["peaks"]) == 5


def test_features_say_why_when_inputs_are_missing():
    lines, fine = spectrum_of(tone(2000, 20000, 50.0), 2000)
    meta = M.SensorMeta(rate=2000.0, unit="g", bearing={"bpfo": 3.0})
    got = F.features(lines, meta)
    assert "velocity_rms" not in got and got["iso"]["zone"] is None
    assert any(n.startswith("velocity_rms:") and "2560" in n for n in got["notes"])
    assert any(n.startswith("orders:") for n in got["notes"])
    assert any(n.startswith("bearing:") for n in got["notes"])
    v = M.SensorMeta(rate=RATE, unit="mm/s")
    lines, fine = spectrum_of(tone(RATE, 2 * RATE, 100.0, 2.0), RATE)
    assert F.velocity_mm_s(fine, "mm/s") == pytest.approx(math.sqrt(2), rel=1e-3)
    assert F.features(fine, v)["velocity_rms"] == pytest.approx(math.sqrt(2), rel=1e-3)


def test_infer_rate_takes_numpy_integers_not_bools():
    import numpy as np
    assert M.infer_rate(np.int64(30)) == 30.0
    with pytest.raises(ValueError):
        M.infer_rate(True)
