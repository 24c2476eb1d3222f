"""The raw CSV log: every sample as a row of ``DATA.PATH/<machine>/YYYYMMDD_<sensor>.csv``.

The deployed layout (docs/legacy.md §2.6): header ``time,data``, one row
per sample, CRLF line ends, local arrival time ``HH:MM:SS`` (or local
ISO-8601 with milliseconds and offset when ``DATA.TIME_FORMAT`` is ``iso``).
The date in the file name is the local date (``TIME.ZONE``) of the rows it
holds, so files switch at local midnight.

How it stays off the ingest path:

- :meth:`RawCSVService.write` (called by the hub for every frame) only
  appends ``(t, values)`` to an in-memory list per sensor.  It keeps a
  reference to ``values``: the caller must not change the list afterwards.
- Every ``FLUSH_INTERVAL`` seconds (injected clock) the lists are swapped
  out and handed to one job of :class:`~tsrmon.store.csvfiles.CSVFiles`: it
  formats the rows (:mod:`tsrmon.store.csvformat`), appends each file's
  rows in one write and keeps the files open between flushes.  Files idle
  for ``DATA.IDLE_CLOSE`` seconds are closed, by the clock even when no rows
  arrive, so a deleted file frees its space.  The job runs in a thread of the reactor's pool
  (``worker="thread"``) or in a worker process (``worker="process"``,
  :mod:`tsrmon.store.csvworker`), where formatting gets a core of its own
  instead of competing for the GIL.  Jobs run one at a time (a
  :class:`~twisted.internet.defer.DeferredLock`), so open files have one
  owner; the job reports back, and the reactor thread updates counters and
  logs.
- The raw log never slows ingest down: when the disk cannot keep up
  (``MAX_BACKLOG_FRAMES`` frames waiting behind a running job), when free
  space on ``DATA.PATH`` falls below ``DATA.MIN_FREE_MB``, or when a write
  fails (ENOSPC, EIO ...), the rows concerned are dropped and counted, the
  transition is logged once, and statistics carry on untouched.  A failed
  write is cut back to the file's previous end, so no half row is left.
  A file that fails for its own reason (not ENOSPC/EIO/EROFS/EDQUOT: a name
  too long, a folder in its place) only *degrades* its sensor in
  :meth:`RawCSVService.healthy` until it is written again; the raw log as a
  whole stays healthy (docs/storage.md).
"""

import collections
import datetime
import errno
import marshal
import os
import sys
import zoneinfo

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.peerlog import PeerLog, peer_text
from tsrmon.rooms import ICounters, IHealth
from tsrmon.store import csvformat
from tsrmon.store.csvfiles import CSVFiles

_MB = 1024 * 1024
WORKERS = ("thread", "process")
# Write errors that concern the file system as a whole (the raw log is
# failing); any other errno (a name too long, a folder where the file goes,
# permissions of one file) degrades only that sensor's file.
GLOBAL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS,
                                      errno.EIO) if e is not None)


def statvfs_free_bytes(path):
    """Bytes an unprivileged process may still write below ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _synchronously(fn, *args):
    """Run a job on the calling thread (tests and benchmarks without a reactor)."""
    return defer.maybeDeferred(fn, *args)


@implementer(IHealth, ICounters)
class RawCSVService(service.Service):
    """Buffered writer of the raw CSV log; implements the hub's ``RawSink``.

    ``clock`` drives the flush, free-space and day-change timers;
    ``reactor`` provides the thread pool (and spawns the worker process).
    Without a reactor, thread jobs run inline (tests and benchmarks).
    ``free_space(path)`` (bytes) and ``open_file(path)`` are injectable for
    tests (thread worker only: they do not cross into a process).
    """

    log = Logger()
    name = "rawcsv"
    health_key = "raw_csv"  # IHealth: its /healthz check
    counters_key = "raw"  # ICounters: its /metrics prefix

    FLUSH_INTERVAL = 1.0
    SPACE_INTERVAL = 10.0
    # Files unused this long are closed (clock-driven, so a deleted file's
    # space is freed even when no rows arrive); DATA.IDLE_CLOSE if set.
    IDLE_CLOSE = 60.0
    # A degraded file with no failure for this long is forgotten (its sensor
    # is gone): /healthz recovers without a restart.
    DEGRADED_EXPIRE = 3600.0
    MAX_HEALTH_DETAIL = 20
    MAX_OPEN_FILES = 256
    # About 200 MB of 30-float frames; minutes at deployed rates, seconds at 50,000 frames/s.
    MAX_BACKLOG_FRAMES = 200_000

    def __init__(self, config, clock, reactor=None, *, worker="thread", free_space=None,
                 open_file=None, run_in_thread=None):
        data = config["DATA"]
        self.enabled = bool(data["ENABLED"])
        self.root = os.path.abspath(data["PATH"])
        self.time_format = data["TIME_FORMAT"]
        self.gzip_after_days = data["GZIP_AFTER_DAYS"]
        self.retention_days = data["RETENTION_DAYS"]
        self.min_free_bytes = data["MIN_FREE_MB"] * _MB
        # Resume only a little above the floor, so a disk hovering at the
        # limit does not flap between paused and writing every check.
        self.resume_free_bytes = self.min_free_bytes + max(_MB, self.min_free_bytes // 20)
        self.tz = zoneinfo.ZoneInfo(config["TIME"]["ZONE"])
        self.clock = clock
        self.free_space = free_space or statvfs_free_bytes
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
        self.idle_close = float(data.get("IDLE_CLOSE", self.IDLE_CLOSE))
        files_args = (self.root, config["TIME"]["ZONE"], self.time_format, None,
                      self.idle_close, self.MAX_OPEN_FILES)
        if worker == "thread":
            self.files = CSVFiles(*files_args)  # touched by one job at a time
            if open_file is not None:
                self.files.open_file = open_file
            self._worker = None
        else:
            from tsrmon.store.csvworker import CSVWorker
            self.files = None
            self._worker = CSVWorker(reactor, files_args, self.log, run_in_thread)
        self._day_labels = csvformat.TimeLabels(self.tz, "hms")  # reactor thread only

        self._buffers = collections.defaultdict(list)  # (machine, sensor) -> [(t, values)]
        self._accepting = self.enabled  # False while paused or after stop
        self._stopped = False
        self._jobs = defer.DeferredLock()
        self._flushes_pending = 0
        # The worker process formats one batch while the next one is
        # marshalled and sent; a thread job holds the GIL, so one at a time.
        self._max_flushes = 1 if worker == "thread" else 2
        self._maintenance_waiters = None  # a list while gzip/retention runs
        self._loops = []
        self._today = None
        self._paused = False
        self._paused_since = None
        self._dropped_at_pause = 0
        self._backlogged = False
        self._failing = False
        self._failed_at_failure = 0
        self._last_error = None
        self._free_bytes = None
        self._degraded = {}  # (machine, sensor) -> what failed, since when, rows dropped
        self._peerlog = None

        self.rows_written = 0
        self.bytes_written = 0
        self.files_opened = 0
        self.files_open = 0
        self.flushes = 0
        self.write_errors = 0
        self.dropped_low_space = 0
        self.dropped_write_error = 0
        self.dropped_backlog = 0
        self.dropped_bad_values = 0
        self.dropped_refused = 0
        self.dropped_stopped = 0
        self.gzipped_files = 0
        self.removed_files = 0
        self.maintenance_errors = 0
        self.idle_closes = 0

    # -- the hub's side (reactor thread, hot path) ------------------------
    def write(self, machine, sensor, values, t):
        """Buffer the samples of one frame (``t``: seconds since the epoch)."""
        if self._accepting:
            self._buffers[machine, sensor].append((t, values))
        elif self.enabled:
            self._refuse(values)

    def _refuse(self, values):
        if self._stopped:
            self.dropped_stopped += len(values)
            if self.dropped_stopped == len(values):
                self.log.warn("raw CSV: samples arrived after the writer stopped; they are dropped")
        else:
            self.dropped_low_space += len(values)

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
        d.addErrback(lambda f: self.log.failure("raw CSV: final flush failed", f))
        d.addCallback(lambda _: self._job("close_all"))
        d.addCallback(self._closed)
        d.addErrback(lambda f: self.log.failure("raw CSV: closing files failed", f))
        if self._worker is not None:
            d.addCallback(lambda _: self._worker.stop())
        return d

    def _job(self, method, *args):
        """Run a :class:`CSVFiles` method where the files live; a Deferred.

        Jobs run in the order they were asked for, one at a time: a lock for
        the thread; for the worker process, its pipe and its single thread.
        """
        if self._worker is None:
            if method == "ping":
                return self._jobs.run(defer.succeed, None)
            return self._jobs.run(self._run_in_thread, getattr(self.files, method), *args)
        try:
            if method != "write_batch":
                return self._worker.call(method, *args)
            return self._worker.call("write_chunks", *_marshal_batch(args))
        except Exception:
            # The worker could not be started (fork, pipe) or marshal refused
            # something: this job fails like any other, the next one retries.
            return defer.fail()

    def _closed(self, closed):
        self.files_open = 0
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
        if self._flushes_pending >= self._max_flushes:
            # The previous flush is still queued or writing: let the buffers
            # wait, within bounds.
            self._check_backlog()
            return
        self.flush().addErrback(lambda f: self.log.failure("raw CSV: flush failed", f))

    def flush(self):
        """Hand everything buffered to a write job; fires when it is written."""
        batch = self._buffers
        self._buffers = collections.defaultdict(list)
        self._flushes_pending += 1
        if batch:
            d = self._job("write_batch", batch, self.clock.seconds())
            d.addCallbacks(self._batch_done, self._batch_lost, errbackArgs=(batch,))
        elif self.files_open:
            # Nothing to write but files open: close the idle ones.
            d = self._job("close_idle", self.clock.seconds())
            d.addCallback(self._idle_closed)
            d.addErrback(lambda f: self.log.debug("raw CSV: closing idle files: {error}",
                                                  error=f.getErrorMessage()))
        else:
            d = self._job("ping")  # fires once the jobs before it are done
            # Nothing was buffered, so nothing is lost; the batches around it
            # report the worker's trouble.
            d.addErrback(lambda f: self.log.debug("raw CSV: empty flush: {error}",
                                                  error=f.getErrorMessage()))
        d.addBoth(self._flush_finished)
        return d

    def _flush_finished(self, result):
        self._flushes_pending -= 1
        if self._backlogged and not self._flushes_pending:
            self._backlogged = False
            self.log.info("raw CSV: the disk caught up; {n} samples were dropped in all",
                          n=self.dropped_backlog)
        return result

    def _check_backlog(self):
        frames = sum(len(entries) for entries in self._buffers.values())
        if frames <= self.MAX_BACKLOG_FRAMES:
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
        self._buffers = collections.defaultdict(list)
        return sum(len(values) for entries in batch.values() for _, values in entries)

    def _idle_closed(self, result):
        closed = self.files_open - result["files_open"]
        if closed > 0:
            self.idle_closes += closed
        self.files_open = result["files_open"]
        for note in result["notes"]:
            self.log.warn("raw CSV: {note}", note=note)

    def _batch_done(self, result):
        """Reactor thread: account for a job and log what it met."""
        self.flushes += 1
        self.rows_written += result["rows"]
        self.bytes_written += result["bytes"]
        self.files_opened += result["opened"]
        self.files_open = result["files_open"]
        self.dropped_bad_values += result["bad_values"]
        self.dropped_refused += result["refused_rows"]
        for machine, sensor, text in result["failures"]:
            self.log.critical("raw CSV: formatting {machine}/{sensor} failed; its rows of this "
                              "flush are dropped:\n{traceback}",
                              machine=machine, sensor=sensor, traceback=text)
        if result["bad_values"]:
            self.log.warn("raw CSV: {n} values were not numbers and were not written",
                          n=result["bad_values"])
        for note in result["notes"]:
            self.log.warn("raw CSV: {note}", note=note)
        errors = result["errors"]
        if errors:
            self.write_errors += len(errors)
            self.dropped_write_error += result["failed_rows"]
            path, _, text = errors[0]
            self._last_error = f"{path}: {text}"
        now = self.clock.seconds()
        for machine, sensor, path, eno, text, rows in result.get("file_errors", ()):
            if eno not in GLOBAL_ERRNOS:
                self._file_failed(machine, sensor, path, text, rows, now)
        for machine, sensor in result.get("recovered", ()):
            self._file_recovered(machine, sensor)
        errors = [e for e in errors if e[1] in GLOBAL_ERRNOS]
        if errors:
            failed = sum(e[5] for e in result.get("file_errors", ()) if e[3] in GLOBAL_ERRNOS)
            path, _, text = errors[0]
            if not self._failing:
                self._failing = True
                self._failed_at_failure = self.dropped_write_error - failed
                self.log.error("raw CSV: writing {path} failed ({error}); {rows} rows of this "
                               "flush dropped ({files} files failed); retrying at every flush, "
                               "statistics are not affected",
                               path=path, error=text, rows=failed, files=len(errors))
        elif self._failing and result["succeeded"]:
            self._failing = False
            self.log.info("raw CSV: writes succeed again; {rows} rows were dropped while they failed",
                          rows=self.dropped_write_error - self._failed_at_failure)
        return result

    # -- one sensor's file --------------------------------------------------------
    @property
    def peerlog(self):
        if self._peerlog is None:
            self._peerlog = PeerLog(self.log, self.clock)
        return self._peerlog

    def _file_failed(self, machine, sensor, path, text, rows, now):
        key = (machine, sensor)
        entry = self._degraded.get(key)
        if entry is None:
            entry = self._degraded[key] = {"file": path, "error": text, "since": now,
                                           "last": now, "failures": 0, "dropped_rows": 0}
            self.peerlog.error(machine, "raw-csv-file",
                               "raw CSV: cannot write the file of {machine}/{sensor} ({error}); "
                               "{rows} rows dropped, retried at every flush; other files go on",
                               machine=peer_text(machine), sensor=peer_text(sensor), error=text,
                               rows=rows)
        entry.update(file=path, error=text, last=now)
        entry["failures"] += 1
        entry["dropped_rows"] += rows

    def _file_recovered(self, machine, sensor):
        entry = self._degraded.pop((machine, sensor), None)
        if entry is not None:
            self.peerlog.info(machine, "raw-csv-file-ok",
                              "raw CSV: the file of {machine}/{sensor} is written again; {rows} "
                              "rows were dropped in {n} failed flushes",
                              machine=peer_text(machine), sensor=peer_text(sensor),
                              rows=entry["dropped_rows"], n=entry["failures"])

    def _expire_degraded(self):
        now = self.clock.seconds()
        for key, entry in list(self._degraded.items()):
            if now - entry["last"] >= self.DEGRADED_EXPIRE:
                del self._degraded[key]
                self.log.info("raw CSV: no rows for {machine}/{sensor} for {s:.0f} s since its "
                              "file failed ({rows} rows dropped); no longer reported",
                              machine=peer_text(key[0]), sensor=peer_text(key[1]),
                              s=now - entry["last"], rows=entry["dropped_rows"])

    def _batch_lost(self, failure, batch):
        """The job itself failed (the worker process died, or a bug): count, log, go on."""
        lost = sum(len(values) for entries in batch.values() for _, values in entries)
        self.write_errors += 1
        self.dropped_write_error += lost
        self._last_error = failure.getErrorMessage()
        if not self._failing:
            self._failing = True
            self._failed_at_failure = self.dropped_write_error - lost
            self.log.failure("raw CSV: a write job failed; {rows} rows of this flush dropped; "
                             "retrying at every flush", failure, rows=lost)

    # -- free space ----------------------------------------------------------
    def check_space(self):
        """Measure free space on DATA.PATH (in a thread); pause or resume."""
        d = self._run_in_thread(self.free_space, self.root)
        d.addCallbacks(self._space_measured, self._space_unknown)
        return d

    def _space_measured(self, free):
        self._free_bytes = free
        if not self._paused and free < self.min_free_bytes:
            self._paused = True
            self._paused_since = self.clock.seconds()
            self._accepting = False
            dropped = self._drop_buffers()
            self.dropped_low_space += dropped
            self._dropped_at_pause = self.dropped_low_space - dropped
            self.log.error("raw CSV PAUSED: only {free} MB free on {root} (DATA.MIN_FREE_MB is "
                           "{floor}); raw samples are dropped until space returns, statistics go on",
                           free=free // _MB, root=self.root, floor=self.min_free_bytes // _MB)
        elif self._paused and free >= self.resume_free_bytes:
            self._paused = False
            self._accepting = self.enabled and not self._stopped
            self.log.warn("raw CSV resumed: {free} MB free on {root}; {n} samples were dropped "
                          "during {s:.0f} s of pause",
                          free=free // _MB, root=self.root,
                          n=self.dropped_low_space - self._dropped_at_pause,
                          s=self.clock.seconds() - self._paused_since)

    def _space_unknown(self, failure):
        # Keep the previous state: a failing statvfs says nothing about space.
        self.log.failure("raw CSV: cannot measure free space on {root}", failure, root=self.root)

    # -- gzip and retention ----------------------------------------------------
    def maintain(self):
        """Gzip and delete old files (named by their date), one file per job.

        A file is "older than N days" when its date is before today - N
        (local), i.e. every row in it is more than N days old; the log
        folder uses the same rule (LOGGER.RETENTION_DAYS).  The Deferred
        fires when every file is done; a call while a run is going on joins
        that run instead of listing the same files again.
        """
        waiter = defer.Deferred()
        if self._maintenance_waiters is not None:
            self._maintenance_waiters.append(waiter)
            return waiter
        self._maintenance_waiters = [waiter]
        today = datetime.datetime.strptime(self._day_labels.day(self.clock.seconds()), "%Y%m%d")
        gzip_before = remove_before = None
        if self.gzip_after_days:
            gzip_before = (today - datetime.timedelta(days=self.gzip_after_days)).strftime("%Y%m%d")
        if self.retention_days:
            remove_before = (today - datetime.timedelta(days=self.retention_days)).strftime("%Y%m%d")
        d = self._job("old_files", gzip_before, remove_before)
        d.addCallback(self._maintain_files)
        d.addErrback(lambda f: self.log.failure("raw CSV: listing {root} failed", f, root=self.root))
        d.addBoth(self._maintenance_over)
        return waiter

    def _maintenance_over(self, _):
        waiters, self._maintenance_waiters = self._maintenance_waiters, None
        for waiter in waiters:
            waiter.callback(None)

    def _maintain_files(self, due):
        # One job per file, queued only when the previous one is done, so a
        # flush gets its turn between two big gzips.
        due = list(due)

        def next_file(_=None):
            if not due or self._stopped:
                return None
            path, action = due.pop(0)
            d = self._job("maintain_one", path, action)
            d.addCallbacks(self._maintained, self._maintain_failed,
                           callbackArgs=(path, action), errbackArgs=(path, action))
            d.addCallback(next_file)
            return d

        return next_file()

    def _maintained(self, _, path, action):
        if action == "remove":
            self.removed_files += 1
            self.log.info("raw CSV: removed {path} (DATA.RETENTION_DAYS is {n})",
                          path=path, n=self.retention_days)
        else:
            self.gzipped_files += 1
            self.log.debug("raw CSV: gzipped {path}", path=path)

    def _maintain_failed(self, failure, path, action):
        self.maintenance_errors += 1
        self.log.failure("raw CSV: could not {action} {path}", failure, action=action, path=path)

    # -- reporting -----------------------------------------------------------
    def counters(self):
        """Flat numbers for /metrics and /healthz."""
        buffered = sum(len(entries) for entries in self._buffers.values())
        return {
            "enabled": self.enabled,
            "paused": self._paused,
            "failing": self._failing,
            "rows_written": self.rows_written,
            "bytes_written": self.bytes_written,
            "flushes": self.flushes,
            "files_opened": self.files_opened,
            "files_open": self.files_open,
            "buffered_frames": buffered,
            "write_errors": self.write_errors,
            "dropped_low_space": self.dropped_low_space,
            "dropped_write_error": self.dropped_write_error,
            "dropped_backlog": self.dropped_backlog,
            "dropped_bad_values": self.dropped_bad_values,
            "dropped_refused": self.dropped_refused,
            "dropped_stopped": self.dropped_stopped,
            "gzipped_files": self.gzipped_files,
            "removed_files": self.removed_files,
            "maintenance_errors": self.maintenance_errors,
            "free_bytes": self._free_bytes,
            "files_degraded": len(self._degraded),
            "idle_closes": self.idle_closes,
        }

    def healthy(self):
        """``ok`` is False while the raw log as a whole drops rows (paused,
        disk behind, or write errors of the file system: ENOSPC, EIO, EROFS,
        EDQUOT).  Files of single sensors that fail for another reason are
        ``degraded`` detail with ``ok`` True; each entry goes away when its
        file is written again (or after ``DEGRADED_EXPIRE`` s without rows)."""
        if not self.enabled:
            state = "disabled"
        elif self._paused:
            state = "paused: low disk space"
        elif self._failing:
            state = "write errors"
        elif self._backlogged:
            state = "disk behind"
        elif self._degraded:
            state = "degraded"
        else:
            state = "ok"
        out = {
            "ok": state in ("ok", "disabled", "degraded"),
            "state": state,
            "path": self.root,
            "free_mb": None if self._free_bytes is None else self._free_bytes // _MB,
            "min_free_mb": self.min_free_bytes // _MB,
            "last_error": self._last_error,
        }
        if self._degraded:
            detail = {}
            for (machine, sensor), entry in self._degraded.items():
                if len(detail) >= self.MAX_HEALTH_DETAIL:
                    break
                detail[f"{peer_text(machine)}/{peer_text(sensor)}"] = {
                    "file": peer_text(entry["file"], 300), "error": entry["error"],
                    "since": entry["since"], "failures": entry["failures"],
                    "dropped_rows": entry["dropped_rows"]}
            out["degraded"] = detail
            out["degraded_count"] = len(self._degraded)
        return out

    health = healthy  # IHealth

# Entries per marshalled piece: the worker decodes one piece at a time.
MARSHAL_CHUNK = 2000


def _marshal_batch(args):
    """``(batch, now)`` -> ``(marshalled pieces, now)`` for the worker process."""
    batch, now = args
    chunks = []
    dumps = marshal.dumps
    version = 2  # binary floats, no back-reference table: the fastest here
    for key, entries in batch.items():
        for first in range(0, len(entries), MARSHAL_CHUNK):
            part = entries[first:first + MARSHAL_CHUNK]
            # A float64 array (long chunks from ingest) travels as its bytes,
            # tagged; anything else that is not a list becomes one.
            if not {type(v) for _, v in part} <= _SEQUENCES:
                part = [(t, v if type(v) in _SEQUENCES else csvformat.pack_array(v)) for t, v in part]
            try:
                chunks.append(dumps((key, part), version))
            except ValueError:  # numpy scalars inside a list, say
                part = [(float(t), [float(x) for x in v]) for t, v in part]
                chunks.append(dumps((key, part), version))
    return chunks, now


_SEQUENCES = frozenset({list, tuple})
