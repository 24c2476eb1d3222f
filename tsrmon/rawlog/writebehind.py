"""Write-behind for the raw CSV files: start writing appended text to disk
early, and let the page cache drop what is already there.

The raw log is written once and read rarely, at about 30 bytes a sample
(hundreds of MB a second at full rate).  Left to the kernel, that text stays
dirty in the page cache for up to ``vm.dirty_expire_centisecs`` (30 s), is
written out in bursts, and stays cached long after, crowding out what is
read (SQLite's pages).  Every ``DATA.WRITE_BEHIND_MB`` appended to a file,
:func:`advance` asks the kernel to start writing the new range
(``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not wait for the
disk) and to drop the range before it, whose writing began one step earlier
(``posix_fadvise(POSIX_FADV_DONTNEED)``; pages still being written are
kept).  PostgreSQL's ``*_flush_after`` settings do the same for its files.

It also makes appends cheaper: the pages dropped are reused for the next
appends while still warm, where a fresh page of a mostly free memory can cost
microseconds to touch on a VM whose host has taken it back (numbers in
docs/performance.md).

Both calls are advice.  Where they do not exist (not Linux) nothing is done;
a failure is reported by the caller once while the file is open, and the
rows stay written.
"""

import ctypes
import functools
import os

_SYNC_FILE_RANGE_WRITE = 2


@functools.lru_cache(maxsize=None)
def _sync_file_range():
    """libc's ``sync_file_range``, or None where there is none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


def supported():
    """Whether this platform has both calls."""
    return _sync_file_range() is not None and hasattr(os, "posix_fadvise")


def advance(fd, dropped, started, end):
    """Start writing ``[started, end)`` of ``fd`` to disk and drop
    ``[dropped, started)`` from the page cache; raises OSError."""
    if not supported():
        return
    if end > started and _sync_file_range()(fd, started, end - started, _SYNC_FILE_RANGE_WRITE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    if started > dropped:
        os.posix_fadvise(fd, dropped, started - dropped, os.POSIX_FADV_DONTNEED)
