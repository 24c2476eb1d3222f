"""Loading and validating the YAML configuration.

The file has upper-case sections as the deployed ``resources/config.yml`` has
them (``SERVER.PORT`` is ``SERVER: {PORT: ...}``).  Every key has a default,
so an empty file is a valid configuration, and the deployed file loads
unchanged.  Any problem is a :class:`ConfigError` whose text is one line that
names the file, the key and what is wrong.
"""

import copy
import ipaddress
import os
import zoneinfo

import yaml

from tsrmon.names import is_valid_name

STAT_MODES = ("ABS", "REAL")
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


class ConfigError(Exception):
    """A configuration problem, worded as one line for the operator."""

    def __init__(self, source, key, problem):
        self.source = source
        self.key = key
        self.problem = problem
        where = source or "<defaults>"
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def host_time_zone():
    """The host's IANA zone name, or UTC when it cannot be found."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and _zone_exists(tz):
        return tz
    try:
        with open("/etc/timezone", encoding="utf-8") as f:
            name = f.read().strip()
        if _zone_exists(name):
            return name
    except OSError:
        pass
    try:
        target = os.path.realpath("/etc/localtime")
        marker = "zoneinfo/"
        if marker in target:
            name = target.split(marker, 1)[1]
            if _zone_exists(name):
                return name
    except OSError:
        pass
    return "UTC"


def _zone_exists(name):
    try:
        zoneinfo.ZoneInfo(name)
        return True
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False


# --- validators: each takes (value) and returns the normalised value or raises
# ValueError with the problem text.

def _int(lo=None, hi=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected an integer, got {type(v).__name__} {v!r}")
        if lo is not None and v < lo:
            raise ValueError(f"must be at least {lo}, got {v}")
        if hi is not None and v > hi:
            raise ValueError(f"must be at most {hi}, got {v}")
        return v
    return check


def _number(lo=None, hi=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"expected a number, got {type(v).__name__} {v!r}")
        if lo is not None and v < lo:
            raise ValueError(f"must be at least {lo}, got {v}")
        if hi is not None and v > hi:
            raise ValueError(f"must be at most {hi}, got {v}")
        return float(v)
    return check


def _str(v):
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {type(v).__name__} {v!r}")
    return v


def _opt_str(v):
    return None if v is None else _str(v)


def _port(v):
    return _int(0, 65535)(v)


def _str_list(v):
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"expected a list of strings, got {v!r}")
    return list(v)


def _cidr_list(v):
    out = _str_list(v)
    for item in out:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network (CIDR)") from None
    return out


def _name_list(v):
    out = _str_list(v)
    for item in out:
        if not is_valid_name(item):
            raise ValueError(f"{item!r} is not a valid machine name")
    return out


def _str_map(v):
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise ValueError(f"expected a mapping of strings to strings, got {v!r}")
    return dict(v)


def _zone(v):
    if v is None:
        return None
    _str(v)
    if not _zone_exists(v):
        raise ValueError(f"unknown time zone {v!r} (expected an IANA name such as Asia/Seoul)")
    return v


def _level(v):
    _str(v)
    if v.lower() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {v!r} (one of {', '.join(LOG_LEVELS)})")
    return v.lower()


def _choice(*choices):
    def check(v):
        _str(v)
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {v!r}")
        return v
    return check


def _list(v):
    if not isinstance(v, list):
        raise ValueError(f"expected a list, got {type(v).__name__}")
    return list(v)


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _webhooks(v):
    _list(v)
    out = []
    for i, hook in enumerate(v):
        if isinstance(hook, str):
            hook = {"url": hook}
        if not isinstance(hook, dict) or not isinstance(hook.get("url"), str):
            raise ValueError(f"item {i}: expected a URL or a mapping with 'url'")
        if not hook["url"].startswith(("http://", "https://")):
            raise ValueError(f"item {i}: {hook['url']!r} is not an http(s) URL")
        out.append(dict(hook))
    # Every per-hook field (secret, timeout, retries, format...) is checked
    # here too, so a bad hook stops start-up like any other bad key.
    from tsrmon.notify.webhook import parse_webhooks

    parse_webhooks(out)
    return out


# Every key: (default, validator, is_path).  Paths resolve against the
# daemon's working directory when the configuration is loaded.
SCHEMA = {
    "SERVER": {
        "HOST": ("0.0.0.0", _str, False),
        "PORT": (8080, _port, False),
        "TCP_PORT": (8082, _port, False),
        "HTTP_ENDPOINT": (None, _opt_str, False),
        "TCP_ENDPOINT": (None, _opt_str, False),
        "CORS_ORIGINS": (["*"], _str_list, False),
        "SHUTDOWN_TIMEOUT": (30, _number(0.1, 3600), False),
    },
    "FCM": {
        "CRED_PATH": ("resources/fcm-credentials.json", _str, True),
        "TIMEOUT": (120, _number(0), False),
        "TOPIC": ("anomaly", _opt_str, False),
        "TOKENS": ([], _str_list, False),
        "TITLE": ("{machine} 이상치 감지", _str, False),
        "BODY": ("상세 정보 : {score}/{threshold}", _str, False),
    },
    "LOGGER": {
        "PATH": ("log", _str, True),
        "LEVEL": ("info", _level, False),
        "RETENTION_DAYS": (30, _int(0), False),
        "NAME": ("tsrmon", _str, False),
    },
    # STAT is special: any type name maps to a mode; see _check_stat.
    "STAT": {},
    "TIME": {
        "ZONE": (None, _zone, False),
    },
    "DATABASE": {
        "PATH": ("db", _str, True),
        "FLUSH": (10, _number(0.1, 3600), False),
        "MINUTE_RETENTION_DAYS": (7, _int(1, 3650), False),
    },
    "DATA": {
        "PATH": ("data", _str, True),
        "TIME_FORMAT": ("hms", _choice("hms", "iso"), False),
        "GZIP_AFTER_DAYS": (0, _int(0), False),
        "RETENTION_DAYS": (0, _int(0), False),
        "MIN_FREE_MB": (1024, _int(0), False),
        "ENABLED": (True, _bool, False),
        "WRITER": ("process", _choice("process", "thread"), False),
    },
    "DAQ": {
        "ALLOW": ([], _cidr_list, False),
        "MACHINES": ([], _name_list, False),
        "TOKENS": ({}, _str_map, False),
        "MAX_FRAME_BYTES": (16 * 1024 * 1024, _int(64), False),
        "MAX_BUFFER_BYTES": (64 * 1024 * 1024, _int(64), False),
        "MAX_CONNECTIONS": (256, _int(1), False),
        "MAX_MACHINES": (256, _int(1), False),
        "MAX_SENSORS": (64, _int(1), False),
        "MAX_PAUSE": (5, _number(0), False),
        "NAME_TIMEOUT": (10, _number(0.1, 3600), False),
        "MAX_CONNECTIONS_PER_HOST": (32, _int(1), False),
        "MAX_TOTAL_BUFFER_BYTES": (512 * 1024 * 1024, _int(64 * 1024), False),
        "MAX_SAMPLES_PER_FRAME": (2_000_000, _int(1), False),
    },
    "LIVE": {
        "INTERVAL": (60, _number(1, 3600), False),
        "CACHE": (60, _int(0, 100000), False),
        "MAX_QUEUE": (1000, _int(1), False),
        "PING_INTERVAL": (25, _number(0.05, 3600), False),
        "PING_TIMEOUT": (20, _number(0.05, 3600), False),
    },
    "AUTH": {
        "API_TOKENS": ([], _str_list, False),
    },
    "NOTIFY": {
        "WEBHOOKS": ([], _webhooks, False),
        "MAX_PER_HOUR": (60, _int(0), False),
    },
    "APP": {
        "MACHINE_ALIASES": ({}, _str_map, False),
    },
    "ALARM": {
        "RULES": ([], _list, False),
    },
}

DEFAULT_STAT = {"VIB": "ABS", "TEMP": "REAL", "DEFAULT": "REAL"}



class Config(dict):
    """The effective configuration: ``config["SERVER"]["PORT"]``.

    ``source`` is the file it came from (or None) and ``base_dir`` the
    directory that relative paths were resolved against.  Path keys hold
    absolute paths.
    """

    source = None
    base_dir = None

    def key(self, dotted):
        section, name = dotted.split(".", 1)
        return self[section][name]

    def stat_mode(self, sensor_type):
        """``ABS`` or ``REAL`` for a sensor type, and whether it was named."""
        stat = self["STAT"]
        if sensor_type != "DEFAULT" and sensor_type in stat:
            return stat[sensor_type], True
        return stat["DEFAULT"], False

    def to_yaml(self):
        return yaml.safe_dump(
            {k: v for k, v in self.items()}, allow_unicode=True, sort_keys=False
        )


def _check_stat(source, raw):
    stat = dict(DEFAULT_STAT)
    if raw is None:
        return stat
    if not isinstance(raw, dict):
        raise ConfigError(source, "STAT", f"expected a mapping of sensor type to ABS or REAL, got {raw!r}")
    for k, v in raw.items():
        if not isinstance(k, str) or not k:
            raise ConfigError(source, f"STAT.{k}", "sensor type must be a non-empty string")
        if v not in STAT_MODES:
            raise ConfigError(source, f"STAT.{k}", f"unknown STAT mode {v!r} (expected ABS or REAL)")
        stat[k] = v
    return stat


def build_config(raw, source=None, base_dir=None):
    """Validate a parsed mapping and return the effective :class:`Config`."""
    base_dir = os.path.abspath(base_dir or os.getcwd())
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, None, "the top level must be a mapping of sections")
    cfg = Config()
    cfg.source = source
    cfg.base_dir = base_dir
    for section in raw:
        if section not in SCHEMA:
            raise ConfigError(source, str(section), f"unknown section (known: {', '.join(SCHEMA)})")
    for section, keys in SCHEMA.items():
        given = raw.get(section)
        if section == "STAT":
            cfg["STAT"] = _check_stat(source, given)
            continue
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise ConfigError(source, section, f"expected a mapping, got {type(given).__name__}")
        for k in given:
            if k not in keys:
                raise ConfigError(source, f"{section}.{k}", f"unknown key (known in {section}: {', '.join(keys)})")
        out = {}
        for k, (default, check, is_path) in keys.items():
            dotted = f"{section}.{k}"
            if k in given:
                try:
                    value = check(given[k])
                except ValueError as e:
                    raise ConfigError(source, dotted, str(e)) from None
            else:
                value = copy.deepcopy(default)
            if is_path and value is not None:
                value = os.path.normpath(os.path.join(base_dir, value))
            out[k] = value
        cfg[section] = out
    if cfg["TIME"]["ZONE"] is None:
        cfg["TIME"]["ZONE"] = host_time_zone()
    # A bad alarm rule stops start-up (and a SIGHUP reload) like any bad key.
    # (Imported here: the rules module raises this module's ConfigError.)
    from tsrmon.alarms.rules import parse_rules

    parse_rules(cfg["ALARM"]["RULES"], source)
    _check_paths(cfg)
    return cfg


def _check_paths(cfg):
    """Folders we write must be creatable; refuse before any port opens."""
    for dotted in ("DATA.PATH", "DATABASE.PATH", "LOGGER.PATH"):
        path = cfg.key(dotted)
        probe = path
        while not os.path.exists(probe):
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        if not os.path.isdir(probe):
            raise ConfigError(cfg.source, dotted, f"unusable path {path!r}: {probe!r} is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ConfigError(cfg.source, dotted, f"unwritable path {path!r} (no write permission on {probe!r})")


def load_config(path=None, base_dir=None):
    """Read and validate a YAML file; ``path=None`` gives the defaults."""
    if path is None:
        return build_config({}, None, base_dir)
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, None, f"cannot read configuration: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(path, None, f"invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    return build_config(raw, path, base_dir)


def default_config_path(base_dir=None):
    """``TSRMON_CONFIG``, else ``resources/config.yml`` (the deployed layout)
    if present in the working directory, else ``etc/tsrmon.yml``."""
    env = os.environ.get("TSRMON_CONFIG")
    if env:
        return env
    base_dir = base_dir or os.getcwd()
    legacy = os.path.join(base_dir, "resources", "config.yml")
    if os.path.exists(legacy):
        return legacy
    return os.path.join(base_dir, "etc", "tsrmon.yml")
