"""The change feed over PostgreSQL LISTEN/NOTIFY (``contract.IChangeFeed``).

Every commit of every node's :class:`~tsrmon.store.postgres.store.PostgresStore`
sends its changes with ``pg_notify('tsrmon_change', payload)``
(``writes.encode_change``).  :class:`PgChangeFeed` listens on a dedicated
autocommit connection in a thread of its own (psycopg's blocking
``notifies()`` generator, woken every second to notice :meth:`close`) and
delivers each change into the reactor with ``callFromThread``, so a
reader's cache on node B follows node A's commits.  Notifications from
this node are skipped: its store publishes them locally at commit.

A lost connection is re-opened (with backoff); since notifications sent
meanwhile are gone, every machine is then published as ``everything``
(its cached rows re-checked).
"""

import threading
import uuid

from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.store.contract import IChangeFeed
from tsrmon.store.feed import Change, LocalChangeFeed
from tsrmon.store.postgres.schema import CHANNEL
from tsrmon.store.postgres.writes import decode_change


@implementer(IChangeFeed)
class PgChangeFeed(LocalChangeFeed):
    """Subscribers hear this node's commits (``publish``) and every other
    node's (NOTIFY), on the reactor thread."""

    log = Logger()

    def __init__(self, dsn, reactor, node=None, poll=1.0):
        super().__init__()
        self.dsn = dsn
        self.reactor = reactor
        self.node = node or uuid.uuid4().hex
        self.poll = poll
        self.received = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        """Start listening (idempotent; the store and the reader call it from
        ``startService``, so no thread exists before twistd is running);
        ``connected`` is set once LISTEN runs."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="tsrmon-pg-feed", daemon=True)
            self._thread.start()
        return self

    def close(self):
        """Stop listening: the thread ends within ``poll`` seconds, closing
        its connection (not joined here: the reactor never waits)."""
        self._stop.set()
        self._thread = None
        super().close()

    # -- listener thread ---------------------------------------------------
    def _listen(self):
        import psycopg

        delay = 0.5
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    if not first:
                        # Notifications sent while we were away are lost.
                        machines = [r[0] for r in conn.execute("SELECT DISTINCT machine FROM sensor")]
                        for m in machines:
                            self.reactor.callFromThread(self.publish, Change(m, everything=True))
                    first = False
                    delay = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=self.poll):
                            self._deliver(note.payload)
            except Exception as e:  # psycopg.Error, or the connection went away
                self.connected.clear()
                if self._stop.is_set():
                    return
                self.reactor.callFromThread(self.log.warn, "change feed: PostgreSQL connection lost "
                                            "({error}); reconnecting", error=str(e).strip()[:200])
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _deliver(self, payload):
        try:
            node, change = decode_change(payload)
        except (ValueError, TypeError, IndexError):
            return
        if node == self.node:
            return
        self.received += 1
        self.reactor.callFromThread(self.publish, change)
