"""The raw-CSV worker process: answers :class:`~tsrmon.rawlog.worker.CSVWorker`'s calls.

Run as ``python -m tsrmon.rawlog.child`` by the daemon; it imports no
Twisted (13 MB of every worker process).  The message format is described
in :mod:`tsrmon.rawlog.worker`.
"""

import marshal
import mmap
import os
import signal
import struct
import sys
import traceback

from tsrmon.rawlog import arena

HEAD = struct.Struct("<I")  # a message's length, before it (both ends)
_METHODS = frozenset({"write_batch", "write_raw", "old_files", "maintain_one", "close_all",
                      "close_idle"})


def _read_exact(stream, n):
    data = stream.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = stream.read(n - got)
        if not more:
            raise EOFError("the parent closed the pipe mid-message")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def serve(inp, out):
    """Answer calls until ``inp`` ends (or the parent is gone); close every file then."""
    from tsrmon.rawlog.files import CSVFiles

    files = None
    mapping = None  # the shared memory (tsrmon.rawlog.arena), once mapped
    try:
        while True:
            head = _read_exact(inp, HEAD.size)
            if not head:
                break
            call = marshal.loads(_read_exact(inp, HEAD.unpack(head)[0]))
            call_id, method, args = call[:3]
            if len(call) == 4:  # raw buffers follow: one more argument
                args = (*args, [_read_exact(inp, n) for n in call[3]])
            try:
                if method == "init":
                    files = CSVFiles(*args)
                    result = None
                elif method == "map":
                    mapping = mmap.mmap(arena.CHILD_FD, args[0])
                    os.close(arena.CHILD_FD)
                    result = None
                elif method == "write_shared" and files is not None and mapping is not None:
                    keys, now, layout = args
                    result = files.write_batch(arena.unpack(mapping, keys, layout), now)
                elif method == "ping":  # answered after every call sent before it
                    result = None
                elif method in _METHODS and files is not None:
                    result = getattr(files, method)(*args)
                else:
                    raise ValueError(f"unknown call {method!r}")
                reply = marshal.dumps((call_id, True, result))
            except Exception:
                reply = marshal.dumps((call_id, False, traceback.format_exc()))
            out.write(HEAD.pack(len(reply)) + reply)
            out.flush()
    except (BrokenPipeError, EOFError):
        pass  # the daemon died (SIGKILL): its batch is written, nobody to answer
    finally:
        if files is not None:
            files.close_all()


def _keep_freed_memory():
    """glibc: keep freed memory for the next batch rather than returning it
    to the kernel at once.  Each batch allocates its text anew (tens of MB a
    second); handed back and faulted in again, those pages were a tenth of
    the worker's time (measured on a VM, where a fresh page costs the host
    too).  Bounded: at most M_TRIM_THRESHOLD free at the top of the heap."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc: its own policy stands
    mallopt(-1, 16 << 20)  # M_TRIM_THRESHOLD
    mallopt(-2, 4 << 20)  # M_TOP_PAD: grow the heap in 4 MB steps
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: texts of a batch come from the heap


def main():
    _keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
