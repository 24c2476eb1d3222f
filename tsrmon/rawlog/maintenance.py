"""The raw CSV log's care of its disk: free space, gzip and retention.

- Free space on ``DATA.PATH`` is measured every ``SPACE_INTERVAL`` s (in a
  thread); below ``DATA.MIN_FREE_MB`` the log pauses (buffered and new raw
  samples are dropped and counted, statistics go on) and resumes a little
  above the floor.
- Files are gzipped after ``DATA.GZIP_AFTER_DAYS`` and removed after
  ``DATA.RETENTION_DAYS``, judged by the date in their name, one file per
  job so flushes get their turn between two big gzips.

Mixed into :class:`~tsrmon.rawlog.service.RawCSVService`, whose clock, jobs
and log it uses.
"""

import datetime
import os

from twisted.internet import defer

_MB = 1024 * 1024


def statvfs_free_bytes(path):
    """Bytes an unprivileged process may still write below ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class DiskCare:
    """Free-space pause and the gzip/retention runs."""

    def __init__(self, data, free_space=None):
        self.gzip_after_days = data.gzip_after_days
        self.retention_days = data.retention_days
        self.min_free_bytes = data.min_free_mb * _MB
        # Resume only a little above the floor, so a disk hovering at the
        # limit does not flap between paused and writing every check.
        self.resume_free_bytes = self.min_free_bytes + max(_MB, self.min_free_bytes // 20)
        self.free_space = free_space or statvfs_free_bytes
        self._paused = False
        self._paused_since = None
        self._dropped_at_pause = 0
        self._free_bytes = None
        self._maintenance_waiters = None  # a list while gzip/retention runs
        self.dropped_low_space = 0
        self.gzipped_files = 0
        self.removed_files = 0
        self.maintenance_errors = 0

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
            # The worker that may hold the file open does it (it closes it first).
            d = self._job("maintain_one", path, action, worker=self.owners.of_path(path))
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
