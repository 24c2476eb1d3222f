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
    assert c["SERVER"]["HOST"] == "0.0.0.0"
    assert c["SERVER"]["PORT"] == 8080
    assert c["SERVER"]["TCP_PORT"] == 8082
    assert c["SERVER"]["CORS_ORIGINS"] == ["*"]
    assert c["FCM"]["TIMEOUT"] == 120
    assert c["FCM"]["TOPIC"] == "anomaly"
    assert c["LOGGER"]["LEVEL"] == "info"
    assert c["LOGGER"]["RETENTION_DAYS"] == 30
    assert c["STAT"] == {"VIB": "ABS", "TEMP": "REAL", "DEFAULT": "REAL"}
    assert c["DATABASE"]["FLUSH"] == 10
    assert c["DATA"]["TIME_FORMAT"] == "hms"
    assert c["DATA"]["MIN_FREE_MB"] == 1024
    assert c["DAQ"]["MAX_FRAME_BYTES"] == 16777216
    assert c["DAQ"]["MAX_BUFFER_BYTES"] == 67108864
    assert c["DAQ"]["MAX_CONNECTIONS"] == 256
    assert c["DAQ"]["MAX_PAUSE"] == 5
    assert c["LIVE"]["INTERVAL"] == 60 and c["LIVE"]["CACHE"] == 60 and c["LIVE"]["MAX_QUEUE"] == 1000
    assert c["NOTIFY"]["MAX_PER_HOUR"] == 60
    assert c["TIME"]["ZONE"]  # the host's zone, never empty
    # Paths resolve against the working directory, as the deployed server did.
    assert c["DATABASE"]["PATH"] == os.path.join(str(tmp_path), "db")
    assert c["DATA"]["PATH"] == os.path.join(str(tmp_path), "data")
    assert c["LOGGER"]["PATH"] == os.path.join(str(tmp_path), "log")


def test_shipped_default_config_equals_code_defaults(tmp_path):
    shipped = load_config(os.path.join(ROOT, "etc", "tsrmon.yml"), base_dir=str(tmp_path))
    defaults = load_config(None, base_dir=str(tmp_path))
    assert dict(shipped) == dict(defaults)


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
    assert c["FCM"]["CRED_PATH"] == str(tmp_path / "resources" / "tsr-monitoring-app-c08931e07d1a.json")
    assert c.stat_mode("VIB") == ("ABS", True)
    assert c.stat_mode("TEMP") == ("REAL", True)
    assert c.stat_mode("PRESSURE") == ("REAL", False)
    assert c["DATABASE"]["PATH"] == str(tmp_path / "db")


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
