"""The machinery every configuration section shares.

A section is a frozen, slotted attrs class deriving from :class:`Section`
whose fields are declared with :func:`setting`: the field name is the key in
lower case (``config.data.idle_close``), the YAML key keeps its upper-case
spelling (``DATA: {IDLE_CLOSE: 60}``).  :meth:`Section.from_yaml` checks a
section's mapping once, when the file is loaded; a room reads attributes.

Leaf module: it imports only attrs and :mod:`tsrmon.config.checks`, so a room's
settings module can import it without importing the loader.
"""

import copy
import os

import attrs

from tsrmon.config.checks import ConfigError

# attrs field metadata: the YAML key, its check, whether it is a path.
KEY, CHECK, PATH = "tsrmon.key", "tsrmon.check", "tsrmon.path"
_SETTINGS = {}  # section class -> Section.settings()


def setting(key, default, check, *, path=False):
    """A section field read from the YAML key ``key`` and checked by
    ``check``; ``path=True`` resolves it against the daemon's working
    directory at load.  Mutable defaults are copied for each instance."""
    if isinstance(default, (list, dict)):
        default = attrs.Factory(lambda d=default: copy.deepcopy(d))
    return attrs.field(default=default, metadata={KEY: key, CHECK: check, PATH: path})


class Section:
    """Base of the attrs section classes; ``SECTION`` is the YAML name."""

    __slots__ = ()
    SECTION = None

    @classmethod
    def settings(cls):
        """``{YAML key: attrs field}`` in declaration order (built once per
        class: the transitional item access asks on every read)."""
        table = _SETTINGS.get(cls)
        if table is None:
            table = _SETTINGS[cls] = {f.metadata[KEY]: f for f in attrs.fields(cls) if KEY in f.metadata}
        return table

    @classmethod
    def from_yaml(cls, given, source=None, base_dir=None):
        """Check the section's mapping as the file gave it (None = absent)
        and return the section; raises :class:`ConfigError`."""
        name = cls.SECTION
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise ConfigError(source, name, f"expected a mapping, got {type(given).__name__}")
        fields = cls.settings()
        for k in given:
            if k not in fields:
                raise ConfigError(source, f"{name}.{k}", f"unknown key (known in {name}: {', '.join(fields)})")
        values = {}
        for key, f in fields.items():
            if key in given:
                values[f.name] = cls.check_value(key, given[key], source, base_dir)
            else:
                default = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
                values[f.name] = _resolve(f, default, base_dir)
        return cls(**values)

    @classmethod
    def check_value(cls, key, value, source=None, base_dir=None):
        """One YAML key's value checked (and a path resolved) as at load."""
        f = cls.settings()[key]
        try:
            value = f.metadata[CHECK](value)
        except ValueError as e:
            raise ConfigError(source, f"{cls.SECTION}.{key}", str(e)) from None
        return _resolve(f, value, base_dir)

    def finish(self, source):
        """Checks across the section's keys, run once every section is
        built; returns the section (or a completed copy).  Raises
        :class:`ConfigError`."""
        return self

    def to_yaml_dict(self):
        """``{YAML key: value}``, as ``show-config`` prints it."""
        return {key: getattr(self, f.name) for key, f in self.settings().items()}

    def replace(self, source=None, base_dir=None, **changes):
        """A copy with ``changes`` (field names, YAML-form values), each
        checked as the file's value would be, then :meth:`finish`."""
        by_name = {f.name: key for key, f in self.settings().items()}
        checked = {}
        for name, value in changes.items():
            if name not in by_name:
                raise TypeError(f"{type(self).__name__} has no setting {name!r}")
            checked[name] = self.check_value(by_name[name], value, source or "<replace>", base_dir)
        return attrs.evolve(self, **checked).finish(source or "<replace>")


def _resolve(field, value, base_dir):
    if field.metadata[PATH] and value is not None and base_dir is not None:
        value = os.path.normpath(os.path.join(base_dir, value))
    return value
