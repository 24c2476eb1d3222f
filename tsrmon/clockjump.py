"""Wall-clock jumps: keep every pending timer on its real-time schedule.

Twisted schedules ``DelayedCall``s on the reactor's ``seconds()``, which is
the wall clock (``time.time``).  When the operator or a late NTP sync steps
the clock back by an hour, every pending call (statistics flushes and
rollovers, live updates, Engine.IO pings, alarm checks, the watchdog) waits
an extra hour; a forward step makes them all fire at once.  ``LoopingCall``
re-aligns by itself once it runs again, so only the calls that are pending
at the moment of the step need help.

:class:`ClockJumpService` compares how far the wall clock moved with how far
an elapsed-time clock moved (``CLOCK_BOOTTIME``: monotonic, and it counts a
suspend as elapsed time, so a resume is not mistaken for a jump).  A
difference beyond ``threshold`` is a jump: every pending call is moved by
it, so it keeps its remaining real delay.  The comparison runs in the
reactor thread from two sources:

- a ``callLater`` sentinel every ``period``: it runs before the calls that
  were due after it, so after a forward step at most the calls due within
  one period fire early;
- a daemon thread sleeping on the monotonic clock, which pokes the reactor
  (``callFromThread``) when the sentinel has not run for 1.5 periods: after
  a backward step the sentinel is itself one of the stalled calls.
  (Linux's ``timerfd`` with ``TFD_TIMER_CANCEL_ON_SET`` would report steps
  without a thread, but Python has it from 3.13 only and libfaketime, which
  the tests use, cannot trigger it.)

A call scheduled (or ``reset``) since the previous check may already be on
the new timeline, so it is only ever moved earlier (backward jumps): such a
call can fire early, but no call is ever pushed an hour late.

What follows the new wall clock, by design: every timestamp and bucket
label (statistics buckets, raw CSV day files, live ``time`` texts, log
lines) is taken from ``seconds()`` when the data arrives, so after a step
back by an hour new samples are added to the hour bucket of the new wall
time again (merged, never lost), and after a step forward the skipped hour
simply has no rows.  Only timers are corrected.
"""

import heapq
import threading
import time

from twisted.application import service
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.rooms import ICounters, IHealth

log = Logger()


def elapsed_clock():
    """Seconds from an arbitrary origin that never jump (boot time if the OS has it)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        try:
            time.clock_gettime(boottime)
            return lambda: time.clock_gettime(boottime)
        except OSError:
            pass
    return time.monotonic


def shift_delayed_calls(calls, jump, known=None, heap=None):
    """Move each pending call in ``calls`` by ``jump`` seconds.

    ``known`` maps the calls seen at the previous check to their
    ``getTime()`` then.  A call missing from it, or whose time changed, was
    scheduled or reset since and may already be on the new timeline: it is
    moved only when the move is earlier (``jump < 0``), so it may fire
    early but never stalls.  With ``known=None`` every call is moved.

    ``heap`` is the reactor's own heap of pending calls when it has one
    (``ReactorBase._pendingTimedCalls``).  ``DelayedCall.delay`` with a
    negative amount makes Twisted look the call up in that heap by a linear
    search, so moving every call earlier costs O(n²) (2.3 s for 5,000 calls
    measured); with the heap, earlier moves change ``time`` directly and the
    heap is rebuilt once, O(n).  Later moves are lazy in Twisted (O(1) each).

    Returns ``(moved, held)``: how many calls were moved / left alone.
    """
    moved = held = 0
    direct = heap is not None and jump < 0
    for call in list(calls):
        if not call.active():
            continue
        if jump > 0 and known is not None and known.get(call) != call.getTime():
            held += 1
            continue
        if direct:
            call.time += jump  # delayed_time is kept: getTime() moves by jump
        else:
            call.delay(jump)
        moved += 1
    if direct and moved:
        heapq.heapify(heap)
    return moved, held


def reactor_heap(reactor):
    """The reactor's heap of pending calls (a list), or None (e.g. ``task.Clock``)."""
    heap = getattr(reactor, "_pendingTimedCalls", None)
    return heap if isinstance(heap, list) else None


class JumpDetector:
    """The thread-free part: detect a jump since the last check and shift.

    ``clock`` provides ``seconds()`` (wall) and ``getDelayedCalls()``;
    ``elapsed`` is a clock that never jumps.  Call :meth:`check` from the
    reactor thread only.
    """

    def __init__(self, clock, elapsed, threshold=2.0):
        self.clock = clock
        self.elapsed = elapsed
        self.threshold = threshold
        self.jumps = 0
        self.last_jump = 0.0
        self.last_jump_at = None
        self.calls_moved = 0
        self.calls_held = 0
        self.checks = 0
        self._wall = None
        self._mono = None
        self._known = {}

    def reset(self):
        """Take the current clocks (and pending calls) as the reference."""
        self._wall = self.clock.seconds()
        self._mono = self.elapsed()
        self._remember()

    def _remember(self):
        self._known = {call: call.getTime() for call in self.clock.getDelayedCalls()}

    @property
    def last_check(self):
        """Elapsed-clock time of the last check (read by the watch thread)."""
        return self._mono

    def check(self):
        """Shift pending calls if the wall clock jumped; returns the jump (0.0 if none)."""
        wall = self.clock.seconds()
        mono = self.elapsed()
        if self._wall is None:
            self.reset()
            return 0.0
        self.checks += 1
        jump = (wall - self._wall) - (mono - self._mono)
        self._wall, self._mono = wall, mono
        if abs(jump) <= self.threshold:
            # Slewing (NTP adjtime) and scheduling noise stay below the
            # threshold and are absorbed: the reference moves every check.
            self._remember()
            return 0.0
        moved, held = shift_delayed_calls(self.clock.getDelayedCalls(), jump, self._known,
                                          reactor_heap(self.clock))
        self.jumps += 1
        self.last_jump = jump
        self.last_jump_at = wall
        self.calls_moved += moved
        self.calls_held += held
        log.warn(
            "wall clock stepped {direction} by {size:.1f} s: {moved} pending timers moved to keep "
            "their schedule ({held} scheduled or reset since the previous check left as they are); "
            "timestamps and buckets follow the new wall clock",
            direction="forward" if jump > 0 else "back", size=abs(jump), moved=moved, held=held,
            jump=jump)
        self._remember()
        return jump

    def counters(self):
        return {
            "jumps": self.jumps,
            "last_jump_seconds": self.last_jump,
            "last_jump_at": self.last_jump_at,
            "timers_moved": self.calls_moved,
            "timers_held": self.calls_held,
            "checks": self.checks,
        }


@implementer(IHealth, ICounters)
class ClockJumpService(service.Service):
    """Keeps the reactor's pending timers on schedule across wall-clock steps.

    Start it first and stop it last (it guards the shutdown timers too).
    ``watch_thread=False`` leaves only the sentinel (tests with a ``Clock``).
    """

    name = "clockjump"
    health_key = "clock"  # IHealth: its /healthz check
    counters_key = "clock"  # ICounters: its /metrics prefix

    def __init__(self, reactor, threshold=2.0, period=1.0, elapsed=None, watch_thread=True):
        self.reactor = reactor
        self.period = period
        self.detector = JumpDetector(reactor, elapsed or elapsed_clock(), threshold)
        self.watch_thread = watch_thread
        self._sentinel = None
        self._stop = None
        self._thread = None
        self.pokes = 0

    def startService(self):
        super().startService()
        self.detector.reset()
        self._schedule()
        if self.watch_thread:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._watch, args=(self._stop,),
                                            name="tsrmon-clockjump", daemon=True)
            self._thread.start()

    def stopService(self):
        super().stopService()
        if self._sentinel is not None and self._sentinel.active():
            self._sentinel.cancel()
        self._sentinel = None
        if self._stop is not None:
            self._stop.set()
            self._thread.join(self.period + 1.0)
        self._stop = self._thread = None

    def _schedule(self):
        self._sentinel = self.reactor.callLater(self.period, self._on_sentinel)

    def _on_sentinel(self):
        self._sentinel = None
        try:
            self.check()
        finally:
            if self.running:
                self._schedule()

    def check(self):
        try:
            return self.detector.check()
        except Exception:
            # A bug here must not stop the timers it guards; logged once per check.
            log.failure("checking the wall clock for jumps failed")
            return 0.0

    def _watch(self, stop):
        # Runs in its own thread: only reads floats and hands work to the reactor.
        late = 1.5 * self.period
        elapsed = self.detector.elapsed
        while not stop.wait(self.period):
            last = self.detector.last_check
            if last is not None and elapsed() - last > late:
                self.pokes += 1
                self.reactor.callFromThread(self._poked)

    def _poked(self):
        if self.running:
            self.check()

    def counters(self):
        out = self.detector.counters()
        out["thread_pokes"] = self.pokes
        return out

    def healthy(self):
        return {"ok": bool(self.running), "jumps": self.detector.jumps,
                "last_jump_seconds": self.detector.last_jump}

    health = healthy  # IHealth
