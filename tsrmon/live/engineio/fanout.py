"""Fan-out on two cores: one big flush's socket sends, from two threads.

On loopback (and mostly on a LAN) a ``send()`` costs far more in the kernel
than in Python (the kernel runs the TCP path, on loopback the receiver's
too, inside the sender's syscall), and ``socket.send`` releases the GIL while
it is in the kernel.  So the reactor thread and one helper thread take a
big flush's sends from one shared list, and the kernel work of both can run
on two cores (issue 18: 1,000 clients x 32 sensors on a 2-core host, update
p99 ~42 -> ~30 ms, tick wall ~33 -> ~23 ms; at 100 clients p99 ~5.2 -> ~3 ms;
docs/performance.md).  The GIL still serialises the Python around each send,
so the two threads do not halve the time.

The helper only calls ``socket.send`` and records what each returned; the
reactor thread waits until both are done, so nothing else writes to those
sockets meanwhile, and then settles each entry itself (what the kernel did
not take, or an error, goes to ``transport.write``; only the reactor thread
touches a transport).
"""

import queue
import threading
import time

from twisted.internet import tcp
from twisted.logger import Logger
from twisted.python.failure import Failure

FAILED = -1  # an entry's result when send() raised (not EAGAIN / EINTR)


def direct_ok(transport):
    """Bytes for ``transport`` may go straight into its socket now: a plain
    TCP connection, open, with nothing buffered (so they overtake nothing)."""
    return (type(transport) is tcp.Server and not transport.TLS and not transport.disconnecting
            and transport.connected and not transport._tempDataLen
            and transport.offset == len(transport.dataBuffer))


def send_some(pending, results):
    """Send entries ``(i, (socket, data))`` taken from the shared iterator
    ``pending`` until it is exhausted; ``results[i]``: bytes sent or FAILED.

    Both threads run this on one iterator: ``next`` on it is atomic under the
    GIL, so each entry is sent exactly once and the faster thread takes more.
    """
    for i, (sock, data) in pending:
        try:
            results[i] = sock.send(data)
        except (BlockingIOError, InterruptedError):
            results[i] = 0
        except OSError:
            results[i] = FAILED


def send_all(pairs):
    """Send every ``(socket, data)`` of ``pairs`` from this thread; the results
    (see :func:`send_some`)."""
    results = [0] * len(pairs)
    send_some(enumerate(pairs), results)
    return results


class ParallelSender:
    """The helper thread of one :class:`~.server.EngineServer` (started at its
    first big flush, ended by :meth:`stop`)."""

    log = Logger()

    def __init__(self, name="engineio-fanout"):
        self.name = name
        self._thread = None
        self._jobs = queue.SimpleQueue()
        self._done = queue.SimpleQueue()  # per job: None, or the helper's Failure
        self.stopped = False  # after stop(): sends stay on the calling thread
        self.cpu_seconds = 0.0  # the helper's CPU time in sends so far (read after a send())

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def send(self, pairs):
        """Send every ``(socket, data)`` of ``pairs`` (from this thread and the
        helper); returns when all are done: the list of results (see
        :func:`send_some`)."""
        if self.stopped:
            return send_all(pairs)
        if self._thread is None:
            thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: this flush sends alone
                return send_all(pairs)
            self._thread = thread
        results = [0] * len(pairs)
        pending = enumerate(pairs)
        self._jobs.put((pending, results))
        try:
            send_some(pending, results)
        finally:
            failed = self._done.get()  # the helper left the shared iterator: all sent
            if failed is not None:
                # Logged here, on the calling (reactor) thread; the entries it
                # did not finish go whole through transport.write.
                self.log.failure("live fan-out: the helper thread failed in a flush", failed)
        return results

    def _run(self):
        jobs, done = self._jobs, self._done
        while True:
            job = jobs.get()
            if job is None:
                return
            cpu = time.thread_time()
            failed = None
            try:
                send_some(*job)
            except BaseException:
                failed = Failure()  # reported by the waiting thread
            finally:
                self.cpu_seconds += time.thread_time() - cpu
                done.put(failed)

    def stop(self, timeout=5.0):
        """End the helper thread (joined); later flushes send inline."""
        self.stopped = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join(timeout)

    def restart(self):
        """Allow the helper again (started at the next big flush)."""
        self.stopped = False


class DirectBatch:
    """The sends one flush collected: ``(socket, data)`` per WebSocket whose
    transport could take them directly (:func:`direct_ok` at collection)."""

    __slots__ = ("pairs", "websockets")

    def __init__(self):
        self.pairs = []
        self.websockets = []  # (ws, transport), parallel to pairs

    def __len__(self):
        return len(self.pairs)

    def add(self, ws, transport, data):
        ws.direct = self
        self.pairs.append((transport.socket, data))
        self.websockets.append((ws, transport))

    def extend(self, ws, data):
        """More bytes for ``ws`` in the same flush (rare: a write caused by
        another session's flush): appended to what it holds, in order."""
        for i, (other, _) in enumerate(self.websockets):
            if other is ws:
                sock, held = self.pairs[i]
                self.pairs[i] = (sock, held + data)
                return

    def send(self, sender):
        """Send everything (``sender``: a :class:`ParallelSender`, or None to
        send from this thread only), then, on this thread, hand what the
        kernel did not take to each ``transport.write`` (which keeps it in
        order; an error is left for the reactor's next write to find and
        report, as ``send_now`` does)."""
        pairs = self.pairs
        results = send_all(pairs) if sender is None else sender.send(pairs)
        for (ws, transport), (_, data), sent in zip(self.websockets, pairs, results):
            ws.direct = None
            if sent == len(data):
                continue
            transport.write(data if sent == FAILED else data[sent:])
