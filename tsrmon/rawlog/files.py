"""The file side of the raw CSV log: open files, appends, gzip, retention.

:class:`CSVFiles` does blocking file work only and keeps no Twisted state,
so the writer service can run it in a thread of the reactor's pool or in a
worker process (:mod:`tsrmon.rawlog.worker`).  Every call is made from one
job at a time.  Results are plain dicts, lists and strings (they cross a
pipe in the worker case); the service turns them into counters and log
lines on the reactor thread.
"""

import errno
import gzip
import io
import os
import re
import shutil
import traceback
import zoneinfo

import numpy as np

from tsrmon.rawlog import rows as csvformat
from tsrmon.rawlog import writebehind
from tsrmon.rawlog.buffers import FrameBuffer, columns_from_raw, columns_of_entries

FILE_NAME = re.compile(r"^(\d{8})_(.+)\.csv(\.gz)?$")

try:
    IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))  # pieces one writev() takes
except (AttributeError, ValueError, OSError):
    IOV_MAX = 16


def open_for_append(path):
    """The default opener: unbuffered, appending, readable (for the tail check)."""
    return open(path, "a+b", buffering=0)


class _OpenFile:
    """A CSV file kept open between flushes: its handle, size and last use."""

    __slots__ = ("path", "handle", "size", "used", "header", "dropped", "started")

    def __init__(self, path, handle, size, used, header):
        self.path = path
        self.handle = handle
        self.size = size
        self.used = used
        self.header = header  # the next write starts the file: put the header first
        # Write-behind (tsrmon.rawlog.writebehind): bytes before ``dropped`` were
        # let go from the page cache, ``[dropped, started)`` are being written
        # to disk; ``started`` is None once the advice failed for this file.
        self.dropped = self.started = size


def new_result():
    return {
        "rows": 0, "bytes": 0, "bad_values": 0, "failed_rows": 0, "refused_rows": 0,
        "errors": [],    # (path, errno or None, text) of failed appends
        "notes": [],     # warnings, one line each
        "failures": [],  # (machine, sensor, traceback text): bugs
        "opened": 0, "files_open": 0, "succeeded": 0,
        # Per sensor: (machine, sensor, path, errno, text, rows) of each failed
        # append, and (machine, sensor) of the sensors that failed at their
        # previous attempt and were written now.
        "file_errors": [], "recovered": [],
    }


# Samples formatted and appended per piece (about 8 MB of text).
PIECE_SAMPLES = 262_144


def _pieces(times, counts, data):
    """``(times, counts, data)`` cut at frame boundaries into pieces of about
    :data:`PIECE_SAMPLES` samples (a longer frame is a piece of its own)."""
    n = len(times)
    ends = np.cumsum(counts)
    if n == 0 or ends[-1] <= PIECE_SAMPLES:
        yield times, counts, data
        return
    first = lo = 0
    while first < n:
        last = max(int(np.searchsorted(ends, lo + PIECE_SAMPLES, side="right")), first + 1)
        hi = int(ends[last - 1])
        yield times[first:last], counts[first:last], data[lo:hi]
        first, lo = last, hi


def _columns(frames):
    """(columns, values dropped) of one sensor's frames in any of the accepted forms."""
    if isinstance(frames, FrameBuffer):
        return frames.columns(), 0
    if isinstance(frames, tuple):
        return frames, 0
    return columns_of_entries(frames)


def _write_all(handle, chunks):
    """Write every piece of ``chunks`` (bytes-like) to ``handle``; returns the
    bytes written.  Never joined first: that would hold the rows twice.

    A plain file gets up to :data:`IOV_MAX` pieces per ``os.writev``.  Written
    one by one, the three pieces of every 4,096 rows (label, rows, CRLF)
    each paid a whole write, file time update included: 10-11 ns a row
    against 6-7 with ``writev`` (measured on ext4).  Any other handle (a
    test's faulty file) is written piece by piece through its ``write``."""
    views = [v for v in (memoryview(piece).cast("B") for piece in chunks) if v.nbytes]
    size = sum(v.nbytes for v in views)
    if type(handle) is not io.FileIO or not hasattr(os, "writev"):
        for view in views:
            while view:
                n = handle.write(view)
                if n is None:  # only a non-blocking file says "not now"
                    raise OSError(errno.EAGAIN, "write would block")
                view = view[n:]
        return size
    fd = handle.fileno()
    i = 0
    while i < len(views):
        n = os.writev(fd, views[i:i + IOV_MAX])
        if n <= 0:
            raise OSError(errno.EIO, "writev wrote nothing")
        while i < len(views) and n >= views[i].nbytes:  # whole pieces written
            n -= views[i].nbytes
            i += 1
        if n:  # a short write ended inside this piece: the rest of it next
            views[i] = views[i][n:]
    return size


class CSVFiles:
    """The open CSV files below ``root`` and what is done to them."""

    def __init__(self, root, zone, time_format, open_file=None, idle_close=60.0, max_open=256,
                 write_behind=8 << 20):
        self.root = os.path.abspath(root)
        self.labels = csvformat.TimeLabels(zoneinfo.ZoneInfo(zone), time_format)
        self.open_file = open_file or open_for_append
        self.idle_close = idle_close
        self.max_open = max_open
        self.write_behind = write_behind  # bytes a step (DATA.WRITE_BEHIND_MB); 0 = off
        self.files = {}  # path -> _OpenFile
        self.failing = set()  # (machine, sensor) whose last append failed

    # -- appending --------------------------------------------------------------
    def write_raw(self, keys, now, raw):
        """:meth:`write_batch` for a batch sent as raw column buffers:
        ``keys`` ``[(machine, sensor), ...]``, ``raw`` three buffers per key
        (:func:`tsrmon.rawlog.buffers.raw_buffers`)."""
        return self.write_batch(columns_from_raw(keys, raw), now)

    def write_batch(self, batch, now):
        """Format and append ``{(machine, sensor): frames}``, where frames are
        a :class:`~tsrmon.rawlog.buffers.FrameBuffer`, its ``(times, counts,
        data)`` columns, or a list of ``(t, values)``."""
        result = new_result()
        for (machine, sensor), entries in batch.items():
            try:
                columns, dropped = _columns(entries)
            except Exception:
                result["failures"].append((machine, sensor, traceback.format_exc()))
                continue
            result["bad_values"] += dropped
            # A piece at a time: the text of a large batch (3-4x its float64
            # bytes) is never held whole.
            for piece in _pieces(*columns):
                self._write_piece(machine, sensor, piece, now, result)
        self._close_idle(now, result)
        result["files_open"] = len(self.files)
        return result

    def _write_piece(self, machine, sensor, columns, now, result):
        try:
            by_day, _, bad = csvformat.render_columns(*columns, self.labels)
        except Exception:
            result["failures"].append((machine, sensor, traceback.format_exc()))
            return
        result["bad_values"] += bad
        for day, (count, chunks) in by_day.items():
            if not count:
                continue  # every value unusable (counted): no file for it
            try:
                path = self.path(machine, sensor, day)
            except ValueError as e:
                result["refused_rows"] += count
                result["notes"].append(f"{e}; {count} rows dropped")
                continue
            try:
                written = self._append(path, chunks, now, result)
            except OSError as e:
                text = e.strerror or str(e)
                result["failed_rows"] += count
                result["errors"].append((path, e.errno, text))
                result["file_errors"].append((machine, sensor, path, e.errno, text, count))
                self.failing.add((machine, sensor))
            else:
                result["rows"] += count
                result["bytes"] += written
                result["succeeded"] += 1
                if self.failing and (machine, sensor) in self.failing:
                    self.failing.discard((machine, sensor))
                    result["recovered"].append((machine, sensor))

    def close_idle(self, now):
        """Close files unused for ``idle_close`` seconds (a timer calls this
        when no rows arrive, so a deleted file's space is freed)."""
        result = new_result()
        self._close_idle(now, result)
        result["files_open"] = len(self.files)
        return result

    def path(self, machine, sensor, day):
        path = os.path.normpath(os.path.join(self.root, machine, f"{day}_{sensor}.csv"))
        # Names were checked by tsrmon.names before reaching the hub; this is the backstop.
        if os.path.dirname(os.path.dirname(path)) != self.root:
            raise ValueError(f"raw CSV path {path!r} escapes DATA.PATH {self.root!r}")
        return path

    def _append(self, path, chunks, now, result):
        """Append the pieces of ``chunks`` (bytes-like) to ``path``, all or none."""
        f = self.files.get(path)
        if f is not None and os.fstat(f.handle.fileno()).st_nlink == 0:
            # Deleted under us (by hand, or a cleanup job): rows written to
            # the unlinked file would be lost, so start the file again.
            del self.files[path]
            self._close(f, result)
            result["notes"].append(f"{path} was deleted while open; starting it again")
            f = None
        if f is None:
            f = self._open(path, now, result)
        if f.header:
            chunks = [csvformat.HEADER, *chunks]
        start = f.size
        try:
            size = _write_all(f.handle, chunks)
        except OSError:
            # Cut the file back to where this batch started: no half rows.
            del self.files[path]
            try:
                f.handle.truncate(start)
            except OSError as e:
                result["notes"].append(f"could not cut {path} back to {start} bytes after a "
                                       f"failed write: {e}")
            self._close(f, result)
            raise
        f.size += size
        f.used = now
        f.header = False
        if self.write_behind and f.started is not None and f.size - f.started >= self.write_behind:
            self._write_behind(f, result)
        return size

    @staticmethod
    def _write_behind(f, result):
        try:
            writebehind.advance(f.handle.fileno(), f.dropped, f.started, f.size)
        except (OSError, ValueError) as e:
            # Advice only: the rows are written.  Said once while the file is open;
            # its pages are left to the kernel until it is opened again.
            f.started = None
            result["notes"].append(f"write-behind on {f.path} failed ({e}); "
                                   "its pages are left to the kernel")
            return
        f.dropped, f.started = f.started, f.size

    def _open(self, path, now, result):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle = self.open_file(path)
        try:
            size = handle.seek(0, os.SEEK_END)
            if size:
                size = self._repair_tail(path, handle, size, result)
        except OSError:
            handle.close()
            raise
        # Late rows for a day already gzipped continue that file (maintain_one
        # appends them as a second member): no second header.
        header = size == 0 and not os.path.exists(path + ".gz")
        f = self.files[path] = _OpenFile(path, handle, size, now, header)
        result["opened"] += 1
        if len(self.files) > self.max_open:
            oldest = min(self.files.values(), key=lambda o: o.used)
            del self.files[oldest.path]
            self._close(oldest, result)
        return f

    @staticmethod
    def _repair_tail(path, handle, size, result):
        """An existing file must end with a whole row (a crash can cut one)."""
        start = max(0, size - 65536)
        handle.seek(start)
        tail = handle.read()
        if tail.endswith(b"\n"):
            return size
        cut = tail.rfind(b"\n")
        keep = start + cut + 1 if cut >= 0 else 0
        handle.truncate(keep)
        result["notes"].append(f"{path} ended in a partial row (an earlier crash?): "
                               f"cut {size - keep} bytes")
        return keep

    @staticmethod
    def _close(f, result):
        try:
            f.handle.close()
        except OSError as e:
            result["notes"].append(f"closing {f.path} failed: {e}")

    def _close_idle(self, now, result):
        for f in [f for f in self.files.values() if now - f.used >= self.idle_close]:
            del self.files[f.path]
            self._close(f, result)

    def close_all(self):
        """Close every file; returns how many were open."""
        result = new_result()
        files = list(self.files.values())
        self.files.clear()
        for f in files:
            self._close(f, result)
        return len(files)

    # -- gzip and retention --------------------------------------------------------
    def old_files(self, gzip_before, remove_before):
        """``[(path, "gzip"|"remove"), ...]`` for files dated before the cut-offs."""
        due = []
        try:
            machines = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return due
        for machine in machines:
            folder = os.path.join(self.root, machine)
            if not os.path.isdir(folder):
                continue
            for entry in sorted(os.listdir(folder)):
                m = FILE_NAME.match(entry)
                if m is None:
                    continue
                day, gz = m.group(1), m.group(3)
                path = os.path.join(folder, entry)
                if remove_before is not None and day < remove_before:
                    due.append((path, "remove"))
                elif gzip_before is not None and day < gzip_before and not gz:
                    due.append((path, "gzip"))
        return due

    def maintain_one(self, path, action):
        """Remove or gzip one file (closing it first if it is open)."""
        f = self.files.pop(path, None)
        if f is not None:
            f.handle.close()
        if action == "remove":
            os.remove(path)
            return
        target = path + ".gz"
        part_path = target + ".part"
        # A late row may have re-created a file already gzipped: add a second
        # gzip member (gzip readers concatenate members).
        with open(path, "rb") as src, open(part_path, "wb") as part:
            if os.path.exists(target):
                with open(target, "rb") as old:
                    shutil.copyfileobj(old, part, 1 << 20)
            with gzip.GzipFile(filename=os.path.basename(path), mode="wb", fileobj=part) as gz:
                shutil.copyfileobj(src, gz, 1 << 20)
            part.flush()
            os.fsync(part.fileno())
        os.replace(part_path, target)
        os.remove(path)
