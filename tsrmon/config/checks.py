"""Leaf validation helpers of the configuration: :class:`ConfigError` and the
value checks every section uses.

Each check takes a value as YAML gave it and returns the normalised value or
raises ValueError with the problem text; the section machinery
(:mod:`tsrmon.config.section`) turns that into a one-line ConfigError naming
the file and the key.  This module imports no other tsrmon module but
``tsrmon.names``, so every room's settings module may import it.
"""

import ipaddress
import math
import os
import re
import zoneinfo

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
    if tz and zone_exists(tz):
        return tz
    try:
        with open("/etc/timezone", encoding="utf-8") as f:
            name = f.read().strip()
        if zone_exists(name):
            return name
    except OSError:
        pass
    try:
        target = os.path.realpath("/etc/localtime")
        marker = "zoneinfo/"
        if marker in target:
            name = target.split(marker, 1)[1]
            if zone_exists(name):
                return name
    except OSError:
        pass
    return "UTC"


def zone_exists(name):
    try:
        zoneinfo.ZoneInfo(name)
        return True
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False


# --- checks: each takes (value) and returns the normalised value or raises
# ValueError with the problem text.

# Larger integers overflow C-level APIs (socket, SQLite) far from the file.
INT_MAX = 2**63 - 1


def integer(lo=None, hi=None):
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


def number(lo=None, hi=None):
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


def string(v):
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {type(v).__name__} {v!r}")
    return v


def optional_string(v):
    return None if v is None else string(v)


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
WILDCARDS = ("", "0.0.0.0", "::")


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


def host(v):
    string(v)
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


def endpoint(v):
    if v is None:
        return None
    string(v)
    parse_endpoint(v)
    return v


def file_prefix(v):
    string(v)
    if not v or "/" in v or "\0" in v or v in (".", ".."):
        raise ValueError(f"{v!r} is not usable as a file name prefix (non-empty, no '/')")
    return v


def port(v):
    return integer(0, 65535)(v)


def string_list(v):
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"expected a list of strings, got {v!r}")
    return list(v)


def cidr_list(v):
    out = string_list(v)
    for item in out:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network (CIDR)") from None
    return out


def name_list(v):
    out = string_list(v)
    for item in out:
        if not is_valid_name(item):
            raise ValueError(f"{item!r} is not a valid machine name")
    return out


def string_map(v):
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise ValueError(f"expected a mapping of strings to strings, got {v!r}")
    return dict(v)


def zone(v):
    if v is None:
        return None
    string(v)
    if not zone_exists(v):
        raise ValueError(f"unknown time zone {v!r} (expected an IANA name such as Asia/Seoul)")
    return v


def log_level(v):
    string(v)
    if v.lower() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {v!r} (one of {', '.join(LOG_LEVELS)})")
    return v.lower()


def choice(*choices):
    def check(v):
        string(v)
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {v!r}")
        return v
    return check


def any_list(v):
    if not isinstance(v, list):
        raise ValueError(f"expected a list, got {type(v).__name__}")
    return list(v)


def boolean(v):
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v
