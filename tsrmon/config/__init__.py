"""Loading and validating the YAML configuration into typed sections.

The file has upper-case sections as the deployed ``resources/config.yml`` has
them (``SERVER.PORT`` is ``SERVER: {PORT: ...}``).  Every key has a default,
so an empty file is a valid configuration, and the deployed file loads
unchanged.  Any problem is a :class:`ConfigError` whose text is one line that
names the file, the key and what is wrong.  Rooms read attributes:
``config.data.idle_close`` (see docs/deploy.md, "Configuration in code").

Package layout, one job each:

- ``checks``: ConfigError and the value checks (leaf);
- ``section``: the attrs section base class and ``setting()`` (leaf);
- ``sections``: the daemon-wide SERVER, TIME, LOGGER sections;
- ``model``: :class:`Config` (sections from every room), ``build_config``
  and the checks across sections;
- ``strict_yaml`` / ``loader``: reading the file.

This ``__init__`` imports nothing: a room's settings module imports
``tsrmon.config.checks`` and ``tsrmon.config.section``, and ``model``
imports the rooms' settings modules; an eager ``__init__`` would turn that
into an import cycle.  The names below are loaded on first use (PEP 562).
"""

import importlib

_EXPORTS = {
    "ConfigError": "checks",
    "INT_MAX": "checks",
    "LOG_LEVELS": "checks",
    "STAT_MODES": "checks",
    "host_problem": "checks",
    "host_time_zone": "checks",
    "parse_endpoint": "checks",
    "Section": "section",
    "setting": "section",
    "listen_addresses": "sections",
    "Config": "model",
    "build_config": "model",
    "DuplicateKeyError": "strict_yaml",
    "StrictLoader": "strict_yaml",
    "default_config_path": "loader",
    "load_config": "loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{where}")
    return getattr(module, name)


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
