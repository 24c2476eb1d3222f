"""Incremental framers: bytes in, decoded values or refusals out.

:class:`PickleFramer` cuts the deployed stream (pickles, each followed by an
optional ``5C 6F`` or ``00`` terminator, or none) at the exact end of every
pickle; :class:`JsonLineFramer` cuts newline-delimited JSON.  Both keep at
most one incomplete frame buffered and return, per :meth:`feed`, a list of

- ``(OK, value, trusted, nbytes)``: a decoded frame; ``trusted`` means it
  has the opcode skeleton of a frame already accepted on this connection, so
  its values have the same types (only floats differ) and the schema check
  may take its fast path;
- ``(EVENT, event, nbytes)`` (only with ``events=True``): a DataUpdate of a
  known shape decoded straight into the schema's DataFrame;
- ``(REFUSED, reason, nbytes)``: a frame skipped whole, or undecodable
  bytes skipped up to the next resynchronisation point.

``fatal`` is set (and nothing more is decoded) when the stream cannot be
resynchronised.
"""

import orjson

from tsrmon.ingest.fastpath import plan_for, plan_from_skeleton
from tsrmon.ingest.opcodes import BAD, DONE, EXPANSION_REASON, YIELD, Limits
from tsrmon.ingest.safepickle import PickleWalk, loads
from tsrmon.ingest.shapes import ShapeCache

OK, REFUSED, EVENT = "ok", "refused", "event"

_TERMINATOR = b"\x5c\x6f"
_RESYNC = b"\x5c\x6f\x80"  # terminator followed by a PROTO opcode
_COMPACT_AT = 256 * 1024
PLAN_FIRST_BYTES = 1024 * 1024  # first frames from this size take their plan at once
_JSON_SLACK = 4096  # commas of keys and names beside the samples


class PickleFramer:
    """``events=True``: DataUpdates of a known shape come out as ready
    ``(EVENT, schema event, nbytes)`` items (see ``fastpath.py``)."""

    def __init__(self, limits=None, events=False, budget=None):
        self.limits = limits or Limits()
        self.events = events
        # Opcodes walked in Python per feed (None: no limit). Past it, feed
        # returns what it has and sets ``yielded``: feed(b"") goes on.
        self.budget = budget
        self.yielded = False
        self.buf = bytearray()
        self.pos = 0  # start of the next frame (or of the bytes to resync from)
        self.walk = None
        self.shapes = ShapeCache()
        self.resyncing = False
        self.skipped = 0  # bytes skipped in the current resync
        self.fatal = None
        # counters (also used by tests to show nothing is parsed twice)
        self.opcodes_walked = 0
        self.shape_hits = 0
        self.wait_until = 0  # buffer length at which an expected frame is complete
        self.finishing = False

    @property
    def buffered(self):
        return len(self.buf) - self.pos

    def feed(self, data):
        self.yielded = False
        if self.fatal is not None:
            return []
        buf = self.buf
        buf += data
        left = self.budget
        if len(buf) < self.wait_until:
            return []
        self.wait_until = 0
        out = []
        append = out.append
        shapes = self.shapes
        n = len(buf)
        while True:
            if self.resyncing and not self._resync():
                break
            walk = self.walk
            if walk is None:
                s = self.pos
                # Hot path: frames with the skeleton of an accepted frame.
                # Consecutive frames of one planned shape at one stride are
                # held as a run [plan, first, count, stride, last, length]
                # and decoded together (one strided view, one event).
                hits = 0
                run = None
                while s < n:
                    first = buf[s]
                    if first == 0x5C:  # terminator after the previous frame
                        if s + 1 >= n or buf[s + 1] != 0x6F:
                            break
                        s += 2
                        continue
                    if first == 0:
                        s += 1
                        continue
                    # The previous frame's shape, checked inline (most frames).
                    shape = shapes.last
                    if shape is not None:
                        length = shape.length
                        end = s + length
                        if end <= n:
                            for a, z, step, expected in shape.checks:
                                if buf[s + a:s + z:step] != expected:
                                    break
                            else:
                                hits += 1
                                plan = shape.plan
                                if plan is None:
                                    if run is not None:
                                        run = self._emit_run(run, buf, append)
                                    append(self._decode(buf, s, end))
                                elif run is not None and run[0] is plan and (
                                        s - run[4] == run[3] or run[2] == 1):
                                    stride = run[3] = s - run[4]
                                    run[2] += 1
                                    run[4] = s
                                    # The rest of the run in one numpy check.
                                    more = shape.count_run(buf, s + stride, n, stride,
                                                           bytes(buf[s - stride + length:s]))
                                    if more:
                                        hits += more
                                        run[2] += more
                                        run[4] = s + more * stride
                                        end = run[4] + length
                                else:
                                    if run is not None:
                                        self._emit_run(run, buf, append)
                                    run = [plan, s, 1, 0, s, length]
                                s = end
                                continue
                    shape = shapes.find_shape(buf, s)
                    if shape is None:
                        if n - s < shapes.largest and not self.finishing:
                            self.wait_until = shapes.expect(buf, s)
                        break
                    end = s + shape.length
                    hits += 1
                    if run is not None:
                        run = self._emit_run(run, buf, append)
                    if shape.plan is not None:
                        run = [shape.plan, s, 1, 0, s, shape.length]
                    else:
                        append(self._decode(buf, s, end))
                    s = end
                if run is not None:
                    self._emit_run(run, buf, append)
                self.shape_hits += hits
                self.pos = s
                if s >= n or self.wait_until or (buf[s] == 0x5C and s + 1 >= n):
                    break
                if buf[s] == 0x5C and buf[s + 1] == 0x6F:
                    continue
                walk = self.walk = PickleWalk(s, self.limits)
            before, steps = walk.walked, walk.steps
            state = walk.walk(buf, left)
            self.opcodes_walked += walk.walked - before
            if left is not None:
                left -= walk.steps - steps
            if state == YIELD:
                self.yielded = True
                break
            if state == DONE:
                self.walk = None
                end = walk.end
                self.pos = end
                nbytes = end - walk.start
                if walk.refused is not None:
                    append((REFUSED, walk.refused, nbytes))
                    continue
                frame = bytes(buf[walk.start:end])
                plan = None
                if self.events:
                    plan = (plan_from_skeleton(frame, walk.runs, walk.frames_at) if walk.whole
                            else plan_for(frame, walk.runs))
                    if plan is not None and nbytes >= PLAN_FIRST_BYTES:
                        # A large frame is decoded by its plan from the first
                        # one on: no pickle.loads of the whole frame, and long
                        # chunks travel as arrays (the list path cost a 14 MB
                        # frame 0.5-1 s of reactor time).
                        shapes.add(frame, walk.runs, plan)
                        append((EVENT, plan.decode(frame, 0), nbytes))
                        continue
                try:
                    value = loads(frame)
                except Exception as e:
                    append((REFUSED, f"undecodable: {type(e).__name__}: {e}", nbytes))
                    continue
                shapes.add(frame, walk.runs, plan)
                append((OK, value, False, nbytes))
            elif state == BAD:
                self.walk = None
                append((REFUSED, f"undecodable: {walk.error}", 0))
                # Search from the byte after the bad frame's start: a bogus
                # length may have walked past the real terminator.
                self.pos = walk.start + 1
                self.resyncing = True
                self.skipped = 1
            else:
                break
        self._compact()
        return out

    def finish(self):
        """Every complete frame still buffered (the connection is ending)."""
        self.finishing = True
        self.wait_until = 0
        return self.feed(b"")

    @staticmethod
    def _emit_run(run, buf, append):
        """Append the event(s) of a held run of planned frames; returns None."""
        plan, s, k, stride, _, length = run
        if k > 1:
            event = plan.decode_run(buf, s, k, stride)
            if event is not None:
                append((EVENT, event, k * length))
                return None
        for i in range(k):
            append((EVENT, plan.decode(buf, s + i * stride), length))
        return None

    @staticmethod
    def _decode(buf, s, end):
        try:
            return (OK, loads(buf[s:end]), True, end - s)
        except Exception as e:  # cannot happen for a walked skeleton; keep the rule
            return (REFUSED, f"undecodable: {e}", end - s)

    def _resync(self):
        """Skip to the next terminator followed by a pickle header."""
        buf = self.buf
        i = buf.find(_RESYNC, self.pos)
        if i < 0:
            keep = min(len(buf) - self.pos, 2)
            self.skipped += len(buf) - keep - self.pos
            self.pos = len(buf) - keep
            if self.skipped > self.limits.max_frame_bytes:
                self.fatal = (f"no terminator followed by a pickle header in {self.skipped} bytes: "
                              "cannot resynchronise")
            return False
        self.skipped += i - self.pos
        self.pos = i + 2
        self.resyncing = False
        self.skipped = 0
        return True

    def _compact(self):
        start = self.walk.start if self.walk is not None else self.pos
        if start and (start >= _COMPACT_AT or start == len(self.buf)):
            del self.buf[:start]
            self.pos -= start
            if self.wait_until:
                self.wait_until -= start
            if self.walk is not None:
                self.walk.shift(start)


class JsonLineFramer:
    """Newline-delimited JSON objects; a line longer than the cap is skipped."""

    yielded = False  # parsing is one C call per line: never in turns

    def __init__(self, limits=None):
        self.limits = limits or Limits()
        self.buf = bytearray()
        self.scan = 0  # where to look for the next newline
        self.skipping = 0  # bytes of an over-long line being skipped
        self.fatal = None
        self.frames = 0

    @property
    def buffered(self):
        return len(self.buf)

    def finish(self):
        """The last line, even without its newline (the connection is ending)."""
        if self.buf and not self.skipping:
            return self.feed(b"\n")
        return []

    def feed(self, data):
        out = []
        buf = self.buf
        buf += data
        cap = self.limits.max_frame_bytes
        start = 0
        while True:
            nl = buf.find(b"\n", max(start, self.scan))
            if nl < 0:
                if len(buf) - start > cap:
                    self.skipping += len(buf) - start
                    start = len(buf)
                self.scan = len(buf) - start
                break
            self.scan = 0
            line = bytes(buf[start:nl])
            nbytes = nl + 1 - start
            start = nl + 1
            if self.skipping:
                out.append((REFUSED, f"line longer than DAQ.MAX_FRAME_BYTES ({cap})", self.skipping + nbytes))
                self.skipping = 0
                continue
            if not line.strip():
                continue
            # Every value but the last is followed by a comma: an upper bound
            # on what the line expands to, counted before anything is built.
            values = line.count(b",") + 1
            if values > self.limits.max_samples + _JSON_SLACK:
                out.append((REFUSED, f"{EXPANSION_REASON} up to {values} values (JSON), over "
                                     f"DAQ.MAX_SAMPLES_PER_FRAME ({self.limits.max_samples})", nbytes))
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                out.append((REFUSED, f"undecodable JSON: {e}", nbytes))
                continue
            self.frames += 1
            out.append((OK, value, False, nbytes))
        if start:
            del buf[:start]
        return out
