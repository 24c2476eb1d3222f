"""The storage sections: DATABASE (the per-machine SQLite files) and DATA
(the raw CSV log).  Checked once at load (:mod:`tsrmon.config`); paths are
absolute by then (resolved against the daemon's working directory)."""

import attrs

from tsrmon.config.checks import boolean, choice, integer, number, string
from tsrmon.config.section import Section, setting


@attrs.frozen
class DatabaseSettings(Section):
    SECTION = "DATABASE"

    path: str = setting("PATH", "db", string, path=True)
    flush: float = setting("FLUSH", 10, number(0.1, 3600))
    minute_retention_days: int = setting("MINUTE_RETENTION_DAYS", 7, integer(1, 3650))


@attrs.frozen
class DataSettings(Section):
    """DATA: the raw CSV log (one file per machine, sensor and day)."""

    SECTION = "DATA"

    path: str = setting("PATH", "data", string, path=True)
    time_format: str = setting("TIME_FORMAT", "hms", choice("hms", "iso"))
    gzip_after_days: int = setting("GZIP_AFTER_DAYS", 0, integer(0))
    retention_days: int = setting("RETENTION_DAYS", 0, integer(0))
    min_free_mb: int = setting("MIN_FREE_MB", 1024, integer(0))
    enabled: bool = setting("ENABLED", True, boolean)
    writer: str = setting("WRITER", "process", choice("process", "thread"))
    idle_close: float = setting("IDLE_CLOSE", 60, number(1, 86400))
