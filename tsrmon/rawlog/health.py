"""What the raw CSV log reports: what its write jobs met, /metrics counters,
/healthz, and files of single sensors that fail.

A file that fails for its own reason (not ENOSPC/EIO/EROFS/EDQUOT: a name
too long, a folder in its place) only *degrades* its sensor in
:meth:`FileHealth.healthy` until it is written again (or after
``DEGRADED_EXPIRE`` s without rows); the raw log as a whole stays healthy
(docs/storage.md).  Mixed into :class:`~tsrmon.rawlog.service.RawCSVService`,
whose state it reads.
"""

import errno

from tsrmon.peerlog import PeerLog, peer_text

_MB = 1024 * 1024
# Write errors that concern the file system as a whole (the raw log is
# failing); any other errno (a name too long, a folder where the file goes,
# permissions of one file) degrades only that sensor's file.
GLOBAL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS,
                                      errno.EIO) if e is not None)


class FileHealth:
    """Degraded sensor files, counters and health of the raw log."""

    def __init__(self):
        self._degraded = {}  # (machine, sensor) -> what failed, since when, rows dropped
        self._peerlog = None
        self.idle_closes = 0

    @property
    def peerlog(self):
        if self._peerlog is None:
            self._peerlog = PeerLog(self.log, self.clock)
        return self._peerlog

    def _batch_done(self, result, index=0):
        """Reactor thread: account for one worker's job and log what it met."""
        self.rows_written += result["rows"]
        self.bytes_written += result["bytes"]
        self.files_opened += result["opened"]
        self._set_open(index, result["files_open"])
        self.dropped_bad_values += result["bad_values"]
        self.dropped_refused += result["refused_rows"]
        for machine, sensor, text in result["failures"]:
            self.log.critical("raw CSV: formatting {machine}/{sensor} failed; its rows of this "
                              "flush are dropped:\n{traceback}",
                              machine=machine, sensor=sensor, traceback=text)
        if result["bad_values"]:
            self.log.warn("raw CSV: {n} values were not numbers and were not written",
                          n=result["bad_values"])
            self._bad_logged += result["bad_values"]
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

    def _batch_lost(self, failure, lost):
        """The job itself failed (the worker process died, or a bug): count, log, go on."""
        self.write_errors += 1
        self.dropped_write_error += lost
        self._last_error = failure.getErrorMessage()
        if not self._failing:
            self._failing = True
            self._failed_at_failure = self.dropped_write_error - lost
            self.log.failure("raw CSV: a write job failed; {rows} rows of this flush dropped; "
                             "retrying at every flush", failure, rows=lost)

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

    # -- reporting -----------------------------------------------------------
    def counters(self):
        """Flat numbers for /metrics and /healthz."""
        return {
            "enabled": self.enabled,
            "paused": self._paused,
            "failing": self._failing,
            "congested": self._congested,
            "rows_written": self.rows_written,
            "bytes_written": self.bytes_written,
            "flushes": self.flushes,
            "early_flushes": self.early_flushes,
            "backpressure_episodes": self.backpressure_episodes,
            "files_opened": self.files_opened,
            "files_open": self.files_open,
            "buffered_frames": sum(len(buf) for buf in self._buffers.values()),
            "buffered_samples": self._buffered,
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
