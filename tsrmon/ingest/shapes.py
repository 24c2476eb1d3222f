"""The shape cache: frames whose opcode skeleton was already accepted.

The per-frame cost of the safe decoder (``safepickle.py``) is kept at about
that of ``pickle.loads`` by :class:`Shape`: a DAQ sends the same opcode
skeleton every second (same names, same memo indices, same list lengths)
and only the 8 bytes of each BINFLOAT differ.  A frame whose non-float bytes
equal those of a frame the walker already accepted, and whose float opcodes
sit at the same offsets, walks identically, so it is accepted by a handful
of slice comparisons instead of a walk.  A shape may carry the
``fastpath.DataPlan`` that decodes its frames without ``pickle.loads``.
"""

import numpy as _np


class Shape:
    """The opcode skeleton of one accepted frame (see the module docstring).

    ``checks`` holds (start, stop, step, expected) slices relative to the
    frame start: the fixed bytes between float runs (step 1) and the opcode
    bytes of each BINFLOAT run (step 9, all ``G``).
    """

    __slots__ = ("length", "checks", "key", "head", "plan", "_fixed")

    KEY_BYTES = 12

    def __init__(self, frame, runs, plan=None):
        self.plan = plan  # a fastpath.DataPlan, or None
        self.length = len(frame)
        checks = []
        at = 0
        for offset, count in runs:
            if offset > at:
                checks.append((at, offset, 1, bytes(frame[at:offset])))
            stop = offset + 9 * count
            checks.append((offset, stop, 9, b"G" * count))
            at = stop
        if at < self.length:
            checks.append((at, self.length, 1, bytes(frame[at:self.length])))
        self.checks = checks
        self._fixed = {}  # gap bytes -> (positions, values) for count_run
        self.key = bytes(frame[:self.KEY_BYTES])
        self.head = checks[0][3][:64] if checks[0][2] == 1 else b""

    def count_run(self, buf, s, n, stride, gap, limit=4096):
        """How many frames of this shape follow one another from ``s``, one
        every ``stride`` bytes, each preceded by the ``gap`` bytes (the
        terminator seen between the run's first frames): every checked byte
        of all of them compared in one numpy operation, not a slice
        comparison per check and frame."""
        room = n - s
        if room < self.length:
            return 0
        m = min((room - self.length) // stride + 1, limit)
        fixed = self._fixed.get(gap)
        if fixed is None:
            if len(self._fixed) >= 4:
                self._fixed.clear()
            positions, values = list(range(len(gap))), list(gap)
            for a, z, step, expected in self.checks:
                positions.extend(range(len(gap) + a, len(gap) + z, step))
                values.extend(expected)
            fixed = self._fixed[gap] = (_np.array(positions, _np.intp), _np.array(values, _np.uint8))
        positions, values = fixed
        # Rows of gap + frame bytes, one per candidate frame (a strided view).
        rows = _np.ndarray((m, len(gap) + self.length), _np.uint8, buf, s - len(gap), (stride, 1))
        ok = (rows[:, positions] == values).all(axis=1)
        del rows  # the view holds the buffer: the caller may resize it next
        return m if ok.all() else int(ok.argmin())

    def matches(self, buf, s):
        if len(buf) - s < self.length:
            return False
        for a, z, step, expected in self.checks:
            if buf[s + a:s + z:step] != expected:
                return False
        return True


class ShapeCache:
    """Recently accepted shapes of one connection, looked up by leading bytes."""

    __slots__ = ("by_key", "size", "limit", "last", "largest")

    def __init__(self, limit=16):
        self.by_key = {}
        self.size = 0
        self.limit = limit
        self.last = None  # most frames have the previous frame's shape
        self.largest = 0

    def find(self, buf, s):
        """The length of the frame at ``s`` if a known shape matches, else 0."""
        last = self.last
        if last is not None and last.matches(buf, s):
            return last.length
        shapes = self.by_key.get(bytes(buf[s:s + Shape.KEY_BYTES]))
        if shapes:
            for shape in shapes:
                if shape is not last and shape.matches(buf, s):
                    self.last = shape
                    return shape.length
        return 0

    def find_shape(self, buf, s):
        """Like :meth:`find`, but the matching :class:`Shape` (or None)."""
        return self.last if self.find(buf, s) else None

    def expect(self, buf, s):
        """For an incomplete frame at ``s`` whose leading bytes match a known
        shape: the buffer length at which the whole frame will be there
        (0 if none matches).  Waiting for it instead of walking keeps large
        frames that arrive in pieces on the shape path."""
        avail = len(buf) - s
        last = self.last
        candidates = [last] if last is not None else []
        if avail >= Shape.KEY_BYTES:
            candidates += self.by_key.get(bytes(buf[s:s + Shape.KEY_BYTES]), ())
        for shape in candidates:
            # Only framed pickles (protocol 4+): the head then holds the
            # first FRAME's length, so for a pickle of one FRAME (every DAQ
            # frame under 64 KiB) a matching head means the same length.
            # A larger pickle that diverges after its first FRAME is held
            # until more bytes arrive or the framer is finished.
            if avail < shape.length and shape.head[2:3] == b"\x95":
                k = min(len(shape.head), avail)
                if k >= Shape.KEY_BYTES and buf[s:s + k] == shape.head[:k]:
                    return s + shape.length
        return 0

    def add(self, frame, runs, plan=None):
        if len(frame) < Shape.KEY_BYTES:
            return
        shape = Shape(frame, runs, plan)
        shapes = self.by_key.setdefault(shape.key, [])
        if len(shapes) >= 4:
            shapes.pop(0)
            self.size -= 1
        if self.size >= self.limit:
            oldest = next(iter(self.by_key))
            self.size -= len(self.by_key.pop(oldest))
            if oldest == shape.key:
                shapes = self.by_key.setdefault(shape.key, [])
        shapes.append(shape)
        self.size += 1
        self.last = shape
        self.largest = max(self.largest, shape.length)
