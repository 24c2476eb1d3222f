"""What the raw CSV log reports: /metrics counters, /healthz, and files of single sensors that fail.

A file that fails for its own reason (not ENOSPC/EIO/EROFS/EDQUOT: a name
too long, a folder in its place) only *degrades* its sensor in
:meth:`FileHealth.healthy` until it is written again (or after
``DEGRADED_EXPIRE`` s without rows); the raw log as a whole stays healthy
(docs/storage.md).  Mixed into :class:`~tsrmon.rawlog.service.RawCSVService`,
whose state it reads.
"""

from tsrmon.peerlog import PeerLog, peer_text

_MB = 1024 * 1024


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
