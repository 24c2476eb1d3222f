"""The storage sections: DATABASE (the aggregate store: per-machine SQLite
files, or one shared PostgreSQL database) and DATA (the raw CSV log).
Checked once at load (:mod:`tsrmon.config`); paths are absolute by then
(resolved against the daemon's working directory)."""

import attrs

from tsrmon.config.checks import ConfigError, boolean, choice, integer, number, optional_string, string
from tsrmon.config.section import Section, setting


@attrs.frozen
class DatabaseSettings(Section):
    SECTION = "DATABASE"

    path: str = setting("PATH", "db", string, path=True)
    flush: float = setting("FLUSH", 10, number(0.1, 3600))
    minute_retention_days: int = setting("MINUTE_RETENTION_DAYS", 7, integer(1, 3650))
    # sqlite: PATH/<machine>.db (default, no service); postgresql: one shared
    # database reached through DSN (docs/scale-out.md).  PATH still holds the
    # spool and the side files of a PostgreSQL node.
    backend: str = setting("BACKEND", "sqlite", choice("sqlite", "postgresql"))
    dsn: str = setting("DSN", None, optional_string)

    @classmethod
    def from_yaml(cls, given, source=None, base_dir=None):
        # BACKEND and DSN are checked together at load, with the other keys.
        return super().from_yaml(given, source, base_dir).finish(source)

    def finish(self, source):
        if self.backend == "postgresql":
            if not self.dsn:
                raise ConfigError(source, "DATABASE.DSN", "required with DATABASE.BACKEND: postgresql "
                                  "(e.g. postgresql://tsrmon@db.example/tsrmon)")
            if not self.dsn.startswith(("postgresql://", "postgres://")) and "=" not in self.dsn:
                raise ConfigError(source, "DATABASE.DSN", "expected a postgresql:// URI or "
                                  "'key=value' connection string")
        elif self.dsn:
            raise ConfigError(source, "DATABASE.DSN", "only used with DATABASE.BACKEND: postgresql "
                              f"(BACKEND is {self.backend})")
        return self


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
    workers: int = setting("WORKERS", 2, integer(1, 16))
    idle_close: float = setting("IDLE_CLOSE", 60, number(1, 86400))
    write_behind_mb: int = setting("WRITE_BEHIND_MB", 8, integer(0, 1024))
