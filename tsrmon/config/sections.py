"""The daemon-wide sections: SERVER (the two listeners and shutdown), TIME
(the zone of buckets and stored times) and LOGGER (the dated log files).

They belong to no single room of the data path: the composition
(``tsrmon.service``) reads SERVER, every room reads TIME, ``tsrmon.logs``
reads LOGGER.  Sections of a room live with the room (``tsrmon/<room>/settings.py``).
"""

import attrs

from tsrmon.config import checks
from tsrmon.config.checks import WILDCARDS, ConfigError, host_time_zone, parse_endpoint
from tsrmon.config.section import Section, setting


@attrs.frozen
class ServerSettings(Section):
    SECTION = "SERVER"

    host: str = setting("HOST", "0.0.0.0", checks.host)
    port: int = setting("PORT", 8080, checks.port)
    tcp_port: int = setting("TCP_PORT", 8082, checks.port)
    http_endpoint: str | None = setting("HTTP_ENDPOINT", None, checks.endpoint)
    tcp_endpoint: str | None = setting("TCP_ENDPOINT", None, checks.endpoint)
    cors_origins: list = setting("CORS_ORIGINS", ["*"], checks.string_list)
    shutdown_timeout: float = setting("SHUTDOWN_TIMEOUT", 30, checks.number(0.1, 3600))
    # Issue 16: load balancers whose PROXY header / X-Forwarded-For is believed.
    trusted_proxies: list = setting("TRUSTED_PROXIES", [], checks.cidr_list)

    def listen_addresses(self):
        """The two listeners as ``(key, kind, where)``: the key that sets
        each, and what :func:`parse_endpoint` says about it."""
        out = []
        for endpoint_key, port_key, description, port_value in (
                ("HTTP_ENDPOINT", "PORT", self.http_endpoint, self.port),
                ("TCP_ENDPOINT", "TCP_PORT", self.tcp_endpoint, self.tcp_port)):
            if description:
                kind, where = parse_endpoint(description)
                out.append((f"SERVER.{endpoint_key}", kind, where))
            else:
                out.append((f"SERVER.{port_key}", "tcp", (port_value, self.host)))
        return out

    def finish(self, source):
        """HTTP and DAQ must not ask for the same socket (the second bind
        would fail, or both would adopt one systemd socket)."""
        (key_a, kind_a, a), (key_b, kind_b, b) = self.listen_addresses()
        if kind_a != kind_b:
            return self
        if kind_a == "tcp":
            (port_a, host_a), (port_b, host_b) = a, b
            same_host = host_a == host_b or host_a in WILDCARDS or host_b in WILDCARDS
            if port_a and port_a == port_b and same_host:
                raise ConfigError(source, key_b, f"port {port_b} is also the HTTP port ({key_a}) on the "
                                  f"same host; the HTTP and DAQ listeners need different ports")
        elif a == b and kind_a in ("systemd", "unix"):
            raise ConfigError(source, key_b, f"the same socket as {key_a}; the HTTP and DAQ listeners "
                              f"need different sockets")
        return self


def listen_addresses(config):
    """``config.server.listen_addresses()`` (the old function form)."""
    return config.server.listen_addresses()


@attrs.frozen
class TimeSettings(Section):
    SECTION = "TIME"

    zone: str | None = setting("ZONE", None, checks.zone)

    def finish(self, source):
        # Not given: the host's zone, so every room gets a name.
        return self if self.zone is not None else attrs.evolve(self, zone=host_time_zone())


@attrs.frozen
class LoggerSettings(Section):
    SECTION = "LOGGER"

    path: str = setting("PATH", "log", checks.string, path=True)
    level: str = setting("LEVEL", "info", checks.log_level)
    retention_days: int = setting("RETENTION_DAYS", 30, checks.integer(0))
    name: str = setting("NAME", "tsrmon", checks.file_prefix)

