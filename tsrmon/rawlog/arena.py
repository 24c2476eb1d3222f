"""Shared memory between the daemon and a raw-CSV worker process.

A batch's columns are copied once, on the reactor thread, into a memory
file both processes map (``os.memfd_create``, handed to the worker as its
file descriptor 3); only a small call naming their places crosses the pipe.
The worker formats straight from the mapping.  Without it a batch went
through the pipe: one more copy in a pool thread of the daemon, one more in
the worker, and fresh memory for every batch on both sides (measured in
docs/performance.md).

Each batch takes the lowest free span that holds it (:class:`Ring`) and
gives it back when the worker has answered, so the memory in use stays
that of the batches in flight.  A batch larger than the free space goes
through the pipe as before.
"""

import mmap
import os

import numpy as np

from tsrmon.rawlog.buffers import columns_from_raw

CHILD_FD = 3  # the mapping's file descriptor in the worker process
_ALIGN = 64  # every column starts on a cache line


def _aligned(nbytes):
    """``nbytes`` rounded up to whole cache lines."""
    return -(-nbytes // _ALIGN) * _ALIGN


def supported():
    return hasattr(os, "memfd_create")


class Ring:
    """Spans of a space of ``size`` bytes, each taken at the lowest offset
    where it fits (first fit), so the pages in use stay few: two batches in
    flight touch little more than their own size, however large the space."""

    def __init__(self, size):
        self.size = size
        self.spans = []  # [start, end] of the spans in use, by start

    def take(self, n):
        """A span ``[start, end]`` of ``n`` free bytes (rounded up to a
        cache line), or None when they do not fit now."""
        n = max(_ALIGN, _aligned(n))
        at = 0
        for i, (start, end) in enumerate(self.spans):
            if at + n <= start:
                span = [at, at + n]
                self.spans.insert(i, span)
                return span
            at = end
        if at + n > self.size:
            return None
        span = [at, at + n]
        self.spans.append(span)
        return span

    def give_back(self, span):
        """Release ``span`` (in any order)."""
        self.spans.remove(span)

    @property
    def in_use(self):
        return len(self.spans)


class Arena:
    """The daemon's side: the memory file, its mapping and its ring."""

    def __init__(self, size):
        self.fd = os.memfd_create("tsrmon-rawcsv", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.ftruncate(self.fd, size)
            self.map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        self.size = size
        self.ring = Ring(size)

    def pack(self, batch):
        """Copy the columns of ``batch`` ({(machine, sensor): FrameBuffer})
        into the ring: ``(span, keys, layout)``, or None when they do not
        fit.  ``layout`` holds (offset, bytes) of times, counts and data per key."""
        sizes = []
        total = 0
        for buf in batch.values():
            n = (len(buf.times), len(buf.counts), buf.samples)
            sizes.append(n)
            total += sum(_aligned(8 * k) for k in n)
        span = self.ring.take(total)
        if span is None:
            return None
        at = span[0]
        keys = []
        layout = []
        for (key, buf), (n_times, n_counts, n_data) in zip(batch.items(), sizes):
            keys.append(key)
            for column, n, dtype in ((buf.times, n_times, np.float64), (buf.counts, n_counts, np.int64)):
                np.frombuffer(self.map, dtype, n, at)[:] = np.frombuffer(column, dtype)
                layout.append((at, 8 * n))
                at += _aligned(8 * n)
            buf.copy_data_into(np.frombuffer(self.map, np.float64, n_data, at))
            layout.append((at, 8 * n_data))
            at += _aligned(8 * n_data)
        return span, keys, layout

    def close(self):
        self.map.close()
        os.close(self.fd)


def unpack(mapping, keys, layout):
    """The worker's side: ``{(machine, sensor): (times, counts, data)}``
    viewing the mapping (no copy), as the pipe's raw columns would be."""
    view = memoryview(mapping)
    return columns_from_raw(keys, [view[at:at + size] for at, size in layout])
