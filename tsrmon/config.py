"""Loading and validating the YAML configuration.

The file has upper-case sections as the deployed ``resources/config.yml`` has
them (``SERVER.PORT`` is ``SERVER: {PORT: ...}``).  Every key has a default,
so an empty file is a valid configuration, and the deployed file loads
unchanged.  Any problem is a :class:`ConfigError` whose text is one line that
names the file, the key and what is wrong.
"""

import copy
import ipaddress
import math
import os
import re
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

# Larger integers overflow C-level APIs (socket, SQLite) far from the file.
INT_MAX = 2**63 - 1


def _int(lo=None, hi=None):
    hi = INT_MAX if hi is None else hi

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
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"expected a finite number, got {v!r}")
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


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_WILDCARDS = ("", "0.0.0.0", "::")


def host_problem(v):
    """Why ``v`` cannot be a bind address, or None.

    Accepted: an IPv4 or IPv6 literal (``0.0.0.0``, ``::1``, ``fe80::1%eth0``)
    or a host name as RFC 1123 has it (dot-separated labels of letters,
    digits and inner hyphens, each at most 63, at most 253 in all).  Names
    are not resolved here: a name that does not resolve fails at start-up
    like a port in use.  Empty is refused: say ``0.0.0.0`` or ``::``.
    """
    if v == "":
        return "empty (use 0.0.0.0 for every IPv4 interface or :: for every interface)"
    try:
        ipaddress.ip_address(v)
        return None
    except ValueError:
        pass
    name = v[:-1] if v.endswith(".") else v
    labels = name.split(".")
    if ":" in v:
        return f"{v!r} is not an IPv6 address (write it without brackets, e.g. ::1)"
    if all(re.fullmatch(r"[0-9]+", label) for label in labels):
        return f"{v!r} is not an IPv4 address"
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return (f"{v!r} is neither an IP address nor a host name (RFC 1123: labels of "
                f"letters, digits and inner '-', at most 63 each, separated by '.')")
    return None


def _host(v):
    _str(v)
    problem = host_problem(v)
    if problem:
        raise ValueError(problem)
    return v


class _NoReactor:
    """Stands in for the reactor while an endpoint description is parsed:
    building an endpoint never touches it; only ``listen`` would."""


def parse_endpoint(description):
    """Check a Twisted server endpoint description without listening.

    Returns ``(kind, where)`` for overlap checks: ``("tcp", (port,
    interface))``, ``("systemd", index or name)``, ``("unix", path)`` or
    ``(kind, description)``.  Raises ValueError naming the problem.
    ``systemd:`` descriptions are checked without looking up the inherited
    descriptors, so ``check-config`` accepts them outside socket activation.
    """
    from twisted.internet import endpoints

    try:
        args, kw = endpoints._parse(description)
    except Exception as e:  # the tokenizer's own errors
        raise ValueError(f"{description!r} is not an endpoint description ({e})") from None
    kind = args[0] if args and args[0] else ""
    if kind == "systemd":
        return "systemd", _check_systemd(description, args[1:], kw)
    try:
        endpoint = endpoints.serverFromString(_NoReactor(), description)
    except Exception as e:
        # ValueError (unknown type), TypeError (unknown or missing argument),
        # OSError (an ssl key file), ImportError (no TLS support)...
        text = str(e).replace("\n", " ") or type(e).__name__
        raise ValueError(f"{description!r} is not a usable endpoint description ({text})") from None
    if kind in ("tcp", "tcp6", "ssl"):
        port = getattr(endpoint, "_port", None)
        interface = getattr(endpoint, "_interface", "")
        if isinstance(port, int) and not 0 <= port <= 65535:
            raise ValueError(f"{description!r}: port must be 0..65535, got {port}")
        if interface and host_problem(interface):
            raise ValueError(f"{description!r}: interface {host_problem(interface)}")
        return "tcp", (port, interface if interface else ("::" if kind == "tcp6" else ""))
    if kind == "unix":
        return "unix", os.path.abspath(str(args[1]) if len(args) > 1 else str(kw.get("address")))
    return kind, description


def _check_systemd(description, args, kw):
    # Same rules as twisted.internet.endpoints' systemd parser, minus the
    # lookup of LISTEN_FDS (absent when the file is only being checked).
    names = ["domain", "index", "name"]
    given = dict(zip(names, args))
    if len(args) > len(names):
        raise ValueError(f"{description!r}: too many arguments")
    for k, v in kw.items():
        if k not in names or k in given:
            raise ValueError(f"{description!r}: unexpected argument {k!r} (systemd takes domain and index or name)")
        given[k] = v
    domain = given.get("domain")
    if domain not in ("INET", "INET6", "UNIX"):
        raise ValueError(f"{description!r}: domain must be INET, INET6 or UNIX, got {domain!r}")
    if ("index" in given) == ("name" in given):
        raise ValueError(f"{description!r}: give exactly one of index= or name=")
    if "index" in given:
        if not re.fullmatch(r"[0-9]+", given["index"]):
            raise ValueError(f"{description!r}: index must be a number, got {given['index']!r}")
        return ("index", int(given["index"]))
    return ("name", given["name"])


def _endpoint(v):
    if v is None:
        return None
    _str(v)
    parse_endpoint(v)
    return v


def _file_prefix(v):
    _str(v)
    if not v or "/" in v or "\0" in v or v in (".", ".."):
        raise ValueError(f"{v!r} is not usable as a file name prefix (non-empty, no '/')")
    return v


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
        "HOST": ("0.0.0.0", _host, False),
        "PORT": (8080, _port, False),
        "TCP_PORT": (8082, _port, False),
        "HTTP_ENDPOINT": (None, _endpoint, False),
        "TCP_ENDPOINT": (None, _endpoint, False),
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
        "NAME": ("tsrmon", _file_prefix, False),
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
        "IDLE_CLOSE": (60, _number(1, 86400), False),
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
    # SENSORS is special: a list of metadata entries (analytics/meta.py).
    "SENSORS": {},
    # Issue 17: spectra and features of sensors sampled at >= 1 kHz.
    "SPECTRA": {
        "ENABLED": (True, _bool, False),
        "LINES": (1600, _int(100, 25600), False),
        "MINUTE_DAYS": (7, _int(1, 3650), False),
        "HOUR_DAYS": (365, _int(1, 36500), False),
        "PEAKS": (5, _int(0, 100), False),
        "BLOCK": ("pow2", _choice("pow2", "second"), False),
        "ENVELOPE": (True, _bool, False),
        "ENVELOPE_FMAX": (500, _number(1, 100000), False),
        "THREAD": (True, _bool, False),
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


def _check_sensors(source, raw):
    """``SENSORS``: a list of ``{match: "machine/sensor glob", rate, unit,
    rpm, bearing, bands, envelope_band, group, foundation}`` entries, checked
    and normalised by ``analytics.meta.validate_entries``."""
    from tsrmon.analytics.meta import validate_entries

    try:
        return validate_entries(raw)
    except ValueError as e:
        # The text names the entry and field: "SENSORS[2]: rate must be ...".
        text = str(e)
        key, _, problem = text.partition(": ")
        if not key.startswith("SENSORS"):
            key, problem = "SENSORS", text
        raise ConfigError(source, key, problem) from None


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
    for dotted, value in _non_finite(raw):
        # .nan / .inf never make sense here, whatever the key expects.
        raise ConfigError(source, dotted, f"expected a finite number, got {value!r}")
    for section in raw:
        if section not in SCHEMA:
            raise ConfigError(source, str(section), f"unknown section (known: {', '.join(SCHEMA)})")
    for section, keys in SCHEMA.items():
        given = raw.get(section)
        if section == "STAT":
            cfg["STAT"] = _check_stat(source, given)
            continue
        if section == "SENSORS":
            cfg["SENSORS"] = _check_sensors(source, given)
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
    _check_notify(cfg)
    _check_listeners(cfg)
    _check_paths(cfg)
    return cfg


def _non_finite(value, path="", seen=None):
    """(dotted key, value) of every NaN or infinity in a parsed document."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path or "<top level>", value
    elif isinstance(value, (dict, list)):
        seen = set() if seen is None else seen
        if id(value) in seen:  # YAML aliases may share (or nest) a container
            return
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            sub = (f"{path}.{k}" if path else str(k)) if isinstance(value, dict) else f"{path}[{k}]"
            yield from _non_finite(v, sub, seen)


def _check_notify(cfg):
    # The notifier checks these when it is built, which is after the folders
    # exist; checking here refuses the file before anything is created.
    from tsrmon.notify.fcm import topic_problem
    from tsrmon.notify.service import _check_template

    _check_template(cfg.source, "FCM.TITLE", cfg["FCM"]["TITLE"])
    _check_template(cfg.source, "FCM.BODY", cfg["FCM"]["BODY"])
    topic = cfg["FCM"]["TOPIC"]
    if topic is not None and topic_problem(topic):
        raise ConfigError(cfg.source, "FCM.TOPIC", f"{topic!r}: {topic_problem(topic)}")


def listen_addresses(cfg):
    """The two listeners as ``(key, kind, where)``: the key that sets each,
    and what :func:`parse_endpoint` says about it."""
    server = cfg["SERVER"]
    out = []
    for endpoint_key, port_key in (("HTTP_ENDPOINT", "PORT"), ("TCP_ENDPOINT", "TCP_PORT")):
        if server[endpoint_key]:
            kind, where = parse_endpoint(server[endpoint_key])
            out.append((f"SERVER.{endpoint_key}", kind, where))
        else:
            out.append((f"SERVER.{port_key}", "tcp", (server[port_key], server["HOST"])))
    return out


def _check_listeners(cfg):
    """HTTP and DAQ must not ask for the same socket (the second bind would
    fail, or both would adopt one systemd socket)."""
    (key_a, kind_a, a), (key_b, kind_b, b) = listen_addresses(cfg)
    if kind_a != kind_b:
        return
    if kind_a == "tcp":
        (port_a, host_a), (port_b, host_b) = a, b
        same_host = host_a == host_b or host_a in _WILDCARDS or host_b in _WILDCARDS
        if port_a and port_a == port_b and same_host:
            raise ConfigError(cfg.source, key_b, f"port {port_b} is also the HTTP port ({key_a}) on the "
                              f"same host; the HTTP and DAQ listeners need different ports")
    elif a == b and kind_a in ("systemd", "unix"):
        raise ConfigError(cfg.source, key_b, f"the same socket as {key_a}; the HTTP and DAQ listeners "
                          f"need different sockets")


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
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(path, None, f"cannot read configuration: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(path, None, f"not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} "
                          f"(save the file as UTF-8)") from None
    try:
        raw = yaml.load(text, Loader=StrictLoader)
    except DuplicateKeyError as e:
        raise ConfigError(path, e.key, e.problem) from None
    except yaml.YAMLError as e:
        raise ConfigError(path, None, f"invalid YAML{_yaml_where(e, text)}: {_yaml_problem(e)}") from None
    return build_config(raw, path, base_dir)


def _yaml_where(e, text):
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        return f" at line {mark.line + 1}"
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow
        return f" at line {text.count(chr(10), 0, e.position) + 1}"
    return ""


def _yaml_problem(e):
    if isinstance(e, yaml.reader.ReaderError):
        code = e.character if isinstance(e.character, int) else ord(e.character)
        text = f"control character U+{code:04X} is not allowed in YAML"
    else:
        text = getattr(e, "problem", None) or str(e)
    return " ".join(str(text).split())  # one line, whatever the parser said


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key, problem):
        super().__init__(problem)
        self.key = key
        self.problem = problem


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    PyYAML keeps the last value silently: a second ``SERVER:`` section
    replaced the first whole (its HOST fell back to 0.0.0.0).  The refusal
    names the dotted key and both lines.  ``<<`` merge keys may still be
    overridden by the mapping's own keys, as YAML intends.
    """

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        self._refuse_duplicates(node, "", set())
        return self.construct_document(node)

    def _refuse_duplicates(self, node, path, seen_nodes):
        if id(node) in seen_nodes:  # an alias met again (or a recursive one)
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = None
                if isinstance(key_node, yaml.ScalarNode):
                    try:
                        key = self.construct_object(key_node)
                        hash(key)
                    except Exception:
                        key = None
                dotted = f"{path}.{key}" if path else str(key)
                if key is not None:
                    if key in first:
                        what = "section" if not path else "key"
                        raise DuplicateKeyError(dotted, (
                            f"duplicate {what} at line {key_node.start_mark.line + 1} (first at line "
                            f"{first[key] + 1}); YAML would silently keep only the last one"))
                    first[key] = key_node.start_mark.line
                self._refuse_duplicates(value_node, dotted, seen_nodes)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._refuse_duplicates(item, f"{path}[{i}]", seen_nodes)


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
