import pytest

from tsrmon.alarms.rules import (BUILTIN_KINDS, ISO_10816_3, parse_duration, parse_rules, render,
                                 _Bad)
from tsrmon.config import ConfigError

from tests.alarms.conftest import make_config


def by_name(rules):
    return {r.name: r for r in rules}


def test_threshold_rule_fields_and_builtins_on_by_default():
    rules = by_name(parse_rules([{
        "name": "bearing-temp", "machines": ["pump*"], "sensors": "temp?", "types": ["TEMP"],
        "metric": "mean", "window": "5 min", "above": 80, "clear": 75, "for": "2 min",
        "severity": "critical", "message": "{machine} {sensor} {value:.1f} > {level}",
    }], "cfg.yml"))
    rule = rules["bearing-temp"]
    assert (rule.window, rule.level, rule.clear, rule.for_s, rule.clear_for) == (300, 80.0, 75.0, 120.0, 120.0)
    assert rule.severity == "critical" and rule.condition == "above"
    assert rule.matches_machine("pump1") and not rule.matches_machine("fan1")
    assert rule.matches_sensor("temp1", "TEMP") and not rule.matches_sensor("temp1", "VIB")
    assert not rule.matches_sensor("temp12", "TEMP")
    assert rule.trips(80.5) and not rule.trips(80.0)
    assert rule.clears(74.9) and not rule.clears(76)
    assert set(BUILTIN_KINDS) <= set(rules)


def test_below_rule_and_builtin_overrides():
    rules = by_name(parse_rules([
        {"name": "low-pressure", "metric": "min", "below": 2.0, "clear": 2.5, "window": 10},
        {"builtin": "daq-silent", "after": "15 min", "severity": "critical"},
        {"builtin": "sensor-flatline", "enabled": False},
    ]))
    low = rules["low-pressure"]
    assert low.trips(1.9) and not low.trips(2.0) and low.clears(2.6) and not low.clears(2.4)
    assert rules["daq-silent"].level == 900.0 and rules["daq-silent"].severity == "critical"
    assert "sensor-flatline" not in rules
    assert "daq-rate-drop" in rules


def test_iso_10816_3_preset_expands_to_zone_rules():
    rules = by_name(parse_rules([
        {"name": "pump-vib", "preset": "iso10816-3", "group": 2, "foundation": "rigid",
         "sensors": "vel*"},
        {"name": "turbine-vib", "preset": "iso10816-3", "group": 1, "foundation": "flexible",
         "critical": 12.0, "info": True, "clear_ratio": 0.8},
    ]))
    ab, bc, cd = ISO_10816_3[(2, "rigid")]
    c, d = rules["pump-vib.zone-C"], rules["pump-vib.zone-D"]
    assert (c.level, c.severity, c.metric) == (bc, "warning", "rms")
    assert (d.level, d.severity) == (cd, "critical")
    assert c.clear == pytest.approx(bc * 0.9)
    assert "pump-vib.zone-B" not in rules
    ab1, bc1, _cd1 = ISO_10816_3[(1, "flexible")]
    assert rules["turbine-vib.zone-B"].level == ab1
    assert rules["turbine-vib.zone-C"].level == bc1
    assert rules["turbine-vib.zone-D"].level == 12.0
    assert rules["turbine-vib.zone-D"].clear == pytest.approx(12.0 * 0.8)


@pytest.mark.parametrize("entry, problem", [
    ({"name": "r", "metric": "median", "above": 1}, "unknown metric 'median'"),
    ({"name": "r", "metric": "rms", "above": 1, "window": "2 h"}, "window: 2 h is outside 1 s-1 h"),
    ({"name": "r", "metric": "rms", "above": 1, "window": 0}, "window"),
    ({"name": "r", "metric": "rms", "above": 5, "clear": 6}, "clear level 6 must not be above"),
    ({"name": "r", "metric": "rms", "below": 5, "clear": 4}, "clear level 4 must not be below"),
    ({"name": "r", "metric": "rms", "above": 1, "sensors": ["vib[1"]}, "bad glob 'vib[1'"),
    ({"name": "r", "metric": "rms", "above": 1, "machines": "a/b"}, "bad glob 'a/b'"),
    ({"name": "r", "preset": "iso2372", "group": 1, "foundation": "rigid"}, "unknown preset"),
    ({"name": "r", "preset": "iso10816-3", "group": 3, "foundation": "rigid"}, "group"),
    ({"name": "r", "metric": "rms", "above": 1, "below": 0}, "exactly one"),
    ({"name": "r", "metric": "rms", "above": "high"}, "above: expected a number"),
    ({"name": "r", "metric": "rms", "above": 1, "for": "soon"}, "for: expected a duration"),
    ({"name": "r", "metric": "rms", "above": 1, "severity": "fatal"}, "severity"),
    ({"name": "r", "metric": "rms", "above": 1, "message": "{machine"}, "message"),
    ({"name": "r", "metric": "rms", "above": 1, "message": "{password}"}, "unknown field {password}"),
    ({"name": "r", "metric": "rms", "above": 1, "treshold": 3}, "unknown key 'treshold'"),
    ({"name": "r", "metric": "rms", "above": 1, "enabled": "yes"}, "enabled"),
    ({"name": "daq-silent", "metric": "rms", "above": 1}, "built-in"),
    ({"builtin": "cpu-hot"}, "unknown builtin 'cpu-hot'"),
    ({"builtin": "daq-rate-drop", "below": 1.5}, "below"),
    ({"metric": "rms", "above": 1}, "needs a name"),
])
def test_bad_rule_is_refused_with_its_name(entry, problem):
    with pytest.raises(ConfigError) as info:
        parse_rules([{"name": "fine", "metric": "max", "above": 1}, entry], "/etc/tsrmon.yml")
    err = info.value
    label = entry.get("name") or entry.get("builtin") or "unnamed"
    assert err.key == f"ALARM.RULES[1] ({label})"
    assert problem in err.problem
    assert str(err).startswith("/etc/tsrmon.yml: ALARM.RULES[1]")


def test_duplicate_names_and_non_list_refused():
    with pytest.raises(ConfigError, match=r"ALARM.RULES\[1\] \(a\).*used twice"):
        parse_rules([{"name": "a", "metric": "max", "above": 1}, {"name": "a", "metric": "min", "below": 0}])
    with pytest.raises(ConfigError, match="expected a list"):
        parse_rules({"name": "a"})
    with pytest.raises(ConfigError, match=r"ALARM.RULES\[0\] \(unnamed\)"):
        parse_rules(["rms > 3"])


def test_durations():
    assert parse_duration("90", "x") == 90.0
    assert parse_duration("1.5 min", "x") == 90.0
    assert parse_duration("1h", "x") == 3600.0
    assert parse_duration(5, "x") == 5.0
    for bad in ("-1 s", "5 fortnights", True, None, "2 days"):
        with pytest.raises(_Bad):
            parse_duration(bad, "x")


def test_message_template_is_safe():
    assert render("{machine} {value:.3f} > {level}", {"machine": "m", "value": 2.0, "level": 1.5}) == "m 2.000 > 1.5"
    assert render("{nothing} {machine}", {"machine": "m"}) == "{nothing} m"


def test_rules_from_a_config_section(tmp_path):
    config = make_config(tmp_path, [{"name": "hot", "metric": "max", "above": 90}])
    rules = by_name(parse_rules(config.alarm.rules, config.source))
    assert by_name(config.alarm.parsed).keys() == rules.keys()  # parsed once at load
    assert rules["hot"].level == 90.0
