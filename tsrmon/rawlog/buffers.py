"""The raw log's in-memory side: samples waiting for the next flush, without a Python float each.

One :class:`FrameBuffer` per (machine, sensor) holds the time and sample
count of each frame in two ``array.array`` columns, and the samples as
segments: a float64 numpy array handed in is kept as it is (the hub's
``RawSink`` contract: the caller does not change values afterwards; one
``list.append``, no copy, and numpy arrays are not tracked by the cyclic
GC), and list values are copied into a float64 ``array.array`` (Python
floats are never kept: lists of floats were 4x the memory and most of the
ingest profile, docs/performance.md).  Anything that is not a plain number
is dropped and counted at the door.

At a flush the segments become one contiguous float64 array per sensor;
a batch crosses to the worker process as raw column buffers
(:func:`raw_buffers`), written to the pipe without another copy.
"""

import array

import numpy as np

_F8 = np.dtype(np.float64)


class FrameBuffer:
    """One sensor's frames since the last flush."""

    __slots__ = ("times", "counts", "segments", "samples", "_tail")

    def __init__(self):
        self.times = array.array("d")
        self.counts = array.array("q")
        self.segments = []  # float64 numpy arrays and array('d') runs of list values, in order
        self.samples = 0
        self._tail = None  # the array('d') that list values go to, while no numpy array came after it

    def add(self, t, values):
        """Append one frame; returns (samples kept, values that were not numbers)."""
        if type(values) is np.ndarray:
            if values.dtype is _F8 and values.ndim == 1:
                segment = values  # the hot path: kept, not copied
            else:
                try:
                    segment = np.ascontiguousarray(values, dtype=_F8).reshape(-1)
                except (TypeError, ValueError):
                    return self._add_slowly(t, values)
            self.segments.append(segment)
            self._tail = None
            n = len(segment)
        else:
            tail = self._tail
            if tail is None:
                tail = self._tail = array.array("d")
                self.segments.append(tail)
            before = len(tail)
            try:
                # all or nothing on a TypeError
                tail.fromlist(values if type(values) is list else list(values))
            except (TypeError, OverflowError):
                return self._add_slowly(t, values)
            n = len(tail) - before
        self.times.append(t)
        self.counts.append(n)
        self.samples += n
        return n, 0

    def _add_slowly(self, t, values):
        kept = []
        bad = 0
        for v in values:
            try:
                kept.append(float(v))
            except (TypeError, ValueError, OverflowError):
                bad += 1
        if self._tail is None:
            self._tail = array.array("d")
            self.segments.append(self._tail)
        self._tail.fromlist(kept)
        self.times.append(t)
        self.counts.append(len(kept))
        self.samples += len(kept)
        return len(kept), bad

    def __len__(self):
        return len(self.times)

    def _parts(self):
        return [np.frombuffer(s, dtype=_F8) if type(s) is array.array else s for s in self.segments]

    def data(self):
        """Every sample as one contiguous float64 array (a copy unless one segment)."""
        parts = self._parts()
        if not parts:
            return np.empty(0, dtype=_F8)
        if len(parts) == 1:
            return np.ascontiguousarray(parts[0])
        return np.concatenate(parts)

    def copy_data_into(self, out):
        """Copy every sample into ``out`` (a float64 array of ``samples`` items)."""
        parts = self._parts()
        if parts:
            np.concatenate(parts, out=out)

    def columns(self):
        """``(times, counts, data)`` as numpy arrays."""
        return (np.frombuffer(self.times, dtype=np.float64),
                np.frombuffer(self.counts, dtype=np.int64),
                self.data())


def batch_samples(batch):
    return sum(buf.samples for buf in batch.values())


def batch_frames(batch):
    return sum(len(buf.times) for buf in batch.values())


def raw_buffers(batch):
    """``{(machine, sensor): FrameBuffer}`` -> (keys, buffers): the columns
    themselves, three per key, for a raw pipe write (no copy here)."""
    keys = []
    buffers = []
    for key, buf in batch.items():
        keys.append(key)
        buffers.extend((buf.times, buf.counts, buf.data()))
    return keys, buffers


def columns_from_raw(keys, raw):
    """The inverse of :func:`raw_buffers` (in the worker): ``{key: (times, counts, data)}``."""
    return {tuple(key): (np.frombuffer(raw[3 * i], dtype=np.float64),
                         np.frombuffer(raw[3 * i + 1], dtype=np.int64),
                         np.frombuffer(raw[3 * i + 2], dtype=np.float64))
            for i, key in enumerate(keys)}


def columns_of_entries(entries):
    """``[(t, values), ...]`` -> ``(times, counts, data)``; values that are not
    numbers are dropped.  Returns the columns and how many were dropped."""
    buf = FrameBuffer()
    bad = 0
    for t, values in entries:
        bad += buf.add(t, values)[1]
    return buf.columns(), bad

