"""Log lines about peers: peer text cut short, warnings rate-limited.

A DAQ or an HTTP client controls what it sends, so a log line that quotes it
(a refused name, a bad path) must not grow with it, and a peer that repeats
a mistake a thousand times a second must not write a thousand lines.

- :func:`peer_text` renders any peer-supplied value as at most ``limit``
  characters, control characters escaped, with the full length noted.
- :class:`PeerLog` emits at most ``burst`` lines per (source, reason) and
  ``global_burst`` lines in all per ``period`` seconds; what it holds back is
  counted and reported in one line when the window ends.
"""

from twisted.logger import LogLevel

PEER_TEXT_LIMIT = 64


def peer_text(value, limit=PEER_TEXT_LIMIT):
    """``value`` (any type) as a short, printable, single-line text."""
    if isinstance(value, (bytes, bytearray)):
        text, unit = repr(bytes(value[:limit]))[2:-1], "bytes"
    else:
        if not isinstance(value, str):
            value = repr(value)
        # Printable non-ASCII (Korean names) stays readable; control
        # characters, line breaks and the like are escaped.
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value[:limit])
        unit = "chars"
    if len(value) > limit:
        text += f"…({len(value)} {unit})"
    return text


class _Window:
    __slots__ = ("start", "count", "suppressed")

    def __init__(self, start):
        self.start = start
        self.count = 0
        self.suppressed = 0


class PeerLog:
    """Rate-limited warnings keyed by (source, reason).

    ``clock`` is an ``IReactorTime`` (``seconds()``); tests pass a ``Clock``.
    """

    def __init__(self, log, clock, period=60.0, burst=5, global_burst=100, max_keys=4096):
        self.log = log
        self.clock = clock
        self.period = period
        self.burst = burst
        self.global_burst = global_burst
        self.max_keys = max_keys
        self._windows = {}
        self._global = _Window(None)
        self.suppressed_total = 0

    def _roll(self, key, window, now):
        if window.suppressed:
            source, reason = key
            self.log.emit(
                LogLevel.warn,
                "{suppressed} more '{reason}' lines from {source} suppressed in {period:.0f} s",
                suppressed=window.suppressed, reason=reason, source=source, period=self.period)
        window.start, window.count, window.suppressed = now, 0, 0

    def emit(self, level, source, reason, fmt, /, **kw):
        """Log ``fmt`` unless (source, reason) or the whole log is over budget.

        Returns True when the line was written.  The leading arguments are
        positional-only, so the line's own fields may be called ``reason``
        or ``source`` too."""
        now = self.clock.seconds()
        g = self._global
        if g.start is None or now - g.start >= self.period:
            if g.suppressed:
                self.log.emit(LogLevel.warn,
                              "{suppressed} peer warning lines suppressed in {period:.0f} s (all sources)",
                              suppressed=g.suppressed, period=self.period)
            g.start, g.count, g.suppressed = now, 0, 0
        key = (peer_text(source), reason)
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self.max_keys:
                self._expire(now)
            window = self._windows[key] = _Window(now)
        elif now - window.start >= self.period:
            self._roll(key, window, now)
        if window.count >= self.burst or g.count >= self.global_burst:
            window.suppressed += 1
            if window.count < self.burst:
                g.suppressed += 1
            self.suppressed_total += 1
            return False
        window.count += 1
        g.count += 1
        self.log.emit(level, fmt, **kw)
        return True

    def warn(self, source, reason, fmt, /, **kw):
        return self.emit(LogLevel.warn, source, reason, fmt, **kw)

    def info(self, source, reason, fmt, /, **kw):
        return self.emit(LogLevel.info, source, reason, fmt, **kw)

    def error(self, source, reason, fmt, /, **kw):
        return self.emit(LogLevel.error, source, reason, fmt, **kw)

    def _expire(self, now):
        """Drop finished windows (reporting their suppressed counts); if the
        table is still full, drop the oldest half so it stays bounded."""
        for key, window in list(self._windows.items()):
            if now - window.start >= self.period:
                self._roll(key, window, now)
                del self._windows[key]
        if len(self._windows) >= self.max_keys:
            for key in list(self._windows)[: self.max_keys // 2]:
                window = self._windows.pop(key)
                if window.suppressed:
                    self._roll(key, window, now)
