"""The statistics room: samples in, per-second sums out, calendar deltas stored.

Hot path (:meth:`StatsService.add`, once per sensor per frame): append the
frame's values to a flat float64 column (``array('d')``, :class:`PendingSamples`;
runs of frames stay the arrays they came as) per (machine, sensor, type) for
the current second.  No numpy per frame, and no Python object per sample is
kept (issue 18: a list per frame held its floats for up to a second, ~100 MB
at 50k frames/s).  When the clock leaves that second (seen by the next
``add`` or by the 1 s tick, whichever is first) every pending column is
reduced with numpy into a :class:`PartialSums`, handed to the
second sinks it was built with (the live bus and alarm rules) and merged
into the *deltas*: per
(machine, sensor, type), the sums of each minute not yet flushed.

Every ``DATABASE.FLUSH`` seconds the pending columns are reduced (even
mid-second; the second sinks still get one ``second`` per second), the
deltas are expanded to the five calendar
levels (minute, hour, day, month, year: ``stats/calendar.py``) and handed to
the store as additive upserts, then the store commits.  Buckets are labelled
by the clock at arrival, never by the next frame, so an outage cannot
mislabel anything and an empty bucket simply has no row.  Late samples
(stamped by the DAQ) are reduced at once into the deltas of their own minute
and reach every level through the same upserts.  ``stopService`` reduces the
current second and flushes, returning the store's Deferred: a SIGTERM loses
nothing.

Higher moments (issue 17): each reduction also computes the power sums of
(x − c) up to the fourth (``analytics/moments.py``, vectorised, no BLAS)
about the sensor's fixed reference c: the one the store already holds for
it (``store.reference``), else the mean of its first chunk.  Rows carry c,
and the store shifts a row about another c to its stored one, so a restart
that chose c before the store had loaded it stays exact.
"""

import itertools
import math
from array import array

import numpy as np
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.analytics.moments import choose_reference
from tsrmon.peerlog import peer_text
from tsrmon.rooms import ICounters
from tsrmon.ticks import next_tick_delay
from tsrmon.stats.calendar import Calendar
from tsrmon.stats.sinks import SumRow
from tsrmon.stats.sums import PartialSums, SumsReducer


def as_array(chunks):
    """One float64 array of a list of value sequences (lists or arrays).

    Turning Python floats into doubles is the cost here (about 75 ns a
    sample on a small PC); ``fromiter`` with a known count is the fastest
    route measured for lists (bench/store_write.py), arrays are concatenated.
    """
    if len(chunks) == 1:
        return np.asarray(chunks[0], dtype=np.float64).ravel()
    if any(type(c) is not list for c in chunks):  # arrays: long chunks, runs of frames
        return np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in chunks])
    n = sum(map(len, chunks))
    return np.fromiter(itertools.chain.from_iterable(chunks), dtype=np.float64, count=n)


def reduce_values(chunks):
    """PartialSums (the six deployed sums) of a list of value sequences."""
    return PartialSums.of(as_array(chunks))


class PendingSamples:
    """The samples of one key for the current second, in arrival order, with
    no Python object per sample (issue 18).

    Lists and tuples (the deployed 30-sample frames off the pickle path) and
    small arrays are copied into a flat ``array('d')`` at once, so the
    frame's list and its floats go right away; an array of ``KEEP_AT``
    samples or more (a run of frames) is kept as it is, one object for many
    samples: the hub's arrays are not changed afterwards (its ``StatsSink``
    contract), as before.  :meth:`array` is every sample, in order, as one
    float64 array (no copy when nothing but lists came).
    """

    __slots__ = ("pieces", "tail", "samples")
    KEEP_AT = 256

    def __init__(self):
        self.tail = array("d")
        self.pieces = [self.tail]
        self.samples = 0  # how many were added (what the second's array will hold)

    def add(self, values):
        kind = type(values)
        if kind is list:
            self.tail.fromlist(values)  # all or nothing
        elif kind is np.ndarray:
            if values.size >= self.KEEP_AT:
                self.pieces.append(values)
                self.tail = array("d")
                self.pieces.append(self.tail)
            else:
                self.tail.frombytes(np.asarray(values, dtype=np.float64).tobytes())
        else:
            tail = self.tail
            size = len(tail)
            try:
                tail.extend(values)
            except BaseException:
                del tail[size:]
                raise
        self.samples += len(values)  # only once it is in

    def array(self):
        pieces = [np.frombuffer(p, dtype=np.float64) if type(p) is array else
                  np.asarray(p, dtype=np.float64).ravel() for p in self.pieces if len(p)]
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.empty(0)


_new_row = tuple.__new__  # a SumRow from its 17 fields, without the keyword machinery


@implementer(ICounters)
class StatsService(service.Service):
    """Implements the hub's ``StatsSink``; writes through an ``AggregateStore``
    and hands each finished second to its ``SecondSink``\ s (``stats/sinks.py``)."""

    log = Logger()
    name = "stats"
    counters_key = "stats"  # ICounters: its /metrics prefix

    def __init__(self, config, clock, seconds, store, tick=1.0):
        """``seconds``: the sinks of each finished second, in order (the
        daemon's live bus, then alarm rules); one sink alone is taken too."""
        self.config = config
        self.clock = clock
        if seconds is None:
            seconds = ()
        elif hasattr(seconds, "second"):
            seconds = (seconds,)
        self.seconds = tuple(seconds)
        self.store = store
        self.calendar = Calendar(config.time.zone)
        self.flush_interval = config.database.flush
        self.tick_interval = tick
        self._pending = {}        # (machine, sensor, stype) -> PendingSamples of this second
        self._partial = {}        # same key -> sums of this second reduced by a flush
        self._second_start = math.inf
        self._second_end = -math.inf
        self._deltas = {}         # (machine, sensor, stype) -> {minute t0: PartialSums}
        self._announced = {}      # (machine, sensor) -> stype given to the store
        self._refs = {}           # (machine, sensor) -> the moments' reference c
        self._reducer = SumsReducer()  # six sums + moments of a chunk in one go
        self._align = None  # the next tick (a DelayedCall)
        self._flusher = None
        self.samples = 0
        self.late_samples = 0
        self.seconds_reduced = 0
        self.flushes = 0
        self.rows_handed = 0
        self.rows_refused = 0

    # -- service -------------------------------------------------------------
    # The tick lands just after each whole second, so a finished second is
    # handed to live and alarms within ~50 ms even when no frame arrives to
    # roll it (LiveService closes its windows later, at +0.25 s).  Each tick
    # schedules the next from the clock, so a late tick never shifts the
    # phase.
    TICK_OFFSET = 0.05

    def startService(self):
        super().startService()
        self._schedule_tick()
        self._flusher = task.LoopingCall(self.flush)
        self._flusher.clock = self.clock
        self._flusher.start(self.flush_interval, now=False).addErrback(self._loop_failed, "flush")

    def _schedule_tick(self):
        self._align = self.clock.callLater(
            next_tick_delay(self.clock.seconds(), self.tick_interval, self.TICK_OFFSET), self._ticked)

    def _ticked(self):
        try:
            self._tick()
        except Exception:
            self.log.failure("statistics tick failed")
        self._schedule_tick()

    def stopService(self):
        super().stopService()
        if self._align is not None and self._align.active():
            self._align.cancel()
        self._align = None
        if self._flusher is not None and self._flusher.running:
            self._flusher.stop()
        self._flusher = None
        self._reduce_pending(second_done=True)
        return self.flush()

    def _loop_failed(self, failure, what):
        self.log.failure("statistics {what} loop stopped", failure, what=what)

    # -- StatsSink -------------------------------------------------------------
    # An array at least this long (a full-rate chunk, not the deployed
    # 30-sample frames) is reduced as it arrives: no copy into one array per
    # second, nothing held until the tick, the chunk still in the cache.
    REDUCE_AT = 8192
    # Small frames wait for the second's end, but never more than this many
    # samples of one sensor: a burst far faster than real time (a DAQ
    # catching up) is then folded as it comes, in 2 MB pieces, instead of
    # holding a whole second of it (48 MB a sensor at 200,000 frames/s of
    # 30 samples, three times over with the reduction's scratch).  The
    # second's sums merge as they do for large arrays.
    FOLD_AT = 1 << 18

    def add(self, machine, sensor, stype, values, t):
        if not (self._second_start <= t < self._second_end):
            self._roll(t)
        key = (machine, sensor, stype)
        if len(values) >= self.REDUCE_AT and type(values) is np.ndarray:
            self._fold(key, self.calendar.minute_start(self._second_start), values)
            return
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = PendingSamples()
        try:
            pending.add(values)
        except (TypeError, ValueError):
            # The hub hands finite floats only; anything else is a bug
            # upstream, logged with context and not allowed to stop others.
            self.log.failure("{key}: cannot reduce a value list of {n}", key=key, n=len(values))
            return
        if pending.samples >= self.FOLD_AT:
            del self._pending[key]
            self._fold(key, self.calendar.minute_start(self._second_start), pending.array())

    def add_late(self, machine, sensor, stype, values, t):
        a = np.asarray(values, dtype=np.float64).ravel()
        if not a.size:
            return
        sums = self._reduce(machine, sensor, a)
        self.late_samples += sums.count
        key = (machine, sensor, stype)
        self._announce(key)
        self._merge_delta(key, self.calendar.minute_start(t), sums)

    # -- seconds -----------------------------------------------------------------
    def _tick(self):
        now = self.clock.seconds()
        # Outside the open second either way: the wall clock may have been
        # set back, and the last second must still reach live and alarms.
        if not (self._second_start <= now < self._second_end):
            self._roll(now)

    def _roll(self, t):
        self._reduce_pending(second_done=True)
        start = math.floor(t)
        self._second_start = start
        self._second_end = start + 1

    def _reduce_pending(self, second_done):
        """Reduce the pending columns of the current second into the deltas.

        A flush calls this mid-second too (so a SIGKILL loses at most one
        flush interval); what was reduced early is kept in ``_partial`` so
        the second sinks still get ONE complete ``second`` per second,
        when the second is done.
        """
        pending = self._pending
        if pending:
            self._pending = {}
            m0 = self.calendar.minute_start(self._second_start)
            for key, samples in pending.items():
                self._fold(key, m0, samples.array())
        partial = self._partial
        if not second_done or not partial:
            return
        self._partial = {}
        t = self._second_start
        sinks = self.seconds
        for key, sums in partial.items():
            self.seconds_reduced += 1
            machine, sensor, stype = key
            for sink in sinks:
                try:
                    sink.second(machine, sensor, stype, t, sums)
                except Exception:
                    self.log.failure("{key}: {sink} failed on a second", key=key, sink=type(sink).__name__)

    def _fold(self, key, m0, values):
        """Reduce the samples ``values`` (an array) of ``key`` into the deltas
        of minute ``m0`` and the sums of the current second (``_partial``)."""
        try:
            a = np.asarray(values, dtype=np.float64).ravel()
            sums = self._reduce(key[0], key[1], a) if a.size else None
        except (TypeError, ValueError):
            self.log.failure("{key}: cannot reduce {n} values", key=key, n=len(values))
            return
        if not sums:
            return
        self.samples += sums.count
        self._announce(key)
        self._merge_delta(key, m0, sums.copy())
        got = self._partial.get(key)
        if got is None:
            self._partial[key] = sums
        else:
            got.merge(sums)

    def reference(self, machine, sensor, values=None):
        """The fixed reference c of a sensor's moments: the store's stored one,
        else (first data) the mean of ``values``; kept for the process."""
        k = (machine, sensor)
        ref = self._refs.get(k)
        if ref is None:
            lookup = getattr(self.store, "reference", None)
            ref = lookup(machine, sensor) if lookup is not None else None
            if ref is None:
                ref = choose_reference(values if values is not None else ())
            self._refs[k] = ref
        return ref

    def _reduce(self, machine, sensor, a):
        """The six sums and the moments of the non-empty float64 array ``a``."""
        return self._reducer(a, self.reference(machine, sensor, a))

    def _announce(self, key):
        machine, sensor, stype = key
        if self._announced.get((machine, sensor)) != stype:
            self._announced[(machine, sensor)] = stype
            mode, _named = self.config.stat_mode(stype)
            try:
                self.store.ensure_sensor(machine, sensor, stype, mode)
            except Exception:
                self.log.failure("the store refused sensor {sensor} of machine {machine}",
                                 sensor=peer_text(sensor), machine=peer_text(machine))

    def _merge_delta(self, key, m0, sums):
        minutes = self._deltas.get(key)
        if minutes is None:
            minutes = self._deltas[key] = {}
        got = minutes.get(m0)
        if got is None:
            minutes[m0] = sums
        else:
            got.merge(sums)

    # -- flushing ------------------------------------------------------------------
    def take_rows(self):
        """The deltas since the last call as sum rows per machine (and reset)."""
        deltas, self._deltas = self._deltas, {}
        by_machine = {}
        for (machine, sensor, _stype), minutes in deltas.items():
            merged = by_machine.setdefault(machine, {})
            for m0, sums in minutes.items():
                for bucket in self.calendar.levels_of_minute(m0):
                    k = (sensor, bucket)
                    got = merged.get(k)
                    if got is None:
                        merged[k] = sums.copy()
                    else:
                        got.merge(sums)
        out = {}
        for machine, merged in by_machine.items():
            out[machine] = [
                _new_row(SumRow, (sensor, *b, *s.as_tuple(), *s.moment_tuple()))
                for (sensor, b), s in merged.items()
            ]
        return out

    def flush(self):
        """Hand the deltas to the store and commit; a Deferred (never fails)."""
        self._reduce_pending(second_done=False)
        for machine, rows in self.take_rows().items():
            self.rows_handed += len(rows)
            try:
                self.store.upsert_sums(machine, rows)
            except Exception:
                # One machine the store refuses (a name it cannot keep) must
                # not cost the others their flush: counted and logged.
                self.rows_refused += len(rows)
                self.log.failure("the store refused {n} sum rows of machine {machine}; they are "
                                 "dropped ({total} in all)", n=len(rows),
                                 machine=peer_text(machine), total=self.rows_refused)
        self.flushes += 1
        d = self.store.flush()
        d.addErrback(self._flush_failed)
        return d

    def _flush_failed(self, failure):
        cause = failure.value.subFailure if failure.check(defer.FirstError) else failure
        if cause.check(defer.CancelledError):
            # SERVER.SHUTDOWN_TIMEOUT: the rows are in the store's queue
            # already; the store spools what it could not commit.
            self.log.warn("statistics: the store was still committing when the shutdown "
                          "timeout expired; the store keeps the rows")
        else:
            self.log.failure("flushing statistics failed", failure)

    def counters(self):
        return {
            "samples": self.samples,
            "late_samples": self.late_samples,
            "seconds_reduced": self.seconds_reduced,
            "flushes": self.flushes,
            "rows_handed": self.rows_handed,
            "rows_refused": self.rows_refused,
            "pending_keys": len(self._pending),
        }
