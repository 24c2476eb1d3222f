"""The PostgreSQL schema: versioned files, the recorded time zone, partitions.

``tsrmon/store/pg_schemas/v<N>.sql`` are applied in order, each in the
transaction that records it in ``schema_version``; the whole preparation
runs under one advisory lock, so nodes starting together migrate once.  A
database whose version is newer than :data:`SCHEMA_VERSION` is refused
(no silent downgrade), and so is a node whose ``TIME.ZONE`` differs from
the zone recorded by the first node (bucket keys and time texts would
disagree).

``stat_minute`` is partitioned by UTC day, ``stat_hour`` by UTC month
(RANGE on ``t0``): partitions are created ahead (:func:`ensure_ahead`) and
for any older row written (:func:`ensure_for`, e.g. a spool replay or
``migrate-store``); minute retention drops whole days
(:func:`drop_minutes_before`).
"""

import datetime
import os
import re

SCHEMA_VERSION = 1
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pg_schemas")
LEVEL_TABLES = {"minute": "stat_minute", "hour": "stat_hour", "day": "stat_day",
                "month": "stat_month", "year": "stat_year"}
PARTITIONED = ("minute", "hour")
# pg_advisory_xact_lock keys (any constant pair, unique to tsrmon).
LOCK_SCHEMA = 0x7453524D
LOCK_PARTITIONS = 0x74535250
CHANNEL = "tsrmon_change"

_PART = re.compile(r"^stat_(minute|hour)_p(\d{6,8})$")


class SchemaError(Exception):
    """The shared database cannot be used by this node (one line)."""


class StoreUnreachable(SchemaError):
    """PostgreSQL did not answer (a node may start anyway and queue)."""


def schema_files():
    """``[(version, path)]`` of the schema files, ascending."""
    out = []
    for name in os.listdir(SCHEMA_DIR):
        m = re.match(r"^v(\d+)\.sql$", name)
        if m:
            out.append((int(m.group(1)), os.path.join(SCHEMA_DIR, name)))
    return sorted(out)


def prepare(conn, zone, node=None):
    """Create or migrate the schema and check the recorded time zone (one
    transaction, committed here).  Returns the schema version."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_SCHEMA,))
        cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now(), node text)")
        cur.execute("SELECT max(version) FROM schema_version")
        current = cur.fetchone()[0] or 0
        if current > SCHEMA_VERSION:
            conn.rollback()
            raise SchemaError(f"the PostgreSQL store has schema version {current}, newer than this "
                              f"tsrmon knows ({SCHEMA_VERSION}); upgrade tsrmon (no downgrade)")
        for version, path in schema_files():
            if current < version <= SCHEMA_VERSION:
                with open(path, encoding="utf-8") as f:
                    cur.execute(f.read())
                cur.execute("INSERT INTO schema_version (version, node) VALUES (%s, %s)", (version, node))
                current = version
        cur.execute("INSERT INTO tsrmon_meta (key, value) VALUES ('time_zone', %s) "
                    "ON CONFLICT (key) DO NOTHING", (zone,))
        cur.execute("SELECT value FROM tsrmon_meta WHERE key = 'time_zone'")
        recorded = cur.fetchone()[0]
        if recorded != zone:
            conn.rollback()
            raise SchemaError(f"TIME.ZONE is {zone} but the PostgreSQL store records {recorded}: "
                              f"every node must use the zone the store was started with")
    conn.commit()
    return current


# -- partitions ----------------------------------------------------------------
def _utc(t0):
    return datetime.datetime.fromtimestamp(int(t0), datetime.timezone.utc)


def _epoch(d):
    return int(d.replace(tzinfo=datetime.timezone.utc).timestamp())


def partition_of(level, t0):
    """``(name, lower t0, upper t0)`` of the partition holding ``t0``."""
    d = _utc(t0)
    if level == "minute":
        lo = datetime.datetime(d.year, d.month, d.day)
        hi = lo + datetime.timedelta(days=1)
        name = f"stat_minute_p{lo:%Y%m%d}"
    elif level == "hour":
        lo = datetime.datetime(d.year, d.month, 1)
        hi = datetime.datetime(d.year + (d.month == 12), d.month % 12 + 1, 1)
        name = f"stat_hour_p{lo:%Y%m}"
    else:
        raise ValueError(f"level {level!r} is not partitioned")
    return name, _epoch(lo), _epoch(hi)


def existing_partitions(cur):
    """``{name}`` of the attached minute and hour partitions."""
    cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE p.relname IN ('stat_minute', 'stat_hour') "
                "AND pg_table_is_visible(p.oid)")
    return {r[0] for r in cur.fetchall()}


def create_partitions(conn, wanted, known):
    """Create the partitions ``wanted`` (``{(level, name, lo, hi)}``) that are
    not in ``known`` (updated), in a transaction of their own, committed
    here: a partition must exist before the rows' transaction, and creating
    one locks its parent for a moment."""
    missing = sorted(w for w in wanted if w[1] not in known)
    if not missing:
        return 0
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_PARTITIONS,))
        known |= existing_partitions(cur)
        made = 0
        for level, name, lo, hi in missing:
            if name in known:
                continue
            cur.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {LEVEL_TABLES[level]} "
                        f"FOR VALUES FROM ({lo}) TO ({hi})")
            known.add(name)
            made += 1
    conn.commit()
    return made


def ensure_for(conn, level_t0s, known):
    """Partitions for rows ``{(level, t0)}`` (other levels ignored)."""
    wanted = {(level,) + partition_of(level, t0) for level, t0 in level_t0s if level in PARTITIONED}
    return create_partitions(conn, wanted, known)


def ensure_ahead(conn, now, known, minute_days=3, hour_months=2):
    """Partitions from today (this month) to a few days (months) ahead."""
    wanted = set()
    for i in range(minute_days + 1):
        wanted.add(("minute",) + partition_of("minute", now + i * 86400))
    t = now
    for _ in range(hour_months + 1):
        name, lo, hi = partition_of("hour", t)
        wanted.add(("hour", name, lo, hi))
        t = hi
    return create_partitions(conn, wanted, known)


def drop_minutes_before(conn, before_t0, known):
    """Drop whole minute partitions that end at or before ``before_t0``
    (retention: DATABASE.MINUTE_RETENTION_DAYS); committed here.  Returns
    the names dropped."""
    dropped = []
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_PARTITIONS,))
        for name in sorted(existing_partitions(cur)):
            m = _PART.match(name)
            if m is None or m.group(1) != "minute":
                continue
            d = datetime.datetime.strptime(m.group(2), "%Y%m%d")
            if _epoch(d) + 86400 <= before_t0:
                cur.execute(f"DROP TABLE IF EXISTS {name}")
                dropped.append(name)
                known.discard(name)
    conn.commit()
    return dropped
