"""The cluster room's section, CLUSTER: the Redis that nodes share and
this node's name in it (issue 16).

``CLUSTER.REDIS`` empty (the default) means no cluster: nothing is built,
no Redis is needed and every room behaves as on a single node.
"""

import re
import socket
from urllib.parse import urlsplit

import attrs

from tsrmon.config.checks import ConfigError, number
from tsrmon.config.section import Section, setting

# A node id goes into Redis keys and channel messages: keep it short and plain.
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def redis_url(v):
    """``redis://[:password@]host[:port][/db]`` (or empty/None: no cluster)."""
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise ValueError(f"expected a redis:// URL, got {type(v).__name__} {v!r}")
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{v!r} is not a redis:// URL ({e})") from None
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"{v!r} is not a redis://host[:port][/db] URL")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"{v!r}: the database after the host must be a number, got {db!r}")
    if port == 0:
        raise ValueError(f"{v!r}: port 0 is not a Redis port")
    return v


def node_name(v):
    if v is None or v == "":
        return None
    if not isinstance(v, str) or not _NODE.match(v):
        raise ValueError(f"{v!r} is not a node name (1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit)")
    return v


def key_prefix(v):
    if not isinstance(v, str) or not _NODE.match(v):
        raise ValueError(f"{v!r} is not a key prefix (1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit)")
    return v


def default_node():
    """The host name, cut to what a node name allows."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63].lstrip("._-")
    return name or "node"


@attrs.frozen
class ClusterSettings(Section):
    SECTION = "CLUSTER"

    redis: str | None = setting("REDIS", None, redis_url)
    node: str | None = setting("NODE", None, node_name)
    lease_ttl: float = setting("LEASE_TTL", 10, number(1, 3600))
    # Of every Redis key and channel: several clusters (or test runs) may share one Redis.
    prefix: str = setting("PREFIX", "tsrmon", key_prefix)

    @property
    def enabled(self):
        return self.redis is not None

    def connection(self):
        """``(host, port, db, password)`` of CLUSTER.REDIS."""
        parts = urlsplit(self.redis)
        db = parts.path.strip("/")
        return parts.hostname, parts.port or 6379, int(db) if db else 0, parts.password

    def finish(self, source):
        if self.node is None:
            node = default_node()
            if not _NODE.match(node):  # pragma: no cover - gethostname gave nothing usable
                raise ConfigError(source, "CLUSTER.NODE", f"the host name gives no usable node name ({node!r})")
            return attrs.evolve(self, node=node)
        return self
