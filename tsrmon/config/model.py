"""The effective configuration: one typed object of sections, each owned by
its room, built and checked once by :func:`build_config`.

``config.data.idle_close``, ``config.daq.max_connections_per_host``: a
section is a frozen attrs class (:mod:`tsrmon.config.section`) defined with
its room (``tsrmon/<room>/settings.py``) or, for the daemon-wide SERVER,
TIME and LOGGER, in :mod:`tsrmon.config.sections`.  This module imports the
sections; none of them imports it.
"""

import math
import os

import attrs
import yaml

from tsrmon.alarms.settings import AlarmSettings
from tsrmon.cluster.settings import ClusterSettings
from tsrmon.config.checks import ConfigError
from tsrmon.config.section import Section
from tsrmon.config.sections import LoggerSettings, ServerSettings, TimeSettings
from tsrmon.ingest.settings import DaqSettings
from tsrmon.live.settings import LiveSettings
from tsrmon.notify.settings import FcmSettings, NotifySettings
from tsrmon.spectra.settings import SpectraSettings, sensor_entries
from tsrmon.stats.settings import StatSettings
from tsrmon.store.settings import DatabaseSettings, DataSettings
from tsrmon.web.settings import AppSettings, AuthSettings

SECTION = "tsrmon.section"
BUILD = "tsrmon.build"


def _section(cls, build=None):
    """A Config field holding the section ``cls`` (YAML name ``cls.SECTION``)."""
    return attrs.field(factory=cls, metadata={SECTION: cls.SECTION, BUILD: build or cls.from_yaml})


@attrs.frozen
class Config:
    """The effective configuration (sections in the file's order).

    ``source`` is the file it came from (or None) and ``base_dir`` the
    directory that relative paths were resolved against; path settings
    hold absolute paths.  ``replace(data={"idle_close": 5})`` gives a
    changed copy.
    """

    server: ServerSettings = _section(ServerSettings)
    fcm: FcmSettings = _section(FcmSettings)
    logger: LoggerSettings = _section(LoggerSettings)
    stat: StatSettings = _section(StatSettings)
    time: TimeSettings = _section(TimeSettings)
    database: DatabaseSettings = _section(DatabaseSettings)
    data: DataSettings = _section(DataSettings)
    daq: DaqSettings = _section(DaqSettings)
    live: LiveSettings = _section(LiveSettings)
    auth: AuthSettings = _section(AuthSettings)
    notify: NotifySettings = _section(NotifySettings)
    app: AppSettings = _section(AppSettings)
    alarm: AlarmSettings = _section(AlarmSettings)
    # Issue 17: a list of metadata entries (analytics/meta.py), not keys.
    sensors: list = attrs.field(factory=list, metadata={SECTION: "SENSORS", BUILD: sensor_entries})
    spectra: SpectraSettings = _section(SpectraSettings)
    # Issue 16: the Redis that cluster nodes share (empty: a single node).
    cluster: ClusterSettings = _section(ClusterSettings)
    # Where it came from; not part of equality (same settings, same config).
    source: str | None = attrs.field(default=None, kw_only=True, eq=False)
    base_dir: str | None = attrs.field(default=None, kw_only=True, eq=False)

    @classmethod
    def sections(cls):
        """``{YAML section name: attrs field}`` in the file's order."""
        return _SECTIONS

    def stat_mode(self, sensor_type):
        """``ABS`` or ``REAL`` for a sensor type, and whether it was named."""
        return self.stat.mode(sensor_type)

    def to_yaml(self):
        out = {}
        for name, f in self.sections().items():
            value = getattr(self, f.name)
            out[name] = value if isinstance(value, list) else value.to_yaml_dict()
        return yaml.safe_dump(out, allow_unicode=True, sort_keys=False)

    def replace(self, **sections):
        """A copy with some sections changed: ``replace(data={"path": p},
        sensors=[...])``.  A mapping changes the named settings of that
        section (each checked as the file's value would be); a section
        object or a list (SENSORS) replaces it whole.  Cross-section checks
        (paths, listeners) run only at load."""
        fields = attrs.fields_dict(Config)
        changes = {}
        for name, value in sections.items():
            f = fields.get(name)
            if f is None or BUILD not in f.metadata:
                raise TypeError(f"Config has no section {name!r}")
            current = getattr(self, name)
            if isinstance(value, dict) and isinstance(current, Section):
                value = current.replace(self.source, self.base_dir, **value)
            elif isinstance(value, dict):  # STAT: the mapping as the file gives it
                value = f.metadata[BUILD](value, self.source, self.base_dir).finish(self.source)
            changes[name] = value
        return attrs.evolve(self, **changes)


_SECTIONS = {f.metadata[SECTION]: f for f in attrs.fields(Config) if SECTION in f.metadata}

# Checks across keys run once every section is built, in this order (a file
# with several problems names the same one first as before the split).
FINISH_ORDER = ("time", "alarm", "fcm", "server", "cluster")


def build_config(raw, source=None, base_dir=None):
    """Validate a parsed mapping and return the effective :class:`Config`."""
    base_dir = os.path.abspath(base_dir or os.getcwd())
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, None, "the top level must be a mapping of sections")
    for dotted, value in _non_finite(raw):
        # .nan / .inf never make sense here, whatever the key expects.
        raise ConfigError(source, dotted, f"expected a finite number, got {value!r}")
    fields = Config.sections()
    for name in raw:
        if name not in fields:
            raise ConfigError(source, str(name), f"unknown section (known: {', '.join(fields)})")
    built = {f.name: f.metadata[BUILD](raw.get(name), source, base_dir) for name, f in fields.items()}
    for name in FINISH_ORDER:
        built[name] = built[name].finish(source)
    config = Config(**built, source=source, base_dir=base_dir)
    _check_paths(config)
    return config


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


def _check_paths(config):
    """Folders we write must be creatable; refuse before any port opens."""
    for dotted, path in (("DATA.PATH", config.data.path), ("DATABASE.PATH", config.database.path),
                         ("LOGGER.PATH", config.logger.path)):
        probe = path
        while not os.path.exists(probe):
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        if not os.path.isdir(probe):
            raise ConfigError(config.source, dotted, f"unusable path {path!r}: {probe!r} is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ConfigError(config.source, dotted, f"unwritable path {path!r} (no write permission on {probe!r})")
