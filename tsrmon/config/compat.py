"""TRANSITIONAL: the old dict-style access to the typed configuration.

Removed once every caller reads attributes (``config.data.idle_close``
instead of ``config["DATA"]["IDLE_CLOSE"]``).  Until then:

- ``config["DATA"]`` is the section, ``"DATA" in config``, ``config.get``,
  iteration and ``items()`` over the section names, ``config.key("DATA.PATH")``;
- a section answers ``section["IDLE_CLOSE"]``, ``.get``, ``in``, iteration
  over its YAML keys, ``keys()``/``items()``/``values()``;
- item assignment (``config["DATA"]["IDLE_CLOSE"] = 5.0``,
  ``config["DAQ"].update(...)``, ``config["SENSORS"] = [...]``) still
  works on these frozen objects, for tests and ``demo_config``: the
  supported way is ``config.replace(data={"idle_close": 5.0})``;
- ``SCHEMA`` mirrors the old table ``{section: {KEY: (default, check,
  is_path)}}`` for code that asked which keys exist.

Nothing here is used by the typed API itself.  Leaf module: no imports.
"""


_NAMES = {}  # class -> {YAML name: attribute name}


def _names(cls, table):
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = {key: f.name for key, f in table().items()}
    return names


class SectionCompat:
    """Item access to a section by its YAML keys (``section["PATH"]``)."""

    __slots__ = ()

    def _field_name(self, key):
        return _names(type(self), self.settings)[key]  # KeyError as a dict's

    def __getitem__(self, key):
        # On hot paths until they read attributes: one dict lookup, one getattr.
        names = _NAMES.get(type(self)) or _names(type(self), self.settings)
        return getattr(self, names[key])

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key):
        return key in self.settings()

    def __iter__(self):
        return iter(self.settings())

    def __len__(self):
        return len(self.settings())

    def keys(self):
        return list(self.settings())

    def values(self):
        return [self[k] for k in self.settings()]

    def items(self):
        return [(k, self[k]) for k in self.settings()]

    def __setitem__(self, key, value):
        # Bypasses the frozen class on purpose, unchecked (as the dict was).
        object.__setattr__(self, self._field_name(key), value)

    def update(self, other=(), **kw):
        for key, value in dict(other, **kw).items():
            self[key] = value


class ConfigCompat:
    """Item access to the whole configuration by section name."""

    __slots__ = ()

    def _section_field(self, name):
        return self.sections()[name]  # KeyError as a dict's

    def __getitem__(self, name):
        names = _NAMES.get(type(self)) or _names(type(self), self.sections)
        return getattr(self, names[name])

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name):
        return name in self.sections()

    def __iter__(self):
        return iter(self.sections())

    def __len__(self):
        return len(self.sections())

    def keys(self):
        return list(self.sections())

    def values(self):
        return [self[k] for k in self.sections()]

    def items(self):
        return [(k, self[k]) for k in self.sections()]

    def key(self, dotted):
        """``config.key("DATA.PATH")`` = ``config["DATA"]["PATH"]``."""
        section, name = dotted.split(".", 1)
        return self[section][name]

    def __setitem__(self, name, value):
        """A mapping given for a section is checked as the file's would be
        (missing keys take their defaults); a section object is taken."""
        f = self._section_field(name)
        if not (isinstance(value, f.type) or f.type is list):
            value = f.metadata["tsrmon.build"](value, self.source, self.base_dir).finish(self.source)
        object.__setattr__(self, f.name, value)


def schema_table(config_class):
    """The old ``SCHEMA`` table, built from the section classes."""
    table = {}
    for name, f in config_class.sections().items():
        section_class = f.type if isinstance(f.type, type) else None
        settings = getattr(section_class, "settings", None)
        if settings is None:
            table[name] = {}  # STAT and SENSORS were free-form there too
            continue
        table[name] = {key: (_default(field), field.metadata["tsrmon.check"], field.metadata["tsrmon.path"])
                       for key, field in settings().items()}
    return table


def _default(field):
    factory = getattr(field.default, "factory", None)
    return factory() if factory is not None else field.default
