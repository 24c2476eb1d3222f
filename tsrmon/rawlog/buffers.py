"""The raw log's in-memory side: samples waiting for the next flush, as flat arrays.

One :class:`FrameBuffer` per (machine, sensor) holds three ``array.array``
columns: the time of each frame, its sample count and all samples back to
back as float64.  No Python object per sample or per frame stays alive, so
a burst of millions of samples is a few contiguous blocks the cyclic GC
never walks (lists of floats were 4x the memory and most of the ingest
profile: docs/performance.md).  ``values`` handed in may be a list, a tuple
or a numpy array; anything that is not a plain number is dropped and
counted at the door.

A batch crosses to the worker process as raw column bytes
(:func:`pack_batch`): ``marshal`` of a few ``bytes`` is a copy, not a walk.
"""

import array

import numpy as np

_F8 = np.dtype("<f8")


class FrameBuffer:
    """One sensor's frames since the last flush."""

    __slots__ = ("times", "counts", "data")

    def __init__(self):
        self.times = array.array("d")
        self.counts = array.array("q")
        self.data = array.array("d")

    def add(self, t, values):
        """Append one frame; returns (samples kept, values that were not numbers)."""
        data = self.data
        before = len(data)
        if type(values) is list:
            try:
                data.fromlist(values)  # all or nothing on a TypeError
            except (TypeError, OverflowError):
                return self._add_slowly(t, values)
        elif isinstance(values, np.ndarray):
            try:
                # frombytes takes plain bytes only: a byte view of the array is one copy.
                data.frombytes(memoryview(np.ascontiguousarray(values, dtype=_F8).reshape(-1)).cast("B"))
            except (TypeError, ValueError):
                return self._add_slowly(t, values)
        else:
            try:
                data.fromlist(list(values))
            except (TypeError, OverflowError):
                return self._add_slowly(t, values)
        n = len(data) - before
        self.times.append(t)
        self.counts.append(n)
        return n, 0

    def _add_slowly(self, t, values):
        kept = []
        bad = 0
        for v in values:
            try:
                kept.append(float(v))
            except (TypeError, ValueError, OverflowError):
                bad += 1
        self.data.fromlist(kept)
        self.times.append(t)
        self.counts.append(len(kept))
        return len(kept), bad

    def __len__(self):
        return len(self.times)

    @property
    def samples(self):
        return len(self.data)

    def columns(self):
        """``(times, counts, data)`` as numpy arrays (views, no copy)."""
        return (np.frombuffer(self.times, dtype=np.float64),
                np.frombuffer(self.counts, dtype=np.int64),
                np.frombuffer(self.data, dtype=np.float64))


def batch_samples(batch):
    return sum(len(buf.data) for buf in batch.values())


def batch_frames(batch):
    return sum(len(buf.times) for buf in batch.values())


def pack_batch(batch):
    """``{(machine, sensor): FrameBuffer}`` -> plain data for ``marshal``:
    ``[(machine, sensor, times, counts, data), ...]``.  The columns stay
    ``array.array``: marshal writes any buffer as ``bytes`` (one copy, made
    straight into its output), and the worker reads them back as bytes."""
    return [(machine, sensor, buf.times, buf.counts, buf.data) for (machine, sensor), buf in batch.items()]


def unpack_batch(packed):
    """The inverse of :func:`pack_batch` (in the worker): ``{key: (times, counts, data)}``."""
    return {(machine, sensor): (np.frombuffer(times, dtype=np.float64),
                                np.frombuffer(counts, dtype=np.int64),
                                np.frombuffer(data, dtype=np.float64))
            for machine, sensor, times, counts, data in packed}


def columns_of_entries(entries):
    """``[(t, values), ...]`` -> ``(times, counts, data)``; values that are not
    numbers are dropped.  Returns the columns and how many were dropped."""
    buf = FrameBuffer()
    bad = 0
    for t, values in entries:
        bad += buf.add(t, values)[1]
    return buf.columns(), bad

