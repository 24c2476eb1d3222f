"""The change feed: what a commit touched, told to whoever caches stored rows.

The aggregate store publishes one :class:`Change` after each commit (and
after each replayed spool transaction); the reader subscribes and patches
its cache from it, and from nothing else.  :class:`LocalChangeFeed` is the
in-process feed (the daemon's writer and reader share it); a shared
PostgreSQL store would publish the same changes through LISTEN/NOTIFY, and
:class:`tsrmon.store.filefeed.FileChangeFeed` stands in for writers the
daemon does not know (a reader alone beside SQLite files written by
others).  Backend-neutral: nothing here knows SQL.
"""

from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.store.contract import IChangeFeed

# Keys of ``Change.spans`` for rows that are not statistics levels.
FAULTS = "fault"       # fault_detect and anomaly rows (sensor None)
SENSORS = "sensor"     # a sensor announced (its tables exist, its mode may have changed)


class Change:
    """What one commit of one machine touched.

    ``spans`` maps ``(sensor, kind)`` to ``(first_t0, last_t0, first_day,
    last_day)``: the bucket starts (epoch) and the local dates (the stored
    ``time`` text's ``YYYY-MM-DD``) of the rows written.  ``kind`` is a
    statistics level (``minute`` … ``year``), a spectra table kind
    (``spectrum_minute``, ``spectrum_hour``, ``envelope_minute``,
    ``features``), :data:`FAULTS` or :data:`SENSORS`; pruning old rows is
    the kind with sensor None and span ``(None, before_t0, None, None)``.

    ``everything`` True means the extent is unknown (a writer that does not
    say what it wrote): every cached row of the machine must be checked.
    Immutable once published; subscribers may keep it.
    """

    __slots__ = ("machine", "spans", "everything")

    def __init__(self, machine, spans=None, everything=False):
        self.machine = machine
        self.spans = dict(spans or {})
        self.everything = everything

    def days(self, sensor, kind):
        """The local dates ``[first_day, last_day]`` of ``(sensor, kind)``, or None."""
        span = self.spans.get((sensor, kind))
        if span is None or span[2] is None:
            return None
        return span[2], span[3]

    def __repr__(self):
        if self.everything:
            return f"Change({self.machine!r}, everything=True)"
        return f"Change({self.machine!r}, {self.spans!r})"

    def __eq__(self, other):
        return (isinstance(other, Change) and (self.machine, self.spans, self.everything)
                == (other.machine, other.spans, other.everything))

    __hash__ = None


def _widen(spans, key, t0, day):
    got = spans.get(key)
    if got is None:
        spans[key] = (t0, t0, day, day)
    else:
        spans[key] = (min(got[0], t0), max(got[1], t0), min(got[2], day), max(got[3], day))


def change_of(machine, ops):
    """The :class:`Change` a batch of queued store operations makes (None if
    it writes nothing).  Operations are the store queue's tuples
    (``store/deltas.py``)."""
    spans = {}
    for op in ops:
        kind = op[0]
        if kind == "sums":
            for r in op[1]:
                if r[5] > 0:
                    _widen(spans, (r[0], r[1]), r[2], r[4][:10])
        elif kind == "sensor":
            spans[(op[1], SENSORS)] = (None, None, None, None)
        elif kind == "fault":
            _widen(spans, (None, FAULTS), op[2], op[1][:10])
        elif kind == "spectrum":
            _widen(spans, (op[1], op[2]), op[3], op[5][:10])
        elif kind == "features":
            _widen(spans, (op[1], "features"), op[2], op[4][:10])
        elif kind == "prune":
            spans[(None, "minute")] = (None, op[1], None, None)
        elif kind == "prune_spectra":
            spans[(None, "spectrum_minute")] = (None, op[1], None, None)
            spans[(None, "spectrum_hour")] = (None, op[2], None, None)
    return Change(machine, spans) if spans else None


@implementer(IChangeFeed)
class LocalChangeFeed:
    """The in-process feed: ``publish`` calls every subscriber at once, on
    the caller's thread (the reactor thread, for the store)."""

    log = Logger()

    def __init__(self):
        self.subscribers = []

    def subscribe(self, callback):
        if callback not in self.subscribers:
            self.subscribers.append(callback)

    def unsubscribe(self, callback):
        if callback in self.subscribers:
            self.subscribers.remove(callback)

    def publish(self, change):
        for callback in list(self.subscribers):
            try:
                callback(change)
            except Exception:
                self.log.failure("change subscriber {callback!r} failed for {machine}",
                                 callback=callback, machine=change.machine)

    def catch_up(self, machine):
        """Nothing to fetch: every change was published when it was committed."""

    def close(self):
        self.subscribers = []
