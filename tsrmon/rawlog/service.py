"""The raw CSV log: every sample as a row of ``DATA.PATH/<machine>/YYYYMMDD_<sensor>.csv``.

The deployed layout (docs/legacy.md §2.6): header ``time,data``, one row
per sample, CRLF line ends, local arrival time ``HH:MM:SS`` (or local
ISO-8601 with milliseconds and offset when ``DATA.TIME_FORMAT`` is ``iso``).
The date in the file name is the local date (``TIME.ZONE``) of the rows it
holds, so files switch at local midnight.

How it stays off the ingest path, and within bounded memory:

- :meth:`RawCSVService.write` (called by the hub for every frame) copies the
  samples into flat float64 columns per sensor
  (:class:`~tsrmon.rawlog.buffers.FrameBuffer`): no Python object per
  sample or frame is kept, so bursts cost the GC nothing.
- Every ``FLUSH_INTERVAL`` seconds (injected clock), and as soon as
  ``FLUSH_AT_SAMPLES`` are buffered, the columns are swapped out and handed
  to one job of :class:`~tsrmon.rawlog.files.CSVFiles`: it formats the rows
  (:mod:`tsrmon.rawlog.rows`), appends each file's rows and keeps the files
  open between flushes.  Files idle for ``DATA.IDLE_CLOSE`` seconds are
  closed, by the clock even when no rows arrive, so a deleted file frees its
  space.  The job runs in a thread of the reactor's pool (``worker="thread"``)
  or in worker processes (``worker="process"``, :mod:`tsrmon.rawlog.worker`),
  where formatting gets cores of its own instead of competing for the GIL.
  With ``DATA.WORKERS`` processes, each sensor's files belong to one of them
  (:mod:`tsrmon.rawlog.owners`); a flush is one job per process that has rows.
  A process runs its jobs one at a time; each reports back, and the reactor
  thread updates counters and logs.
- When the jobs fall behind (every flush slot busy) and ``MAX_BUFFER_SAMPLES``
  wait, the service asks for backpressure (``backpressure(True)``: the hub
  pauses DAQ reading, so a burst waits in the kernel and the DAQ) and
  releases it when the buffer is down to half.  A burst is thus written
  whole at the disk's pace.  Without backpressure, past ``MAX_BACKLOG_SAMPLES``
  (or ``MAX_BACKLOG_FRAMES``) waiting, or when the pause lasts
  ``MAX_CONGESTED`` s (a stalled disk, not a burst), the waiting rows are
  dropped and counted instead until the writer catches up: the raw log may
  slow ingest for a moment but never costs statistics a sample, and never
  holds unbounded memory.
- Low free space on ``DATA.PATH`` (below ``DATA.MIN_FREE_MB``) or a failing
  write (ENOSPC, EIO ...) drops the rows concerned, counted, the transition
  logged once; statistics carry on untouched.  A failed write is cut back to
  the file's previous end, so no half row is left.  A file that fails for
  its own reason only *degrades* its sensor (:mod:`tsrmon.rawlog.health`).
"""

import os
import sys
import zoneinfo

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.rawlog import rows as csvformat
from tsrmon.rawlog.buffers import FrameBuffer, batch_frames, batch_samples
from tsrmon.rawlog.files import CSVFiles
from tsrmon.rawlog.health import FileHealth
from tsrmon.rawlog.maintenance import DiskCare
from tsrmon.rawlog.owners import SensorOwners
from tsrmon.rooms import ICounters, IHealth

_MB = 1024 * 1024
WORKERS = ("thread", "process")


def _synchronously(fn, *args):
    """Run a job on the calling thread (tests and benchmarks without a reactor)."""
    return defer.maybeDeferred(fn, *args)


@implementer(IHealth, ICounters)
class RawCSVService(FileHealth, DiskCare, service.Service):
    """Buffered writer of the raw CSV log; implements the hub's ``RawSink``.

    ``clock`` drives the flush, free-space and day-change timers;
    ``reactor`` provides the thread pool (and spawns the worker process).
    Without a reactor, thread jobs run inline (tests and benchmarks).
    ``free_space(path)`` (bytes) and ``open_file(path)`` are injectable for
    tests (thread worker only: they do not cross into a process).
    ``backpressure(congested)``, if given (or set before start), is told
    when the writer falls behind and when it caught up.
    """

    log = Logger()
    name = "rawcsv"
    health_key = "raw_csv"  # IHealth: its /healthz check
    counters_key = "raw"  # ICounters: its /metrics prefix

    FLUSH_INTERVAL = 1.0
    SPACE_INTERVAL = 10.0
    # A degraded file with no failure for this long is forgotten (its sensor
    # is gone): /healthz recovers without a restart.
    DEGRADED_EXPIRE = 3600.0
    MAX_HEALTH_DETAIL = 20
    MAX_OPEN_FILES = 256
    # Memory bounds, in float64 samples (8 bytes each).  A flush starts early
    # at FLUSH_AT_SAMPLES (8 MB) when a flush slot is free, so one job is
    # never large; with every slot busy, MAX_BUFFER_SAMPLES (16 MB) waiting
    # asks for backpressure, and MAX_BACKLOG_SAMPLES (64 MB, or BURST_FRAMES of
    # DAQ.MAX_SAMPLES_PER_FRAME when larger) is dropped.
    FLUSH_AT_SAMPLES = 1_000_000
    MAX_BUFFER_SAMPLES = 2_000_000
    MAX_BACKLOG_SAMPLES = 8_000_000
    BURST_FRAMES = 4
    # Frames waiting behind a running job (16 bytes each besides their samples).
    MAX_BACKLOG_FRAMES = 200_000
    # Longest backpressure for the raw log alone: past it (or half of
    # DAQ.MAX_PAUSE, after which ingest would drop whole frames), the raw log
    # drops its own waiting rows instead, so a stalled disk never costs
    # statistics anything.
    MAX_CONGESTED = 2.0

    def __init__(self, config, clock, reactor=None, *, worker="thread", workers=None, free_space=None,
                 open_file=None, run_in_thread=None, backpressure=None):
        data = config.data
        self.enabled = bool(data.enabled)
        self.root = os.path.abspath(data.path)
        self.time_format = data.time_format
        self.tz = zoneinfo.ZoneInfo(config.time.zone)
        self.clock = clock
        self.backpressure = backpressure
        max_pause = float(config.daq.max_pause or 0)
        # Without backpressure a burst waits up to the hard cap: make room
        # for BURST_FRAMES of the largest legal frames (the default cap is
        # exactly that for the default DAQ.MAX_SAMPLES_PER_FRAME).
        burst = self.BURST_FRAMES * int(config.daq.max_samples_per_frame)
        if burst > self.MAX_BACKLOG_SAMPLES:
            self.MAX_BACKLOG_SAMPLES = burst
        self.max_congested = min(self.MAX_CONGESTED, max_pause / 2)
        self._congestion_timer = None
        DiskCare.__init__(self, data, free_space)
        FileHealth.__init__(self)
        if worker not in WORKERS:
            raise ValueError(f"worker must be one of {WORKERS}, not {worker!r}")
        if worker == "process" and (reactor is None or open_file is not None):
            raise ValueError("the process worker needs a reactor and takes no open_file")
        if worker == "process" and getattr(sys, "frozen", False):
            raise ValueError("a frozen executable cannot start the worker process: use worker='thread'")
        self.worker = worker
        if run_in_thread is None:
            if reactor is None:
                run_in_thread = _synchronously
            else:
                def run_in_thread(fn, *args):
                    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)
        self._run_in_thread = run_in_thread
        self.idle_close = float(data.idle_close)
        files_args = (self.root, config.time.zone, self.time_format, None,
                      self.idle_close, self.MAX_OPEN_FILES, int(data.write_behind_mb) << 20)
        if worker == "thread":
            self.files = CSVFiles(*files_args)  # touched by one job at a time
            if open_file is not None:
                self.files.open_file = open_file
            self._workers = None
        else:
            from tsrmon.rawlog.worker import CSVWorker
            self.files = None
            count = int(data.workers if workers is None else workers)
            if count < 1:
                raise ValueError(f"workers must be at least 1, not {count}")
            self._workers = [CSVWorker(reactor, files_args, self.log, run_in_thread)
                             for _ in range(count)]
        self.owners = SensorOwners(1 if self._workers is None else len(self._workers))
        self._open_by_worker = {}  # worker index -> files it holds open
        self._day_labels = csvformat.TimeLabels(self.tz, "hms")  # reactor thread only

        self._buffers = {}  # (machine, sensor) -> FrameBuffer
        self._buffered = 0  # samples in self._buffers
        self._accepting = self.enabled  # False while paused or after stop
        self._stopped = False
        self._jobs = defer.DeferredLock()
        self._flushes_pending = 0
        # The worker process formats one batch while the next one is
        # marshalled and sent; a thread job holds the GIL, so one at a time.
        self._max_flushes = 1 if worker == "thread" else 2
        self._loops = []
        self._today = None
        self._backlogged = False
        self._congested = False
        self._failing = False
        self._failed_at_failure = 0
        self._last_error = None
        self._bad_logged = 0

        self.rows_written = 0
        self.bytes_written = 0
        self.files_opened = 0
        self.flushes = 0
        self.early_flushes = 0
        self.backpressure_episodes = 0
        self.write_errors = 0
        self.dropped_write_error = 0
        self.dropped_backlog = 0
        self.dropped_bad_values = 0
        self.dropped_refused = 0
        self.dropped_stopped = 0

    # -- the hub's side (reactor thread, hot path) ------------------------
    def write(self, machine, sensor, values, t):
        """Buffer the samples of one frame (``t``: seconds since the epoch).

        ``values`` (a list, a tuple or a numpy array) is copied: the caller
        may reuse it."""
        if not self._accepting:
            if self.enabled:
                self._refuse(values)
            return
        buf = self._buffers.get((machine, sensor))
        if buf is None:
            buf = self._buffers[machine, sensor] = FrameBuffer()
        n, bad = buf.add(t, values)
        if bad:
            self.dropped_bad_values += bad
        self._buffered += n
        if self._buffered >= self.FLUSH_AT_SAMPLES:
            self._full()

    def _refuse(self, values):
        if self._stopped:
            self.dropped_stopped += len(values)
            if self.dropped_stopped == len(values):
                self.log.warn("raw CSV: samples arrived after the writer stopped; they are dropped")
        else:
            self.dropped_low_space += len(values)

    def _full(self):
        """FLUSH_AT_SAMPLES are buffered: flush now, or hold the DAQs back, or drop."""
        if self._flushes_pending < self._max_flushes:
            self.early_flushes += 1
            self.flush().addErrback(lambda f: self.log.failure("raw CSV: flush failed", f))
        elif self._buffered >= self.MAX_BACKLOG_SAMPLES:
            self._check_backlog()
        elif self._buffered >= self.MAX_BUFFER_SAMPLES and not self._congested:
            if self._backlogged:
                self._check_backlog(force=True)  # the disk is known to be behind: keep dropping
            elif self.backpressure is not None and self.max_congested > 0:
                self._set_congested(True)
            # else nobody can hold the DAQs back: the rows wait up to
            # MAX_BACKLOG_SAMPLES, so a burst of the largest legal frames
            # (DAQ.MAX_SAMPLES_PER_FRAME each) is written, not dropped.

    def _set_congested(self, congested):
        self._congested = congested
        if congested:
            self.backpressure_episodes += 1
            self._congestion_timer = self.clock.callLater(self.max_congested, self._congestion_expired)
        elif self._congestion_timer is not None:
            if self._congestion_timer.active():
                self._congestion_timer.cancel()
            self._congestion_timer = None
        if self.backpressure is not None:
            self.backpressure(congested)

    def _congestion_expired(self):
        """Held the DAQs back for ``max_congested`` s and still behind: the
        disk is stalled, not a burst.  Drop our own rows until it catches up."""
        self._congestion_timer = None
        self._check_backlog(force=True)
        self._set_congested(False)

    # -- service -----------------------------------------------------------
    def startService(self):
        super().startService()
        if not self.enabled:
            self.log.info("raw CSV is off (DATA.ENABLED is false)")
            return
        os.makedirs(self.root, exist_ok=True)
        self._stopped = False
        self._accepting = not self._paused
        self._today = self._day_labels.day(self.clock.seconds())
        self._start_loop(self._tick, self.FLUSH_INTERVAL, now=False)
        if self.min_free_bytes:
            self._start_loop(self.check_space, self.SPACE_INTERVAL, now=True)
        if self.gzip_after_days or self.retention_days:
            self.maintain()

    def _start_loop(self, fn, interval, now):
        loop = task.LoopingCall(fn)
        loop.clock = self.clock
        d = loop.start(interval, now=now)
        d.addErrback(lambda f: self.log.failure("raw CSV timer {fn} stopped", f, fn=fn.__name__))
        self._loops.append(loop)

    def stopService(self):
        """Flush everything buffered and close every file (a Deferred)."""
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if not self.enabled:
            return defer.succeed(None)
        d = self.flush()
        self._stopped = True
        self._accepting = False
        if self._congested:
            self._set_congested(False)
        d.addErrback(lambda f: self.log.failure("raw CSV: final flush failed", f))
        d.addCallback(lambda _: self._each("close_all"))
        d.addCallback(lambda results: self._closed(sum(closed for _, closed in results)))
        d.addErrback(lambda f: self.log.failure("raw CSV: closing files failed", f))
        if self._workers is not None:
            d.addCallback(lambda _: defer.gatherResults([w.stop() for w in self._workers]))
        return d

    def _job(self, method, *args, worker=0):
        """Run a :class:`CSVFiles` method where the files live; a Deferred.

        Jobs run in the order they were asked for, one at a time: a lock for
        the thread; for a worker process (``worker``: its index), its pipe
        and its single thread.
        """
        if self._workers is None:
            if method == "ping":
                return self._jobs.run(defer.succeed, None)
            return self._jobs.run(self._run_in_thread, getattr(self.files, method), *args)
        try:
            if method != "write_batch":
                return self._workers[worker].call(method, *args)
            return self._workers[worker].write_batch(*args)
        except Exception:
            # The worker could not be started (fork, pipe) or marshal refused
            # something: this job fails like any other, the next one retries.
            return defer.fail()

    def _each(self, method, *args):
        """The same job on every worker that ever had rows (the one thread,
        or worker 0 when none had); fires with ``[(index, result), ...]``."""
        jobs = []
        for index in self.owners.used():
            d = self._job(method, *args, worker=index)
            d.addCallback(lambda result, index=index: (index, result))
            jobs.append(d)
        return defer.gatherResults(jobs, consumeErrors=True).addErrback(_first_error)

    @property
    def files_open(self):
        """Files open now, in the thread or every worker (as their last answers said)."""
        return sum(self._open_by_worker.values())

    def _set_open(self, index, n):
        self._open_by_worker[index] = n

    def _closed(self, closed):
        self._open_by_worker.clear()
        self.log.info("raw CSV stopped: {rows} rows written, {files} files closed",
                      rows=self.rows_written, files=closed)

    # -- flushing ----------------------------------------------------------
    def _tick(self):
        today = self._day_labels.day(self.clock.seconds())
        if today != self._today:
            self._today = today
            if self.gzip_after_days or self.retention_days:
                self.maintain()
        if self._degraded:
            self._expire_degraded()
        if self.dropped_bad_values > self._bad_logged:
            self.log.warn("raw CSV: {n} values were not numbers and were not written",
                          n=self.dropped_bad_values - self._bad_logged)
            self._bad_logged = self.dropped_bad_values
        if self._flushes_pending >= self._max_flushes:
            # The previous flush is still queued or writing: let the buffers
            # wait, within bounds.
            self._check_backlog()
            return
        self.flush().addErrback(lambda f: self.log.failure("raw CSV: flush failed", f))

    def flush(self):
        """Hand everything buffered to a write job; fires when it is written."""
        batch = self._buffers
        self._buffers = {}
        self._buffered = 0
        self._flushes_pending += 1
        if batch:
            now = self.clock.seconds()
            jobs = []
            for index, part, samples in self.owners.split(batch):
                d = self._job("write_batch", part, now, worker=index)
                # Only the count is kept: the columns go as soon as the job has them.
                d.addCallbacks(self._batch_done, self._batch_lost, callbackArgs=(index,),
                               errbackArgs=(samples,))
                jobs.append(d)
            del batch, part
            d = defer.gatherResults(jobs, consumeErrors=True).addCallbacks(self._flushed, _first_error)
        elif self.files_open:
            # Nothing to write but files open: close the idle ones.
            d = self._each("close_idle", self.clock.seconds())
            d.addCallback(self._idle_closed)
            d.addErrback(lambda f: self.log.debug("raw CSV: closing idle files: {error}",
                                                  error=f.getErrorMessage()))
        else:
            d = self._each("ping")  # fires once the jobs before it are done
            # Nothing was buffered, so nothing is lost; the batches around it
            # report the worker's trouble.
            d.addErrback(lambda f: self.log.debug("raw CSV: empty flush: {error}",
                                                  error=f.getErrorMessage()))
        d.addBoth(self._flush_finished)
        return d

    def _flush_finished(self, result):
        self._flushes_pending -= 1
        if self._buffered >= self.FLUSH_AT_SAMPLES and self._accepting:
            self._full()  # keep the worker busy while a burst lasts
        if self._congested and self._buffered <= self.MAX_BUFFER_SAMPLES // 2:
            self._set_congested(False)
        if self._backlogged and not self._flushes_pending:
            self._backlogged = False
            self.log.info("raw CSV: the disk caught up; {n} samples were dropped in all",
                          n=self.dropped_backlog)
        return result

    def _check_backlog(self, force=False):
        frames = batch_frames(self._buffers)
        if not force and frames <= self.MAX_BACKLOG_FRAMES and self._buffered < self.MAX_BACKLOG_SAMPLES:
            return
        dropped = self._drop_buffers()
        self.dropped_backlog += dropped
        if not self._backlogged:
            self._backlogged = True
            self.log.error("raw CSV: the disk is not keeping up ({frames} frames waiting behind a "
                           "write to {root}); dropping {dropped} samples, statistics are not affected",
                           frames=frames, root=self.root, dropped=dropped)

    def _drop_buffers(self):
        batch = self._buffers
        self._buffers = {}
        self._buffered = 0
        return batch_samples(batch)

    def _idle_closed(self, results):
        for index, result in results:
            closed = self._open_by_worker.get(index, 0) - result["files_open"]
            if closed > 0:
                self.idle_closes += closed
            self._set_open(index, result["files_open"])
            for note in result["notes"]:
                self.log.warn("raw CSV: {note}", note=note)

    def _flushed(self, results):
        if any(result is not None for result in results):
            self.flushes += 1
        return results


def _first_error(failure):
    """gatherResults wraps a job's failure in FirstError: pass the job's own on."""
    failure.trap(defer.FirstError)
    return failure.value.subFailure
