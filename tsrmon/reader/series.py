"""Served statistics rows as the REST API sends them: items, chunks, series.

Backend-neutral: an *item* is ``(time, data, min, max, rms, count)`` of one
served bucket (``docs/storage.md`` serving rules); a :class:`Chunk` holds
the items of one table for one key (a month, or a whole query) with their
JSON encoded once; a :class:`StatSeries` is one sensor's chunks for a request.
"""

import math

import orjson

__all__ = ["BUCKET_PREFIX", "Chunk", "StatSeries", "align_series", "encode_items", "legacy_item"]


def _finite(x):
    """``x`` as a float if it is a finite number, else None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, int) and not isinstance(x, bool):
        return float(x)
    return None


def _item(row):
    """A ``served_rows`` dict → a clean item tuple ``(time, data, min, max,
    rms, count)``, or None if it must not be served."""
    data = _finite(row.get("data"))
    t = row.get("time")
    if data is None or not isinstance(t, str):
        return None
    count = row.get("count")
    if not (isinstance(count, int) and not isinstance(count, bool) and count > 0):
        count = None
    return (t, data, _finite(row.get("min")), _finite(row.get("max")),
            _finite(row.get("rms")), count)


def legacy_item(name, t, data, mn, mx, rms, count):
    """One row in the legacy shape ``{name, time, data}`` plus the extras a
    counted row has (min, max, rms, count; absent for legacy rows)."""
    d = {"name": name, "time": t, "data": data}
    if mn is not None:
        d["min"] = mn
    if mx is not None:
        d["max"] = mx
    if rms is not None:
        d["rms"] = rms
    if count is not None:
        d["count"] = count
    return d


def encode_items(name, items):
    """JSON array body (without brackets) of items in the legacy shape plus extras."""
    return orjson.dumps([legacy_item(name, *item) for item in items])[1:-1]


class Chunk:
    """The served rows of one table for one key (a month, or a whole query)."""

    __slots__ = ("name", "items", "times", "first_date", "last_date", "_json")

    def __init__(self, name, items):
        self.name = name
        self.items = items
        self.times = tuple(i[0] for i in items)
        self.first_date = items[0][0][:10] if items else None
        self.last_date = items[-1][0][:10] if items else None
        self._json = None

    def json(self):
        if self._json is None:
            self._json = encode_items(self.name, self.items)
        return self._json

    def within(self, start, end):
        return (self.items and (start is None or start <= self.first_date)
                and (end is None or self.last_date <= end))

    def cut(self, start, end, keep=None):
        """A new chunk with only the items in [start, end] (and in ``keep``)."""
        items = [i for i in self.items
                 if (start is None or start <= i[0][:10]) and (end is None or i[0][:10] <= end)
                 and (keep is None or i[0] in keep)]
        return Chunk(self.name, items)


class StatSeries:
    """The served rows of one sensor table for a request: a list of chunks."""

    __slots__ = ("sensor", "name", "chunks")

    def __init__(self, sensor, name, chunks):
        self.sensor = sensor
        self.name = name
        self.chunks = [c for c in chunks if c.items]

    def items(self):
        for c in self.chunks:
            yield from c.items

    def json_fragments(self):
        return [c.json() for c in self.chunks]

    def __len__(self):
        return sum(len(c.items) for c in self.chunks)


# The part of the stored time text that names a bucket of each level (old
# deployed hour rows carry minutes and microseconds: "2024-01-25 14:23:11.5").
BUCKET_PREFIX = {"minute": 16, "hour": 13, "day": 10, "month": 7, "year": 4}


def align_series(series, level):
    """Keep only the buckets every non-empty series has, one row each (the app
    pairs the channels of a machine by index)."""
    present = [s for s in series if s.chunks]
    if len(present) < 2:
        return series
    first = present[0].chunks
    if all(len(s.chunks) == len(first) and all(a.times == b.times for a, b in zip(s.chunks, first))
           for s in present[1:]):
        return series
    n = BUCKET_PREFIX[level]
    common = {i[0][:n] for i in present[0].items()}
    for s in present[1:]:
        common.intersection_update(i[0][:n] for i in s.items())
    out = []
    for s in series:
        seen = set()
        chunks = []
        for c in s.chunks:
            keys = [t[:n] for t in c.times]
            if all(k in common for k in keys) and len(set(keys)) == len(keys) and seen.isdisjoint(keys):
                seen.update(keys)
                chunks.append(c)
                continue
            items = []
            for it, k in zip(c.items, keys):
                if k in common and k not in seen:
                    seen.add(k)
                    items.append(it)
            chunks.append(Chunk(c.name, items))
        out.append(StatSeries(s.sensor, s.name, chunks))
    return out


_Chunk = Chunk  # the old private name
