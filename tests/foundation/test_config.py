import os
import textwrap

import pytest

from tsrmon.config import ConfigError, build_config, default_config_path, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(tmp_path, text, name="config.yml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(p)


def test_defaults_match_design_table(tmp_path):
    c = load_config(None, base_dir=str(tmp_path))
    assert c.server.host == "0.0.0.0"
    assert c.server.port == 8080
    assert c.server.tcp_port == 8082
    assert c.server.cors_origins == ["*"]
    assert c.fcm.timeout == 120
    assert c.fcm.topic == "anomaly"
    assert c.logger.level == "info"
    assert c.logger.retention_days == 30
    assert c.stat.modes == {"VIB": "ABS", "TEMP": "REAL", "DEFAULT": "REAL"}
    assert c.database.flush == 10
    assert c.data.time_format == "hms"
    assert c.data.min_free_mb == 1024
    assert c.daq.max_frame_bytes == 16777216
    assert c.daq.max_buffer_bytes == 67108864
    assert c.daq.max_connections == 256
    assert c.daq.max_pause == 5
    assert c.live.interval == 60 and c.live.cache == 60 and c.live.max_queue == 1000
    assert c.notify.max_per_hour == 60
    assert c.time.zone  # the host's zone, never empty
    # Paths resolve against the working directory, as the deployed server did.
    assert c.database.path == os.path.join(str(tmp_path), "db")
    assert c.data.path == os.path.join(str(tmp_path), "data")
    assert c.logger.path == os.path.join(str(tmp_path), "log")


def test_shipped_default_config_equals_code_defaults(tmp_path):
    shipped = load_config(os.path.join(ROOT, "etc", "tsrmon.yml"), base_dir=str(tmp_path))
    defaults = load_config(None, base_dir=str(tmp_path))
    assert shipped == defaults
    assert shipped.source.endswith("tsrmon.yml") and defaults.source is None


DEPLOYED = """\
SERVER:
  HOST: '0.0.0.0'
  PORT: 8080
  TCP_PORT: 8082
  CORS_ORIGINS: ['*']
FCM:
  CRED_PATH: resources/tsr-monitoring-app-c08931e07d1a.json
  TIMEOUT: 120
LOGGER:
  PATH: 'log'
STAT:
  VIB: ABS
  TEMP: REAL
DATABASE:
  PATH: 'db'
DATA:
  PATH: 'data'
"""


def test_deployed_config_loads_unchanged(tmp_path):
    (tmp_path / "resources").mkdir()
    path = write(tmp_path / "resources", DEPLOYED, "config.yml")
    c = load_config(path, base_dir=str(tmp_path))
    assert c.fcm.cred_path == str(tmp_path / "resources" / "tsr-monitoring-app-c08931e07d1a.json")
    assert c.stat_mode("VIB") == ("ABS", True)
    assert c.stat_mode("TEMP") == ("REAL", True)
    assert c.stat_mode("PRESSURE") == ("REAL", False)
    assert c.database.path == str(tmp_path / "db")


def test_default_config_path_prefers_env_then_deployed_layout(tmp_path, monkeypatch):
    monkeypatch.delenv("TSRMON_CONFIG", raising=False)
    assert default_config_path(str(tmp_path)) == str(tmp_path / "etc" / "tsrmon.yml")
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "config.yml").write_text(DEPLOYED)
    assert default_config_path(str(tmp_path)) == str(tmp_path / "resources" / "config.yml")
    monkeypatch.setenv("TSRMON_CONFIG", "/x/y.yml")
    assert default_config_path(str(tmp_path)) == "/x/y.yml"


@pytest.mark.parametrize("text, key, words", [
    ("SERVER:\n  PORTT: 1\n", "SERVER.PORTT", "unknown key"),
    ("SERVERS:\n  PORT: 1\n", "SERVERS", "unknown section"),
    ("SERVER:\n  PORT: '8080'\n", "SERVER.PORT", "expected an integer"),
    ("SERVER:\n  PORT: 70000\n", "SERVER.PORT", "at most 65535"),
    ("SERVER:\n  TCP_PORT: -1\n", "SERVER.TCP_PORT", "at least 0"),
    ("STAT:\n  VIB: MEAN\n", "STAT.VIB", "unknown STAT mode"),
    ("TIME:\n  ZONE: Mars/Olympus\n", "TIME.ZONE", "unknown time zone"),
    ("DATABASE:\n  FLUSH: fast\n", "DATABASE.FLUSH", "expected a number"),
    ("DAQ:\n  ALLOW: [not-a-cidr]\n", "DAQ.ALLOW", "not an IP network"),
    ("DAQ:\n  MACHINES: ['../x']\n", "DAQ.MACHINES", "not a valid machine name"),
    ("LOGGER:\n  LEVEL: chatty\n", "LOGGER.LEVEL", "unknown log level"),
    ("NOTIFY:\n  WEBHOOKS: [ftp://x]\n", "NOTIFY.WEBHOOKS", "not an http(s) URL"),
    ("DATABASE:\n  FLUSH: .nan\n", "DATABASE.FLUSH", "finite number"),
    ("SERVER:\n  HOST: 'not a host!'\n", "SERVER.HOST", "neither an IP address nor a host name"),
    ("SERVER:\n  TCP_ENDPOINT: 'garbage:foo'\n", "SERVER.TCP_ENDPOINT", "Unknown endpoint type"),
    ("SERVER:\n  PORT: 1\nSERVER:\n  PORT: 2\n", "SERVER", "duplicate section at line 3"),
    ("SERVER:\n  PORT: 9000\n  TCP_PORT: 9000\n", "SERVER.TCP_PORT", "also the HTTP port"),
])
def test_bad_configuration_is_one_line_naming_file_and_key(tmp_path, text, key, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, base_dir=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(path + ": " + key + ": ")
    assert words in message


def test_unreadable_path_is_refused(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    path = write(tmp_path, f"DATA:\n  PATH: {blocker}/sub\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, base_dir=str(tmp_path))
    assert "DATA.PATH: unusable path" in str(info.value)


def test_unwritable_path_is_refused(tmp_path):
    if os.geteuid() == 0:
        # root writes anywhere; use a path below a file instead (covered above)
        locked = tmp_path / "ro"
        locked.write_text("")
        path = write(tmp_path, f"DATABASE:\n  PATH: {locked}/db\n")
    else:
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        path = write(tmp_path, f"DATABASE:\n  PATH: {locked}/db\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, base_dir=str(tmp_path))
    assert "DATABASE.PATH" in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.yml"))
    assert "cannot read configuration" in str(info.value)
    path = write(tmp_path, "SERVER: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "invalid YAML at line" in str(info.value)


def test_stat_default_is_reserved_and_overridable():
    c = build_config({"STAT": {"DEFAULT": "ABS", "PRESSURE": "REAL"}}, base_dir="/tmp")
    assert c.stat_mode("UNKNOWN") == ("ABS", False)
    assert c.stat_mode("PRESSURE") == ("REAL", True)
    assert c.stat_mode("DEFAULT") == ("ABS", False)


def test_check_config_command_prints_effective_config_or_error(tmp_path, capsys):
    from tsrmon.cli import main

    good = write(tmp_path, "SERVER:\n  PORT: 9000\n")
    assert main(["check-config", good]) == 0
    out = capsys.readouterr().out
    assert "PORT: 9000" in out and "TCP_PORT: 8082" in out
    bad = write(tmp_path, "SERVER:\n  PORT: 99999\n", "bad.yml")
    assert main(["check-config", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tsrmon: {bad}: SERVER.PORT: must be at most 65535, got 99999"


def test_bad_alarm_rule_is_refused_naming_it(tmp_path):
    path = write(tmp_path, "ALARM:\n  RULES:\n    - name: hot\n      metric: loudness\n      above: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, base_dir=str(tmp_path))
    assert "ALARM.RULES[0] (hot)" in str(info.value)


def test_bad_webhook_field_is_refused_at_load(tmp_path):
    path = write(tmp_path, "NOTIFY:\n  WEBHOOKS:\n    - url: http://127.0.0.1:9/hook\n      retries: many\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, base_dir=str(tmp_path))
    assert "NOTIFY.WEBHOOKS" in str(info.value) and "retries" in str(info.value)


def test_sections_are_frozen_typed_objects_checked_once(tmp_path):
    import attrs

    c = build_config({"DATA": {"IDLE_CLOSE": 5}, "DAQ": {"MAX_CONNECTIONS_PER_HOST": 3}}, base_dir=str(tmp_path))
    assert c.data.idle_close == 5.0 and isinstance(c.data.idle_close, float)
    assert c.daq.max_connections_per_host == 3
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        c.data.idle_close = 1.0
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        c.data = None
    # Built-in rules are parsed once, at load.
    assert {r.name for r in c.alarm.parsed} >= {"daq-silent"}


def test_replace_checks_values_as_the_file_would(tmp_path):
    c = build_config({}, base_dir=str(tmp_path))
    d = c.replace(data={"idle_close": 5, "path": "elsewhere"}, sensors=[])
    assert d.data.idle_close == 5.0 and d.data.path == str(tmp_path / "elsewhere")
    assert c.data.idle_close == 60  # the original is untouched
    with pytest.raises(ConfigError) as info:
        c.replace(data={"idle_close": 0.5})
    assert "DATA.IDLE_CLOSE: must be at least 1, got 0.5" in str(info.value)
    with pytest.raises(TypeError):
        c.replace(data={"idle_closed": 5})
    with pytest.raises(TypeError):
        c.replace(datas={"idle_close": 5})
    assert c.replace(stat={"PRESSURE": "ABS"}).stat_mode("PRESSURE") == ("ABS", True)
    # finish() runs again: a replaced alarm rule list is parsed and checked.
    with pytest.raises(ConfigError) as info:
        c.replace(alarm={"rules": [{"name": "hot", "metric": "loudness", "above": 3}]})
    assert "ALARM.RULES[0] (hot)" in str(info.value)


def test_to_yaml_round_trips(tmp_path):
    c = build_config({"SERVER": {"PORT": 9000}, "STAT": {"PRESSURE": "ABS"}, "TIME": {"ZONE": "Asia/Seoul"},
                      "SENSORS": [{"match": "M/*", "unit": "g"}]}, base_dir=str(tmp_path))
    path = write(tmp_path, c.to_yaml(), "effective.yml")
    again = load_config(path, base_dir=str(tmp_path))
    assert again == c
    assert again.server.port == 9000 and again.stat_mode("PRESSURE") == ("ABS", True)


def test_section_classes_live_with_their_rooms():
    from tsrmon.config.model import Config

    owners = {name: f.type.__module__ for name, f in Config.sections().items() if f.type is not list}
    assert owners["ALARM"] == "tsrmon.alarms.settings"
    assert owners["FCM"] == owners["NOTIFY"] == "tsrmon.notify.settings"
    assert owners["SPECTRA"] == "tsrmon.spectra.settings"
    assert owners["DAQ"] == "tsrmon.ingest.settings"
    assert owners["DATA"] == owners["DATABASE"] == "tsrmon.store.settings"
    assert owners["SERVER"] == owners["TIME"] == owners["LOGGER"] == "tsrmon.config.sections"
