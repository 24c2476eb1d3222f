"""When a notification may go out: per machine spacing and a global cap.

The deployed sender kept one ``limit_time`` for every machine and advanced it
by the interval from its *old* value, so one machine's alarm hid another's
and a quiet night built up a debt that was paid out as a burst.  Here every
key (machine and kind of alert) has its own last-send time, the next send is
allowed ``interval`` seconds after it, and nothing accumulates.  Suppressed
alerts are counted so the next one that goes out can say how many there were.

The global cap counts sends over a sliding hour, so a storm from many (or
spoofed) machines cannot flood phones or receivers.
"""

import collections

# Beyond this many keys, keys with nothing to report are forgotten.
_PRUNE_AT = 4096


class Decision:
    """What :meth:`Throttle.admit` decided.

    ``send`` is True when the notification goes out; ``suppressed`` is then the
    number of notifications for the same key held back since the previous
    send.  ``reason`` is ``"throttled"`` or ``"capped"`` when held back.
    """

    __slots__ = ("send", "suppressed", "reason")

    def __init__(self, send, suppressed=0, reason=None):
        self.send = send
        self.suppressed = suppressed
        self.reason = reason

    def __repr__(self):
        return f"Decision(send={self.send}, suppressed={self.suppressed}, reason={self.reason!r})"


class Throttle:
    """Per-key spacing of ``interval`` seconds plus at most ``max_per_hour`` sends.

    ``max_per_hour == 0`` means no global cap; ``interval == 0`` no spacing.
    """

    def __init__(self, clock, interval, max_per_hour):
        self.clock = clock
        self.interval = float(interval)
        self.max_per_hour = int(max_per_hour)
        self._last = {}  # key -> time of its last send
        self._held = collections.Counter()  # key -> suppressed since its last send
        self._window = collections.deque()  # send times within the last hour
        self.throttled = 0
        self.capped = 0

    def configure(self, interval, max_per_hour):
        self.interval = float(interval)
        self.max_per_hour = int(max_per_hour)

    def admit(self, key):
        now = self.clock.seconds()
        last = self._last.get(key)
        # A wall clock stepped backwards must not hold a machine silent.
        if last is not None and last <= now < last + self.interval:
            self._held[key] += 1
            self.throttled += 1
            return Decision(False, reason="throttled")
        if self.max_per_hour and self.sent_last_hour(now) >= self.max_per_hour:
            self._held[key] += 1
            self.capped += 1
            return Decision(False, reason="capped")
        self._last[key] = now
        self._window.append(now)
        if len(self._last) > _PRUNE_AT:
            self._prune(now)
        return Decision(True, suppressed=self._held.pop(key, 0))

    def sent_last_hour(self, now=None):
        if now is None:
            now = self.clock.seconds()
        window = self._window
        while window and window[0] <= now - 3600:
            window.popleft()
        return len(window)

    def held(self, key):
        """Notifications for ``key`` suppressed since its last send."""
        return self._held.get(key, 0)

    def held_total(self):
        return sum(self._held.values())

    def _prune(self, now):
        for key, last in list(self._last.items()):
            if now - last >= self.interval and not self._held.get(key):
                del self._last[key]
