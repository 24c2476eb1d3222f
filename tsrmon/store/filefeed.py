"""A change feed for SQLite files written by writers that publish nothing.

In the daemon the reader follows the writer's own feed (``feed.py``); a
reader on its own (a reader-only process, tests and benchmarks that write
files directly) follows this one instead.  Before each read of a machine
(:meth:`FileChangeFeed.catch_up`, on the reader's thread) it asks SQLite
whether any other connection committed to the file since it last looked
(``PRAGMA data_version`` on a connection of its own) and, if so, publishes
``Change(machine, everything=True)``: the extent is unknown, so the reader
re-checks that machine's cache by checksums.  A file replaced under the
same name counts as changed too.
"""

import os
import sqlite3
import threading
import urllib.parse

from zope.interface import implementer

from tsrmon.store.contract import IChangeFeed
from tsrmon.store.feed import Change, LocalChangeFeed


@implementer(IChangeFeed)
class FileChangeFeed(LocalChangeFeed):
    """Notices commits to ``<folder>/<machine>.db`` by PRAGMA data_version."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder
        self._lock = threading.Lock()
        self._files = {}   # machine -> [file identity, connection, data_version]
        self._lost = set()  # machines whose file went away or could not be read

    def catch_up(self, machine):
        path = os.path.join(self.folder, machine + ".db")
        changed = False
        with self._lock:
            got = self._files.get(machine)
            try:
                st = os.stat(path)
            except OSError:
                if got is not None:
                    got[1].close()
                    del self._files[machine]
                    self._lost.add(machine)
                return
            ident = (st.st_dev, st.st_ino)
            try:
                if got is None or got[0] != ident:
                    if got is not None:
                        got[1].close()
                    # Another file under the same name, or one we lost sight of.
                    changed = got is not None or machine in self._lost
                    self._lost.discard(machine)
                    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
                    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                    got = self._files[machine] = [ident, conn, None]
                version = got[1].execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                # Unreadable: the reader reports it; check everything next time.
                dropped = self._files.pop(machine, None)
                if dropped is not None:
                    dropped[1].close()
                self._lost.add(machine)
                return
            if got[2] is not None and got[2] != version:
                changed = True
            got[2] = version
        if changed:
            self.publish(Change(machine, everything=True))

    def close(self):
        super().close()
        with self._lock:
            for got in self._files.values():
                got[1].close()
            self._files = {}
