"""The spectra room's sections: SPECTRA (per-minute spectra, envelopes and
features of sensors sampled at >= 1 kHz) and SENSORS (the sensor metadata
entries the catalog resolves).  Checked once at load (:mod:`tsrmon.config`)."""

import attrs

from tsrmon.analytics.meta import validate_entries
from tsrmon.config.checks import ConfigError, boolean, choice, integer, number
from tsrmon.config.section import Section, setting


@attrs.frozen
class SpectraSettings(Section):
    SECTION = "SPECTRA"

    enabled: bool = setting("ENABLED", True, boolean)
    lines: int = setting("LINES", 1600, integer(100, 25600))
    minute_days: int = setting("MINUTE_DAYS", 7, integer(1, 3650))
    hour_days: int = setting("HOUR_DAYS", 365, integer(1, 36500))
    peaks: int = setting("PEAKS", 5, integer(0, 100))
    block: str = setting("BLOCK", "pow2", choice("pow2", "second"))
    envelope: bool = setting("ENVELOPE", True, boolean)
    envelope_fmax: float = setting("ENVELOPE_FMAX", 500, number(1, 100000))
    thread: bool = setting("THREAD", True, boolean)


def sensor_entries(raw, source=None, base_dir=None):
    """``SENSORS``: a list of ``{match: "machine/sensor glob", rate, unit,
    rpm, bearing, bands, envelope_band, group, foundation}`` entries, checked
    and normalised by :func:`tsrmon.analytics.meta.validate_entries`."""
    try:
        return validate_entries(raw)
    except ValueError as e:
        # The text names the entry and field: "SENSORS[2]: rate must be ...".
        text = str(e)
        key, _, problem = text.partition(": ")
        if not key.startswith("SENSORS"):
            key, problem = "SENSORS", text
        raise ConfigError(source, key, problem) from None
