"""Shared memory between the daemon and a raw-CSV worker process.

A batch's columns are copied once, on the reactor thread, into a memory
file both processes map (``os.memfd_create``, handed to the worker as its
file descriptor 3); only a small call naming their places crosses the pipe.
The worker formats straight from the mapping.  Without it a batch went
through the pipe: one more copy in a pool thread of the daemon, one more in
the worker, and fresh memory for every batch on both sides (measured in
docs/performance.md).

The space is a ring: batches take it in call order, and the worker answers
in call order, so it is given back in that order too (:class:`Ring`).  A
batch larger than the free space goes through the pipe as before.
"""

import mmap
import os
from collections import deque

import numpy as np

CHILD_FD = 3  # the mapping's file descriptor in the worker process
_ALIGN = 64  # every column starts on a cache line


def supported():
    return hasattr(os, "memfd_create")


class Ring:
    """Offsets in a space of ``size`` bytes, taken and given back in order."""

    def __init__(self, size):
        self.size = size
        self.spans = deque()  # [start, end, released] in the order they were taken

    def take(self, n):
        """A span ``[start, end, released]`` of ``n`` free bytes (rounded up
        to a cache line), or None when they do not fit now."""
        n = max(_ALIGN, -(-n // _ALIGN) * _ALIGN)
        if n > self.size:
            return None
        if not self.spans:
            start = 0
        else:
            head, tail = self.spans[-1][1], self.spans[0][0]
            if head > tail:  # in use: [tail, head); free: [head, size) and [0, tail)
                if head + n <= self.size:
                    start = head
                elif n <= tail:
                    start = 0
                else:
                    return None
            elif head + n <= tail:  # wrapped: free is [head, tail)
                start = head
            else:
                return None
        span = [start, start + n, False]
        self.spans.append(span)
        return span

    def give_back(self, span):
        """Release ``span``; space is reused once every span before it is released too."""
        span[2] = True
        spans = self.spans
        while spans and spans[0][2]:
            spans.popleft()

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
        fit.  ``layout`` holds (offset, count) of times, counts and data per key."""
        sizes = []
        total = 0
        for buf in batch.values():
            n = (len(buf.times), len(buf.counts), buf.samples)
            sizes.append(n)
            total += sum(-(-8 * k // _ALIGN) * _ALIGN for k in n)
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
                layout.append((at, n))
                at += -(-8 * n // _ALIGN) * _ALIGN
            buf.copy_data_into(np.frombuffer(self.map, np.float64, n_data, at))
            layout.append((at, n_data))
            at += -(-8 * n_data // _ALIGN) * _ALIGN
        return span, keys, layout

    def close(self):
        self.map.close()
        os.close(self.fd)


def unpack(mapping, keys, layout):
    """The worker's side: ``{(machine, sensor): (times, counts, data)}``
    viewing the mapping (no copy)."""
    columns = {}
    for i, key in enumerate(keys):
        (t_at, t_n), (c_at, c_n), (d_at, d_n) = layout[3 * i:3 * i + 3]
        columns[tuple(key)] = (np.frombuffer(mapping, np.float64, t_n, t_at),
                               np.frombuffer(mapping, np.int64, c_n, c_at),
                               np.frombuffer(mapping, np.float64, d_n, d_at))
    return columns
