"""The statistics room's section, STAT: per sensor type, whether the mean is
of |x| (ABS) or of x (REAL).  Free keys (any sensor type), so not a
:class:`tsrmon.config.section.Section`; checked once at load."""

import attrs

from tsrmon.config.checks import STAT_MODES, ConfigError

DEFAULT_STAT = {"VIB": "ABS", "TEMP": "REAL", "DEFAULT": "REAL"}


@attrs.frozen
class StatSettings:
    SECTION = "STAT"

    modes: dict = attrs.field(factory=lambda: dict(DEFAULT_STAT))

    @classmethod
    def from_yaml(cls, raw, source=None, base_dir=None):
        stat = dict(DEFAULT_STAT)
        if raw is None:
            return cls(stat)
        if not isinstance(raw, dict):
            raise ConfigError(source, "STAT", f"expected a mapping of sensor type to ABS or REAL, got {raw!r}")
        for k, v in raw.items():
            if not isinstance(k, str) or not k:
                raise ConfigError(source, f"STAT.{k}", "sensor type must be a non-empty string")
            if v not in STAT_MODES:
                raise ConfigError(source, f"STAT.{k}", f"unknown STAT mode {v!r} (expected ABS or REAL)")
            stat[k] = v
        return cls(stat)

    def mode(self, sensor_type):
        """``ABS`` or ``REAL`` for a sensor type, and whether it was named."""
        if sensor_type != "DEFAULT" and sensor_type in self.modes:
            return self.modes[sensor_type], True
        return self.modes["DEFAULT"], False

    def finish(self, source):
        return self

    def to_yaml_dict(self):
        return dict(self.modes)
