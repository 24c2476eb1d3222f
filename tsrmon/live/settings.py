"""The live room's section, LIVE: the Socket.IO update cadence, replay
cache, per-client queue and Engine.IO pings.  Checked once at load
(:mod:`tsrmon.config`); the room reads ``config.live.interval`` etc."""

import attrs

from tsrmon.config.checks import integer, number
from tsrmon.config.section import Section, setting


@attrs.frozen
class LiveSettings(Section):
    SECTION = "LIVE"

    interval: float = setting("INTERVAL", 60, number(1, 3600))
    cache: int = setting("CACHE", 60, integer(0, 100000))
    max_queue: int = setting("MAX_QUEUE", 1000, integer(1))
    ping_interval: float = setting("PING_INTERVAL", 25, number(0.05, 3600))
    ping_timeout: float = setting("PING_TIMEOUT", 20, number(0.05, 3600))
