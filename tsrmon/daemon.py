"""What only the daemon process does to itself (never a test or a tool that
embeds the service tree): its exit status and its garbage-collector tuning.
``service.service_or_exit`` (twistd's plugin and ``tsrmon.tac``) calls both."""

import atexit
import gc
import logging
import os
import sys


def tune_gc_for_a_daemon():
    """Fewer garbage-collector passes over a heap full of buffered frames.

    Between flushes the rooms hold a second or more of frames (a tuple and
    a list per sensor per frame for raw CSV and statistics): hundreds of
    thousands of tracked containers.  With CPython's default generation-0
    threshold (700 allocations) the collector runs constantly and the older
    generations re-scan those buffers; profiling put ~19 % of the daemon's
    time on the CSV append that happened to trigger it.  None of these
    objects form cycles, so collecting far less often loses nothing.
    ``gc.freeze()`` moves everything imported and built at start-up out of
    the collector's sight for good.  Only the daemon process calls this.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


class ProcessExit:
    """The exit status of the daemon process, applied when it exits.

    twistd exits 0 after every reactor stop that was not a signal, and
    offers no exit code of its own (only ``reactor._exitSignal``, which ends
    the process by that signal: systemd counts SIGTERM as success).  A
    daemon that stops because it cannot serve must exit non-zero, so
    systemd (``Restart=on-failure``) and the operator learn of it.  ``arm``
    registers an ``atexit`` handler, after twistd has stopped the services,
    removed its pidfile and closed its logs; when ``code`` is set it ends
    the process with that status.  Only the daemon's entry point arms it.
    """

    def __init__(self):
        self.code = None

    def arm(self):
        # Registered early (before the rooms are imported), so the handlers
        # registered later (multiprocessing's among them) still run first.
        atexit.register(self._apply)
        return self

    def _apply(self):
        if not self.code:
            return
        logging.shutdown()  # registered before us, so os._exit would skip it
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(self.code)
