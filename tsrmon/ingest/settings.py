"""The ingest room's section, DAQ: who may feed, and the caps that keep a
hostile or broken peer from exhausting the daemon.  Checked once at load
(:mod:`tsrmon.config`); the room reads ``config.daq.max_pause`` etc."""

import attrs

from tsrmon.config.checks import cidr_list, integer, name_list, number, string_map
from tsrmon.config.section import Section, setting


@attrs.frozen
class DaqSettings(Section):
    SECTION = "DAQ"

    allow: list = setting("ALLOW", [], cidr_list)
    machines: list = setting("MACHINES", [], name_list)
    tokens: dict = setting("TOKENS", {}, string_map)
    max_frame_bytes: int = setting("MAX_FRAME_BYTES", 16 * 1024 * 1024, integer(64))
    max_buffer_bytes: int = setting("MAX_BUFFER_BYTES", 64 * 1024 * 1024, integer(64))
    max_connections: int = setting("MAX_CONNECTIONS", 256, integer(1))
    max_machines: int = setting("MAX_MACHINES", 256, integer(1))
    max_sensors: int = setting("MAX_SENSORS", 64, integer(1))
    max_pause: float = setting("MAX_PAUSE", 5, number(0))
    name_timeout: float = setting("NAME_TIMEOUT", 10, number(0.1, 3600))
    max_connections_per_host: int = setting("MAX_CONNECTIONS_PER_HOST", 32, integer(1))
    max_total_buffer_bytes: int = setting("MAX_TOTAL_BUFFER_BYTES", 512 * 1024 * 1024, integer(64 * 1024))
    max_samples_per_frame: int = setting("MAX_SAMPLES_PER_FRAME", 2_000_000, integer(1))
