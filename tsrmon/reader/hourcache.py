"""The reader's cache of served hour rows, following the change feed.

The hour level is what the app asks for most (a year of hourly rows for
every sensor), and turning 70,000 SQLite rows into Python objects costs
hundreds of milliseconds on a small PC.  So hour rows are kept, per table
and per calendar month, already served and already JSON-encoded
(:class:`~tsrmon.reader.series.Chunk`).

The cache changes only when the change feed says so (``store/feed.py``):

* a table's first read loads it whole (one pass, split by month);
* a ``Change`` naming hours of a sensor re-serves just those local days;
* a ``Change`` that cannot say what it touched (``everything``, or a
  sensor whose mode may have changed) re-checks the table by a checksum
  (row count, highest id, totals of data, id × data and count), then, if
  it moved, every month by the same checksum grouped by month in SQL, and
  re-reads the months that differ.

A file replaced under the same name (another inode) is another database:
its cache starts again.
"""

import calendar
import datetime
import re
import sqlite3

from tsrmon.names import quote_identifier
from tsrmon.reader.series import Chunk
from tsrmon.store.feed import SENSORS

# A Change spanning more days than this re-checks the table by checksums
# instead of re-serving day by day (a backfill, a long outage's late rows).
MAX_PATCH_DAYS = 62

RECHECK = "recheck"   # pending work: compare every month's checksum

_MONTH = re.compile(r"\d{4}-\d{2}$")


class HourCache:
    """Served hour chunks of one table, keyed by month (``YYYY-MM``)."""

    __slots__ = ("ino", "whole", "signature", "chunks")

    def __init__(self, ino):
        self.ino = ino        # the file's identity: another file starts a new cache
        self.whole = None     # the whole table's checksum when last compared
        self.signature = {}   # month -> checksum when last compared
        self.chunks = {}      # month -> Chunk

    def select(self, start, end):
        """The chunks of the months in ``[start, end]`` (``YYYY-MM-DD`` or None), cut to it."""
        out = []
        lo = start[:7] if start else None
        hi = end[:7] if end else None
        for key in sorted(self.chunks):
            if (lo is not None and key < lo) or (hi is not None and key > hi):
                continue
            chunk = self.chunks[key]
            out.append(chunk if chunk.within(start, end) else chunk.cut(start, end))
        return out


def merge_pending(pending, work):
    """Add ``work`` (a set of ``(first_day, last_day)`` or :data:`RECHECK`) to
    what is pending for one table (a set: a table nobody reads for a while
    keeps one entry per span, not one per commit)."""
    if pending is RECHECK or work is RECHECK:
        return RECHECK
    return (pending or set()) | work


def days_of(spans):
    """The local dates in ``(first_day, last_day)`` spans, or None when
    they are too many to patch one by one."""
    days = set()
    for first, last in spans:
        try:
            d, end = datetime.date.fromisoformat(first), datetime.date.fromisoformat(last)
        except ValueError:
            return None
        if (end - d).days > MAX_PATCH_DAYS:
            return None
        while d <= end:
            days.add(d.isoformat())
            d += datetime.timedelta(days=1)
        if len(days) > MAX_PATCH_DAYS:
            return None
    return days


def patch_days(cache, serve, sensor, table, days):
    """Re-serve only these local days, in their month chunks."""
    for day in sorted(days):
        key = day[:7]
        fresh = serve(sensor, table, "hour", day, day)
        chunk = cache.chunks.get(key)
        kept = [] if chunk is None else [i for i in chunk.items if i[0][:10] != day]
        if not kept and not fresh and chunk is None:
            continue
        # Stable: a DST fall-back day's repeated hour keeps its served order.
        cache.chunks[key] = Chunk(table, sorted(kept + fresh, key=lambda i: i[0]))


def recheck(conn, cache, serve, sensor, table, warn):
    """Re-read the months whose checksum changed (every month the first time)."""
    cols = {r[1] for r in conn.execute(f"PRAGMA table_info({quote_identifier(table)})")}
    counted = "count" in cols
    q = quote_identifier(table)
    # Enough to notice inserts (count, id) and upserts (count, data); the
    # id-weighted total also moves when equal amounts move between rows.
    sums = f"count(*), max(id), total(data), total(id * data){', total(count)' if counted else ''}"
    try:
        # One pass without grouping first: most tables of a machine are
        # unchanged after a change of unknown extent.
        whole = conn.execute(f"SELECT {sums} FROM {q}").fetchone()
        if whole == cache.whole and cache.signature:
            return
        signature = {row[0]: row[1:] for row in conn.execute(
            f"SELECT substr(time, 1, 7) AS k, {sums} FROM {q} GROUP BY k") if month_key(row[0])}
        cache.whole = whole
    except sqlite3.DatabaseError as e:
        warn((table, str(e)), "cannot read table {table}: {error}", table=table, error=e)
        cache.whole, cache.signature, cache.chunks = None, {}, {}
        return
    old, cache.signature = cache.signature, signature
    for k in list(cache.chunks):
        if k not in signature:
            del cache.chunks[k]
    changed = [k for k, sig in signature.items() if old.get(k) != sig or k not in cache.chunks]
    if len(changed) > 3:
        # A cold cache (or a rebuild): one pass over the table, split by month.
        items = serve(sensor, table, "hour", min(changed) + "-01", month_end(max(changed)))
        by_key = {}
        for it in items:
            by_key.setdefault(it[0][:7], []).append(it)
        for k in changed:
            cache.chunks[k] = Chunk(table, by_key.get(k, []))
    else:
        for k in changed:
            cache.chunks[k] = Chunk(table, serve(sensor, table, "hour", k + "-01", month_end(k)))


def month_key(key):
    """True for a ``YYYY-MM`` text naming a real month (other rows are never served)."""
    return (isinstance(key, str) and _MONTH.match(key) is not None
            and int(key[:4]) >= 1 and 1 <= int(key[5:7]) <= 12)


def month_end(key):
    """``YYYY-MM`` → the month's last date as ``YYYY-MM-DD``."""
    year, month = int(key[:4]), int(key[5:7])
    return f"{key}-{calendar.monthrange(year, month)[1]:02d}"


def change_work(change, key):
    """The pending work a feed ``Change`` leaves per cache key: ``key(sensor)``
    for each sensor whose hours it names (those local days) or that it
    announces (a re-check); other spans touch no hour row."""
    work = {}
    for (sensor, kind), span in change.spans.items():
        if sensor is None:
            continue
        if kind == "hour" and span[2] is not None:
            w = {(span[2], span[3])}
        elif kind == SENSORS:
            w = RECHECK
        else:
            continue
        k = key(sensor)
        work[k] = merge_pending(work.get(k), w)
    return work


def mark_pending(hour, pending, owner, work, everything):
    """Add ``work`` to ``pending`` for the cached keys ``(owner, k)`` of
    ``hour`` (every one of them when ``everything``); the caller holds the
    lock.  Only cached keys: one not cached yet is loaded whole by its
    first read."""
    for key in list(hour):
        if key[0] != owner:
            continue
        w = RECHECK if everything else work.get(key[1])
        if w is not None:
            pending[key] = merge_pending(pending.get(key), w)
