"""Running :class:`~tsrmon.rawlog.files.CSVFiles` in a worker process.

Formatting floats as text is the raw log's cost, and it holds the GIL in a
thread.  In a child process it runs on another core: the daemon copies each
sensor's float64 columns into memory both processes map
(:mod:`tsrmon.rawlog.arena`) and sends a small marshalled call naming
their places.  Where that memory is missing (not Linux) or full, a pool
thread writes the columns into the worker's stdin as raw buffers behind
the call instead.

Both ends speak length-prefixed ``marshal`` messages: the parent sends
``(call id, method, args)`` (or ``(call id, method, args, sizes)``, then
that many raw bytes, handed to the method as one more argument, a list of
bytes), the child answers ``(call id, ok, result or
traceback text)``.  The child ignores SIGINT and SIGTERM (a Ctrl-C or a
systemd stop reaches the whole process group; the parent must be able to
flush its last batch first) and exits when its stdin closes, so it never
outlives the daemon.

Child: ``python -m tsrmon.rawlog.child`` (:mod:`tsrmon.rawlog.child`, which
imports no Twisted: 13 MB less a process).  Parent: :class:`CSVWorker`.
"""

import marshal
import os
import sys
import threading

from twisted.internet import defer, protocol

from tsrmon.rawlog import arena
from tsrmon.rawlog.buffers import raw_buffers
from tsrmon.rawlog.child import HEAD

# Shared memory per worker: two flushes of FLUSH_AT_SAMPLES float64 values
# in flight, and room to spare (a bigger batch goes through the pipe).
ARENA_BYTES = 24 << 20


class WorkerGone(Exception):
    """The worker process exited while a call was pending."""


# -- parent side ---------------------------------------------------------------

class WorkerProtocol(protocol.ProcessProtocol):
    """Splits the child's stdout into replies; relays its stderr to the log."""

    def __init__(self, on_reply, on_exit, log):
        self.on_reply = on_reply
        self.on_exit = on_exit
        self.log = log
        self.buffer = bytearray()

    def outReceived(self, data):
        buf = self.buffer
        buf += data
        while len(buf) >= HEAD.size:
            (n,) = HEAD.unpack_from(buf)
            if len(buf) < HEAD.size + n:
                break
            message = bytes(buf[HEAD.size:HEAD.size + n])
            del buf[:HEAD.size + n]
            self.on_reply(*marshal.loads(message))

    def errReceived(self, data):
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                self.log.warn("raw CSV worker: {line}", line=line)

    def processEnded(self, reason):
        self.on_exit(reason)


class CSVWorker:
    """One worker process; :meth:`call` returns a Deferred with its answer.

    Calls are marshalled and written to the worker's stdin by
    ``run_in_thread`` (a blocking write that releases the GIL), so a batch
    of megabytes neither waits for reactor iterations nor blocks the
    reactor.  Replies come back through the reactor (stdout).  The process
    starts on the first call and again on the call after it died, so a
    crash costs the batch in flight, not the raw log.
    """

    def __init__(self, reactor, init_args, log, run_in_thread, arena_bytes=ARENA_BYTES):
        self.reactor = reactor
        self.arena_bytes = arena_bytes if arena.supported() else 0
        self.arena = None  # this process's shared memory (tsrmon.rawlog.arena.Arena)
        self.shared_batches = 0  # batches sent through it
        self.piped_batches = 0  # batches sent through the pipe
        self.init_args = init_args
        self.log = log
        self.run_in_thread = run_in_thread
        self.protocol = None
        self.stdin = None  # our end of the worker's stdin pipe
        self.pending = {}
        self.next_id = 0
        self.starts = 0
        self._send_lock = threading.Lock()  # one message at a time on the pipe
        self._sent = defer.succeed(None)  # the last send: the next one waits for it
        self._ended = None  # Deferreds waiting for the process to end

    @property
    def running(self):
        return self.protocol is not None

    @property
    def pid(self):
        return self.protocol.transport.pid if self.protocol is not None else None

    def _start(self):
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_parent, env.get("PYTHONPATH")) if p)
        self.starts += 1  # first: a send for the previous worker must not see the new pipe
        shared = arena.Arena(self.arena_bytes) if self.arena_bytes else None
        child_stdin, stdin = os.pipe()
        _widen_pipe(stdin)
        with self._send_lock:
            self.stdin = stdin
        self.protocol = WorkerProtocol(self._reply, self._exited, self.log)
        fds = {0: child_stdin, 1: "r", 2: "r"}
        if shared is not None:
            fds[arena.CHILD_FD] = shared.fd
        try:
            self.reactor.spawnProcess(
                self.protocol, sys.executable, [sys.executable, "-m", "tsrmon.rawlog.child"],
                env=env, childFDs=fds)
        except BaseException:
            self.protocol = None
            self._close_stdin()
            if shared is not None:
                shared.close()
            raise
        finally:
            os.close(child_stdin)
        self.arena = shared
        # Small: fits the pipe, so these writes cannot block.
        self._write(self.starts, self._encode(self._new_id(), "init", self.init_args))
        if shared is not None:
            self._write(self.starts, self._encode(self._new_id(), "map", (shared.size,)))

    def write_batch(self, batch, now):
        """Send ``{(machine, sensor): FrameBuffer}`` to be formatted and
        appended (a Deferred, as :meth:`call`): through the shared memory
        when it fits, else through the pipe."""
        if self.protocol is None:
            self._start()
        shared = self.arena
        packed = shared.pack(batch) if shared is not None else None
        if packed is None:
            self.piped_batches += 1
            keys, buffers = raw_buffers(batch)
            return self.call("write_raw", keys, now, buffers=buffers)
        span, keys, layout = packed
        self.shared_batches += 1
        d = self.call("write_shared", keys, now, layout)

        def give_back(result):
            shared.ring.give_back(span)  # the worker is done with it (or gone)
            return result

        return d.addBoth(give_back)

    def _new_id(self):
        self.next_id += 1
        return self.next_id

    @staticmethod
    def _encode(call_id, method, args, buffers=()):
        """The pieces of one message: length prefix, marshalled call, then
        ``buffers`` (bytes-like, e.g. array columns) raw, after the call
        that names their sizes: a batch's samples are not copied on the
        reactor thread at all, only by the pipe write."""
        if not buffers:
            data = marshal.dumps((call_id, method, args))  # ValueError: not plain data
            return HEAD.pack(len(data)), data
        views = [memoryview(b).cast("B") for b in buffers]
        data = marshal.dumps((call_id, method, args, [len(v) for v in views]))
        return (HEAD.pack(len(data)), data, *views)

    def _write(self, generation, data):
        with self._send_lock:
            # The worker this call was meant for may have exited meanwhile
            # (and its fd number been reused): never write to another one.
            if generation != self.starts or self.stdin is None:
                raise WorkerGone("raw CSV worker exited before this call was sent")
            for piece in data:
                view = memoryview(piece)
                while view:
                    view = view[os.write(self.stdin, view):]

    def call(self, method, *args, buffers=()):
        """Send one call; the Deferred fires with the worker's answer.

        ``args`` are marshalled here, on the calling (reactor) thread: in a
        pool thread that C call waited for the GIL behind a busy reactor and
        starved the worker (measured).  Only the pipe write, which releases
        the GIL, runs in a thread.  Raises ValueError at once if ``args``
        cannot be marshalled; the Deferred fails with :class:`WorkerGone` if
        the worker dies first.  ``buffers`` follow the call raw and reach
        the method as one more argument, a list of bytes; they must not
        change until the call is written.
        """
        if self.protocol is None:
            self._start()
        call_id = self._new_id()
        data = self._encode(call_id, method, args, buffers)
        d = self.pending[call_id] = defer.Deferred()
        # Writes go out in call order (the worker answers in that order):
        # each starts in a pool thread when the one before it is written.
        generation = self.starts
        previous, self._sent = self._sent, defer.Deferred()
        done = self._sent

        def send(_):
            sent = self.run_in_thread(self._write, generation, data)
            sent.addErrback(self._not_sent, call_id)
            sent.addBoth(lambda _: done.callback(None))

        previous.addCallback(send)
        return d

    def _not_sent(self, failure, call_id):
        d = self.pending.pop(call_id, None)
        if d is not None:
            d.errback(failure)

    def _reply(self, call_id, ok, result):
        d = self.pending.pop(call_id, None)
        if d is None:
            if not ok:  # the init call: nobody waits for it
                self.log.error("raw CSV worker could not start: {error}", error=result)
            return
        if ok:
            d.callback(result)
        else:
            d.errback(RuntimeError(f"raw CSV worker failed:\n{result}"))

    def _exited(self, reason):
        self.protocol = None
        self._close_stdin()
        pending, self.pending = self.pending, {}
        for d in pending.values():
            d.errback(WorkerGone(f"raw CSV worker exited: {reason.getErrorMessage()}"))
        if self.arena is not None:
            # Calls packed for it but not yet sent fail at their send (the
            # generation changed) and only give back ring space.
            self.arena.close()
            self.arena = None
        waiting, self._ended = self._ended, None
        for d in waiting or ():
            d.callback(None)

    def _close_stdin(self):
        if self.stdin is not None:
            with self._send_lock:  # never under a write in progress
                os.close(self.stdin)
                self.stdin = None

    def stop(self):
        """Close the worker's stdin (it finishes, closes its files, exits); fires on exit."""
        if self.protocol is None:
            return defer.succeed(None)
        d = defer.Deferred()
        if self._ended is None:
            self._ended = []
        self._ended.append(d)
        self._close_stdin()
        return d


def _widen_pipe(fd):
    """Linux: a 1 MiB pipe to the worker instead of 64 KiB (fewer wake-ups)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default works too
