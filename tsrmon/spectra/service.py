"""The spectra room: full-rate chunks in, per-minute spectra and features out.

The hub hands every data chunk to :meth:`SpectraService.data` (beside the
statistics and the raw log).  For a sensor whose effective rate
(``SensorCatalog``: config > DAQ > inferred from samples per 1-s frame) is
at least 1 kHz, the chunk feeds that sensor's accumulators
(``accumulator.py``, on ``analytics.spectrum.MinuteSpectra``: Hann-windowed rfft blocks, 50 %
overlap, Welch-averaged per minute; and the same for the envelope spectrum
when ``SPECTRA.ENVELOPE``).  Each closed minute gives

* its line spectrum (``SPECTRA.LINES`` RMS values up to rate / 2.56,
  float32), stored per minute and merged into its hour (power average
  weighted by blocks, so the hour row is the Welch spectrum of the hour);
* its envelope spectrum (bearing analysis), stored per minute;
* its features (``analytics.features.features``: velocity RMS in mm/s over
  10–1000 Hz, band RMS, the top ``SPECTRA.PEAKS`` peaks, 1×/2×/3× orders
  when the rpm is known, bearing tones when a bearing is configured, the
  ISO 10816-3 judgement), stored per minute and handed to the alarm rules.

The FFT work runs on a dedicated single worker thread (``SPECTRA.THREAD``,
default true): numpy's FFT releases the GIL, so the reactor goes on with
the decoder and the statistics while a second core does the spectra; one
worker keeps each sensor's chunks in order.  At most ``max_backlog_bytes``
(64 MB) of samples wait for it.  When that is full the reactor waits for
the worker, at most ``max_wait`` (0.1 s) a chunk (a sender faster than real
time is then slowed to the pace of the analysis, as TCP backpressure); a
worker that makes no progress in that time gets chunks dropped for spectra
only (counted; a hole marker keeps any block from spanning the gap).  The backlog is what the worker has not finished (it counts its
own progress), not what the reactor has not yet been told.  ``SPECTRA.THREAD: false`` computes on the reactor (tests, tools).

Rows go to the store's writer (``SQLiteStore.upsert_spectrum`` /
``upsert_features``: the machine's flush transaction on its own adbapi
thread).  Retention (``SPECTRA.MINUTE_DAYS`` for minute rows,
``SPECTRA.HOUR_DAYS`` for hour rows) is pruned hourly on the clock.
``stopService`` waits for the worker, closes every open minute, queues its
rows and asks the store to commit: a SIGTERM loses no finished block.
"""

import json
import math
import os
import sys
import threading
import time

import numpy as np
from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from tsrmon.analytics import meta as _meta
from tsrmon.analytics.features import features as _features
from tsrmon.analytics.spectrum import Windows, pack
from tsrmon.peerlog import peer_text
from tsrmon.rooms import ICounters, IReconfigurable
from tsrmon.spectra.accumulator import SensorSpectra
from tsrmon.stats.calendar import Calendar

PRUNE_INTERVAL = 3600.0


def _finite(doc):
    """A JSON-safe copy: non-finite floats become None, tuples lists."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {str(k): _finite(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_finite(v) for v in doc]
    if isinstance(doc, (np.floating, np.integer)):
        return _finite(doc.item())
    return doc


@implementer(ICounters, IReconfigurable)
class SpectraService(service.Service):
    """The hub's ``spectra`` sink; writes through the SQLite store."""

    log = Logger()
    name = "spectra"
    counters_key = "spectra"  # ICounters: its /metrics prefix
    SWITCH_INTERVAL = float(os.environ.get("TSRMON_SWITCH_INTERVAL", "0.0005"))

    def __init__(self, config, clock, store, catalog, reactor=None, alarms=None,
                 max_backlog_bytes=64 * 2**20, thread=None, max_wait=0.1):
        self.config = config
        self.cfg = config.spectra
        self.clock = clock
        self.reactor = reactor if reactor is not None else clock
        self.store = store
        self.catalog = catalog
        self.alarms = alarms
        self.calendar = Calendar(config.time.zone)
        self.max_backlog_bytes = max_backlog_bytes
        self.max_wait = max_wait
        self._progress = threading.Event()   # set by the worker after each chunk
        self._stuck = False
        self.waits = 0
        self.wait_seconds = 0.0   # reactor time spent waiting for the worker
        self.threaded = self.cfg.thread if thread is None else thread
        self._sensors = {}       # (machine, sensor, late) -> SensorSpectra
        # Hann windows by block size, shared read-only by every sensor's
        # analysers: a new sensor's set-up on the reactor then costs no window.
        self.windows = Windows()
        self._refused = set()    # (machine, sensor) told why no spectra (logged once)
        self._pool = None
        self._tail = defer.succeed(None)   # the last queued work (ordering, stop)
        # Queued and finished bytes: one writer each (reactor, worker), so
        # their difference is the backlog without a lock.
        self._queued_bytes = 0
        self._done_bytes = 0
        self._in_flight = 0     # results the reactor has not handled yet
        self._pruner = None
        self.latest = {}         # (machine, sensor) -> (minute t0, features) of the last minute
        self.chunks = 0
        self.samples = 0
        self.minutes = 0
        self.dropped_chunks = 0
        self.refused_chunks = 0
        self.work_seconds = 0.0  # CPU time of the spectra work (thread or reactor)

    # -- service ---------------------------------------------------------------
    def startService(self):
        super().startService()
        if self.threaded:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="tsrmon-spectra")
            self._pool.start()
            # The worker gives the GIL up around every numpy call and must
            # then wait for the reactor's next forced switch (5 ms by
            # default): dozens of waits a chunk.  A shorter interval keeps
            # the worker fed (bench/analytics_ingest.py).
            if sys.getswitchinterval() > self.SWITCH_INTERVAL:
                sys.setswitchinterval(self.SWITCH_INTERVAL)
        self._pruner = task.LoopingCall(self.prune)
        self._pruner.clock = self.clock
        self._pruner.start(PRUNE_INTERVAL, now=True).addErrback(
            lambda f: self.log.failure("spectra pruning stopped", f))

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._pruner is not None and self._pruner.running:
            self._pruner.stop()
        self._pruner = None
        try:
            while self._in_flight:
                yield self._tail
        except Exception:
            self.log.failure("spectra: the last chunks failed")
        results = []
        for key, acc in list(self._sensors.items()):
            try:
                results.append((key, acc.flush()))
            except Exception:
                self.log.failure("spectra: closing the minute of {key} failed", key=key)
        for key, got in results:
            self._store_results(key, got)
        self._sensors = {}
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()
        flush = getattr(self.store, "flush", None)
        if flush is not None:
            yield flush()

    def reconfigure(self, config):
        """SIGHUP: new SENSORS/SPECTRA; accumulators restart on new metadata."""
        self.config = config
        self.cfg = config.spectra
        self._refused.clear()
        # Accumulators whose rate or envelope band changed restart at their
        # next chunk (data() compares); the others keep their open minute.

    # -- the hub's sink --------------------------------------------------------
    def data(self, machine, sensor, stype, values, t, late=False, frames=1):
        """One chunk of one sensor; ``t`` arrival (live) or the frame's time (late).

        ``frames`` > 1: a run of that many chunks of one length in one array
        (the hub's run of same-shape frames that arrived together at ``t``):
        the same as that many calls, each chunk stamped with the time it
        would have arrived alone (live), or all at ``t`` (late); the catalog
        and the accumulator are looked up once for the run.  While a
        sensor's rate is still being learned from its chunk lengths, the
        run goes chunk by chunk."""
        if frames > 1:
            self._run(machine, sensor, stype, values, t, late, frames)
            return
        # Late data (a DAQ's offline buffer) says nothing about the live rate.
        meta = self.catalog.meta(machine, sensor, stype) if late else \
            self.catalog.observe(machine, sensor, stype, len(values))
        self._one(machine, sensor, late, meta, values, t)

    def _one(self, machine, sensor, late, meta, values, t):
        n = len(values)
        found = self._accumulator(machine, sensor, late, meta, n)
        if found is None:
            return
        x = np.asarray(values, dtype=np.float64)
        # The live feed stamps a chunk with its arrival, about when its last
        # sample was taken: the first sample is one chunk earlier.
        self._chunk(found[0], found[1], t if late else t - n / meta.rate, x)

    def _run(self, machine, sensor, stype, values, t, late, frames):
        x = np.asarray(values, dtype=np.float64).reshape(frames, -1)
        n = x.shape[1]
        # The run arrived at ``t``, its last sample about then: live, chunk i
        # is stamped as if it had arrived alone, (frames - 1 - i) chunks
        # earlier.  One stamp for all would move the sample clock back within
        # the run, and the result would depend on how the worker batches.
        if late:
            meta = self.catalog.meta(machine, sensor, stype)
        else:
            meta = self.catalog.steady(machine, sensor, stype, n)
            if meta is None:
                # The rate is still being learned (it may change within the
                # run): chunk by chunk, as that many calls.
                for i, chunk in enumerate(x):
                    meta = self.catalog.observe(machine, sensor, stype, n)
                    rate = meta.rate if meta is not None else None
                    self._one(machine, sensor, late, meta, chunk,
                              t - (frames - 1 - i) * (n / rate) if rate else t)
                return
        found = self._accumulator(machine, sensor, late, meta, n)
        if found is None:
            return
        key, acc = found
        d = 0.0 if late else n / meta.rate
        for i, chunk in enumerate(x):
            self._chunk(key, acc, t if late else (t - (frames - 1 - i) * d) - d, chunk)

    def _accumulator(self, machine, sensor, late, meta, n):
        """``(key, SensorSpectra)`` for chunks of ``n`` samples with ``meta``,
        or None when the sensor gets no spectra."""
        if not self.cfg.enabled or meta is None or n == 0:
            return None
        if meta.rate is None or meta.rate < _meta.SPECTRA_MIN_RATE:
            return None
        key = (machine, sensor, bool(late))
        acc = self._sensors.get(key)
        if acc is not None and acc.meta is not meta:
            # New metadata (SIGHUP, a DAQ's report): the accumulators restart
            # only when what they were built on changed.
            if acc.rate == meta.rate and acc.band == meta.envelope_band:
                acc.meta = meta
            else:
                acc = None
        if acc is None:
            try:
                acc = self._sensors[key] = SensorSpectra(meta, self.cfg, follow_early=not late,
                                                          windows=self.windows)
            except ValueError as e:
                if (machine, sensor) not in self._refused:
                    self._refused.add((machine, sensor))
                    self.log.warn("{machine}/{sensor}: no spectra ({error})",
                                  machine=peer_text(machine), sensor=peer_text(sensor),
                                  error=peer_text(str(e), 200))
                return None
        return key, acc

    def _chunk(self, key, acc, t_first, x):
        """Analyse one chunk (``t_first``: its first sample's time), here or
        on the worker."""
        n = x.size
        if not self.threaded:
            self.chunks += 1
            self.samples += n
            self._store_results(key, self._work(acc, t_first, x))
            return
        if not self._room(x.nbytes):
            self.dropped_chunks += 1
            acc.queue.append(None)   # a hole: no block spans it
            self._schedule(key, acc)
            if self.dropped_chunks in (1, 10, 100, 1000) or self.dropped_chunks % 10000 == 0:
                self.log.warn("spectra are behind: {n} chunks dropped for spectra so far "
                              "(statistics and raw data are not affected)", n=self.dropped_chunks)
            return
        self.chunks += 1      # chunks and samples analysed (dropped ones are not)
        self.samples += n
        self._queued_bytes += x.nbytes
        acc.queue.append((t_first, x))
        self._schedule(key, acc)

    def _room(self, nbytes):
        """Whether the backlog has room for ``nbytes``.  When it is full the
        reactor waits for the worker, at most ``max_wait`` seconds: the
        reactor is then the one flooding (a sender faster than real time
        keeps it busy and takes the GIL from the worker), and waiting
        releases the GIL, so the analysis keeps pace instead of dropping.
        A worker that makes no progress in that time is not waited for
        again until it does (then chunks are dropped for spectra only)."""
        limit = self.max_backlog_bytes
        if self._queued_bytes - self._done_bytes + nbytes <= limit:
            return True
        if self._stuck or self.max_wait <= 0:
            return False
        started = time.monotonic()
        deadline = started + self.max_wait
        try:
            while True:
                self._progress.clear()
                if self._queued_bytes - self._done_bytes + nbytes <= limit:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or not self._progress.wait(left):
                    self._stuck = True
                    return False
        finally:
            self.waits += 1
            self.wait_seconds += time.monotonic() - started

    def _schedule(self, key, acc):
        """Make sure a drain job runs for ``acc`` (reactor thread).  The job
        clears ``acc.scheduled`` itself, under ``acc.lock``, when it finds the
        queue empty: so whenever a chunk is queued a job will take it, even
        while the reactor waits for the worker in :meth:`_room`."""
        with acc.lock:
            if acc.scheduled:
                return
            acc.scheduled = True
        self._in_flight += 1
        d = threads.deferToThreadPool(self.reactor, self._pool, self._drain, key, acc)
        d.addBoth(self._drained, key)
        self._tail = d

    def _work(self, acc, t, x):
        """On the reactor (``SPECTRA.THREAD: false``)."""
        started = time.thread_time()
        try:
            return acc.add(t, x)
        except ValueError as e:
            return e
        finally:
            self.work_seconds += time.thread_time() - started

    MAX_BATCH = 16

    def _drain(self, key, acc):
        """Worker thread: the chunks queued for one sensor, until none is
        left.  Contiguous chunks go in as one array: fewer, larger numpy
        calls, so fewer GIL hand-offs with the reactor (the worker's real
        cost when the reactor is busy).  Closed minutes go to the reactor
        as they come (``callFromThread``)."""
        q = acc.queue
        rate = acc.rate
        while True:
            with acc.lock:
                if not q:
                    acc.scheduled = False
                    return None
            started = time.thread_time()
            item = q.popleft()
            if item is None:
                acc.gap()
                continue
            t, x = item
            parts = [item]
            expected = t + x.size / rate
            while q and q[0] is not None and len(parts) < self.MAX_BATCH:
                t2, x2 = q[0]
                if t2 > expected + acc.max_gap or (
                        not acc.follow_early and t2 < expected - acc.max_gap):
                    break
                parts.append(q.popleft())
                expected += x2.size / rate
            y = x if len(parts) == 1 else np.concatenate([p[1] for p in parts])
            out = []
            try:
                out.extend(acc.add(t, y))
            except ValueError:
                # One bad part must not cost the others: one at a time.
                for tp, xp in parts:
                    try:
                        out.extend(acc.add(tp, xp))
                    except ValueError as e:
                        self.reactor.callFromThread(self._store_results, key, e)
            finally:
                self._done_bytes += y.nbytes
                self._stuck = False
                self._progress.set()
                self.work_seconds += time.thread_time() - started
            if out:
                self.reactor.callFromThread(self._store_results, key, out)

    def _drained(self, result, key):
        self._in_flight -= 1
        if hasattr(result, "getErrorMessage"):  # a Failure
            self.log.failure("spectra of {key} failed", result, key=key)
        return None

    # -- results --------------------------------------------------------------
    def _store_results(self, key, results):
        if isinstance(results, BaseException):
            self.refused_chunks += 1
            self.log.warn("{key}: chunk refused for spectra ({error})", key=key, error=str(results))
            return
        machine, sensor, _late = key
        for minute, lines, fine, env in results:
            try:
                self._store_minute(machine, sensor, minute, lines, fine, env)
            except Exception:
                self.log.failure("{machine}/{sensor}: storing the spectra of a minute failed",
                                 machine=peer_text(machine), sensor=peer_text(sensor))

    def _store_minute(self, machine, sensor, minute, lines, fine, env):
        self.minutes += 1
        levels = {b[0]: b[1:] for b in self.calendar.levels_of_minute(minute)}
        m_t0, m_off, m_text = levels["minute"]
        h_t0, h_off, h_text = levels["hour"]
        blob = pack(lines)
        store = self.store
        store.upsert_spectrum(machine, sensor, "spectrum_minute", m_t0, m_off, m_text,
                              lines.blocks, lines.rate, lines.f0, lines.df, blob)
        store.upsert_spectrum(machine, sensor, "spectrum_hour", h_t0, h_off, h_text,
                              lines.blocks, lines.rate, lines.f0, lines.df, blob)
        if env is not None:
            store.upsert_spectrum(machine, sensor, "envelope_minute", m_t0, m_off, m_text,
                                  env.blocks, env.rate, env.f0, env.df, pack(env))
        meta = self.catalog.meta(machine, sensor)
        feats = _finite(_features(fine, meta, env, top=self.cfg.peaks))
        doc = json.dumps(feats, allow_nan=False, separators=(",", ":"))
        store.upsert_features(machine, sensor, m_t0, m_off, m_text, lines.blocks,
                              feats.get("velocity_rms"), doc)
        self.latest[(machine, sensor)] = (m_t0, feats)
        if self.alarms is not None:
            try:
                self.alarms.features(machine, sensor, meta, m_t0 + 60, feats,
                                     self.catalog.stype(machine, sensor))
            except Exception:
                self.log.failure("alarm rules failed on the features of {machine}/{sensor}",
                                 machine=peer_text(machine), sensor=peer_text(sensor))

    # -- retention -------------------------------------------------------------
    def prune(self):
        now = self.clock.seconds()
        self.store.prune_spectra(int(now - self.cfg.minute_days * 86400),
                                 int(now - self.cfg.hour_days * 86400))

    def counters(self):
        return {"chunks": self.chunks, "samples": self.samples, "minutes": self.minutes,
                "dropped_chunks": self.dropped_chunks, "refused_chunks": self.refused_chunks,
                "chunks_pending": self._in_flight,
                "backlog_bytes_now": self._queued_bytes - self._done_bytes,
                "sensors_active": len(self._sensors),
                "work_seconds": round(self.work_seconds, 3),
                "backlog_waits": self.waits, "backlog_wait_seconds": round(self.wait_seconds, 3)}
