"""Pickle frames without running them: an opcode walker and a shape cache.

A pickle is self-delimiting, so its end is found by walking its opcodes.
The walk here never executes anything: it reads each opcode and the length
of its argument, refuses every opcode outside :data:`ALLOWED` (the ones that
build None, bool, int, float, str, bytes, tuple, list, dict and the memo in
protocols 0-5), and simulates the stack only as far as needed to bound
nesting depth, element counts and memo indices.  It also bounds what the
frame *expands to*: a memo reference (GET/BINGET/LONG_BINGET, DUP) costs one
opcode but hands whoever walks the value the whole referenced container
again, so a 13.5 MB pickle whose 64 sensors all reference one memoized list
of 1.5 M floats is 96 M samples downstream.  Containers are tracked as nodes
(direct scalar count, child nodes, shared by reference through the memo, so
an append after the reference is seen too); at STOP the tree the value
unfolds to is sized over that graph (each shared node sized once) and the
frame is refused, before ``pickle.loads`` allocates anything, when its
samples exceed ``max_samples`` (``DAQ.MAX_SAMPLES_PER_FRAME``) or its
containers ``max_containers``.  A container that contains itself is refused.  The walk is resumable: bytes
arriving in small pieces continue it where it stopped, never from the start.

Only bytes the walker accepted reach ``pickle.loads``.  With no GLOBAL,
STACK_GLOBAL, INST, EXT*, PERSID or buffer opcode there is no way for the
stream to name a callable, and REDUCE, BUILD, OBJ and NEWOBJ* are refused
anyway.  The memo checks matter: CPython's C unpickler grows its memo table
to twice the largest index it is given, so a 9-byte ``LONG_BINPUT 200000000``
would allocate gigabytes; the walker only allows indices that are already
defined or the next one.

Why ``pickle.loads`` and not a pure-Python decoder: see ``docs/protocol.md``
("Decoder design") and ``bench/decoder.py``.  The opcode table and the
frame caps are in ``opcodes.py``, the sizing of what a frame expands to in
``expansion.py``, and the cache of accepted skeletons that keeps the
per-frame cost near ``pickle.loads`` in ``shapes.py``.
"""

import pickle

from tsrmon.ingest.expansion import FLOAT, Node, expansion, node_depth
from tsrmon.ingest.opcodes import (A_FIXED, A_LEN1, A_LEN4S, A_LEN4U, A_LINE, A_LINE2, A_NONE, BAD, BINFLOAT,
                                   DONE, EXPANSION_REASON, K_APPEND, K_BUILD_MARK, K_DUP, K_EMPTY, K_FRAME,
                                   K_GET, K_ITEMS, K_MARK, K_MEMOIZE, K_POP, K_POP_MARK, K_PROTO, K_PUT,
                                   K_SCALAR, K_SETITEM, K_STOP, K_TUPLE_N, NEED, NUMERIC_LINE_MAX, OPCODES,
                                   YIELD)


class PickleWalk:
    """The walk of one pickle that starts at ``start`` in a growing buffer.

    :meth:`walk` returns DONE (``end`` is one past STOP; ``refused`` is None
    or the reason the complete frame must be skipped), NEED (``need`` is the
    buffer length worth waiting for) or BAD (``error``: the bytes are not a
    pickle, resynchronise).  Positions are absolute in the caller's buffer;
    :meth:`shift` moves them when the caller drops bytes in front.
    """

    __slots__ = ("start", "pos", "need", "line_from", "line_left", "limits", "stack", "marks", "memo",
                 "elements", "containers", "refused", "end", "error", "runs", "walked", "expanded", "whole",
                 "frames_at", "shared", "edges", "steps")

    def __init__(self, start, limits):
        self.start = start
        self.pos = start
        self.need = 0
        self.line_from = 0
        self.line_left = 0
        self.limits = limits
        self.stack = []  # simulated stack: 0 (scalar) or a Node
        self.marks = []
        self.memo = {}  # index -> stack item (0 or the Node itself)
        self.elements = 0
        self.containers = 0
        self.refused = None
        self.end = None
        self.error = None
        self.runs = []  # (offset from start, count) of BINFLOAT runs, for Shape
        self.walked = 0  # opcodes walked (tests check nothing is walked twice)
        self.steps = 0  # opcodes simulated in Python (a float run counts one)
        self.expanded = None  # (samples, containers, depth) once sized at STOP
        # True while every float run is taken whole by a MARK opcode (LIST,
        # TUPLE, APPENDS) and no FLOAT text opcode occurs: the fast path can
        # then learn the frame's layout from a copy with one float per run.
        self.whole = True
        self.frames_at = []  # offsets (from start) of FRAME opcodes
        # Set when a container is referenced a second time (memo GET, DUP):
        # only then can the value unfold to more than what was read.
        self.shared = False
        self.edges = 0  # containers placed into containers (each reference counts)

    def shift(self, delta):
        self.start -= delta
        self.pos -= delta
        self.need = max(0, self.need - delta)
        if self.line_from:
            self.line_from -= delta

    def _refuse(self, reason):
        if self.refused is None:
            self.refused = reason
            self.stack = self.marks = None
            self.memo = None

    def _bad(self, why, p):
        self.error = f"{why} at byte {p - self.start} of the frame"
        return BAD

    def walk(self, buf, budget=None):
        """``budget``: at most that many opcodes simulated in Python (a float
        run counts one) before returning YIELD; call again to go on."""
        n = len(buf)
        if n < self.need:
            return NEED
        limits = self.limits
        max_end = self.start + limits.max_frame_bytes
        table = OPCODES
        p = self.pos
        stop_at = self.steps + budget if budget is not None else -1
        while True:
            if p >= n:
                self.pos = p
                self.need = p + 1
                return NEED
            if self.steps == stop_at:
                self.pos = p
                return YIELD
            op = buf[p]
            # BINFLOAT runs are most of a DAQ frame: skip them in C (also
            # the rest of a frame already refused, without simulating it).
            if op == BINFLOAT:
                count = _float_run(buf, p, n)
                if count:
                    e = p + 9 * count
                    if e > max_end:
                        return self._bad(f"frame larger than DAQ.MAX_FRAME_BYTES ({limits.max_frame_bytes})", p)
                    self.walked += count
                    self.steps += 1
                    if self.refused is None:
                        self.runs.append((p - self.start, count))
                        self.stack.extend([FLOAT] * count)
                        self.elements += count
                        if self.elements > limits.max_elements:
                            self._refuse(f"more than {limits.max_elements} elements")
                    p = e
                    continue
            spec = table[op]
            if spec is None:
                return self._bad(f"unknown opcode 0x{op:02x}", p)
            name, layout, size, kind, forbidden, numeric = spec
            a = p + 1
            arg = None
            if layout == A_NONE:
                end = a
            elif layout == A_FIXED:
                end = a + size
                if end <= n:
                    arg = buf[a:end]
            elif layout == A_LEN1:
                if a >= n:
                    end = a + 1
                else:
                    end = a + 1 + buf[a]
            elif layout == A_LINE or layout == A_LINE2:
                if self.line_from:  # resuming inside this opcode's lines
                    q, lines = self.line_from, self.line_left
                else:
                    q, lines = a, (2 if layout == A_LINE2 else 1)
                cap = max_end if not numeric else min(max_end, a + NUMERIC_LINE_MAX)
                while lines:
                    nl = buf.find(b"\n", q, min(n, cap))
                    if nl < 0:
                        if n >= cap:
                            return self._bad(f"{name} argument line too long", p)
                        self.line_from = n
                        self.line_left = lines
                        self.pos = p
                        self.need = n + 1
                        return NEED
                    q = nl + 1
                    lines -= 1
                end = q
                self.line_from = 0
                if numeric or name == "PROTO":
                    arg = buf[a:end - 1]
            else:
                width = 4 if layout in (A_LEN4S, A_LEN4U) else 8
                if a + width > n:
                    end = a + width
                else:
                    length = int.from_bytes(buf[a:a + width], "little", signed=(layout == A_LEN4S))
                    if length < 0:
                        return self._bad(f"{name} with negative length", p)
                    if length > limits.max_frame_bytes:
                        return self._bad(f"{name} of {length} bytes exceeds DAQ.MAX_FRAME_BYTES", p)
                    end = a + width + length
            if end > max_end:
                return self._bad(f"frame larger than DAQ.MAX_FRAME_BYTES ({limits.max_frame_bytes})", p)
            if end > n:
                self.pos = p
                self.need = end
                return NEED
            self.walked += 1
            self.steps += 1
            if forbidden is not None:
                self._refuse(f"forbidden opcode {name} ({forbidden})")
            elif kind == K_STOP:
                if self.refused is None:
                    if len(self.stack) != 1 or self.marks:
                        self._refuse("malformed pickle (stack not a single value at STOP)")
                    else:
                        problem = self._expansion_problem()
                        if problem is not None:
                            self._refuse(problem)
                self.end = end
                self.pos = end
                return DONE
            elif kind == K_FRAME:
                self.frames_at.append(p - self.start)
                length = int.from_bytes(arg, "little")
                if length > limits.max_frame_bytes or end + length > max_end:
                    return self._bad(f"FRAME of {length} bytes exceeds DAQ.MAX_FRAME_BYTES", p)
                # Wait for the whole frame before walking on: a framed pickle
                # fed one byte at a time costs one comparison per byte.
                if end + length > n:
                    self.pos = end
                    self.need = end + length
                    return NEED
            elif kind == K_PROTO:
                if arg[0] > pickle.HIGHEST_PROTOCOL:
                    return self._bad(f"unsupported pickle protocol {arg[0]}", p)
            elif self.refused is None:
                problem = self._apply(kind, name, arg)
                if problem is not None:
                    if problem is BAD:
                        return self._bad(f"{name} on a malformed stack", p)
                    self._refuse(problem)
            p = end

    def _apply(self, kind, name, arg):
        """Simulate one allowed opcode; None, a refusal text, or BAD.

        Stack items are 0 (a scalar) or a :class:`Node` (a container, the
        same object wherever the memo or DUP references it)."""
        stack = self.stack
        marks = self.marks
        fence = marks[-1] if marks else 0
        limits = self.limits
        if kind == K_SCALAR:
            stack.append(0)
            self.elements += 1
            if name == "FLOAT":
                self.whole = False
        elif kind == K_EMPTY:
            stack.append(Node(entries=0) if name == "EMPTY_DICT" else Node())
            self.elements += 1
            self.containers += 1
        elif kind == K_MARK:
            marks.append(len(stack))
        elif kind == K_BUILD_MARK:
            if not marks:
                return BAD
            m = marks.pop()
            items = stack[m:]
            del stack[m:]
            node = Node()
            if name == "DICT":
                if len(items) % 2:
                    return BAD
                if FLOAT in items and not _isolated_floats(items):
                    self.whole = False
                node.entries = len(items) // 2
                if node.entries > limits.max_dict_entries:
                    return f"a dict of more than {limits.max_dict_entries} entries"
            node.add_many(items)
            self.edges += len(node.kids)
            stack.append(node)
            self.elements += 1
            self.containers += 1
        elif kind == K_TUPLE_N:
            k = int(name[-1])
            if len(stack) - fence < k:
                return BAD
            items = stack[len(stack) - k:]
            del stack[len(stack) - k:]
            if FLOAT in items:
                self.whole = False
            node = Node()
            node.add_many(items)
            self.edges += len(node.kids)
            stack.append(node)
            self.elements += 1
            self.containers += 1
        elif kind == K_APPEND:
            if len(stack) - fence < 2:
                return BAD
            v = stack.pop()
            # A float appended right onto its container is a run of its own.
            target = stack[-1]
            if target.__class__ is not Node:
                return f"{name} to a value that is not a container"
            target.add(v)
            if v.__class__ is Node:
                self.edges += 1
        elif kind == K_SETITEM:
            if len(stack) - fence < 3:
                return BAD
            v = stack.pop()
            k = stack.pop()
            if k is FLOAT:  # a float key; a float value under a key is a run of its own
                self.whole = False
            target = stack[-1]
            if target.__class__ is not Node:
                return f"{name} to a value that is not a container"
            target.add(k)
            target.add(v)
            if v.__class__ is Node:
                self.edges += 1
            if target.entries >= 0:
                target.entries += 1
                if target.entries > limits.max_dict_entries:
                    return f"a dict of more than {limits.max_dict_entries} entries"
        elif kind == K_ITEMS:
            if not marks:
                return BAD
            m = marks.pop()
            if m == 0 or m - (marks[-1] if marks else 0) < 1:
                return BAD
            items = stack[m:]
            del stack[m:]
            if name == "SETITEMS":
                if len(items) % 2:
                    return BAD
                if FLOAT in items and not _isolated_floats(items):
                    self.whole = False
            target = stack[-1]
            if target.__class__ is not Node:
                return f"{name} to a value that is not a container"
            kids = len(target.kids)
            target.add_many(items)
            self.edges += len(target.kids) - kids
            if target.entries >= 0 and name == "SETITEMS":
                target.entries += len(items) // 2
                if target.entries > limits.max_dict_entries:
                    return f"a dict of more than {limits.max_dict_entries} entries"
        elif kind == K_POP:
            if marks and marks[-1] == len(stack):
                marks.pop()
            elif len(stack) > fence:
                if stack.pop() is FLOAT:
                    self.whole = False
            else:
                return BAD
        elif kind == K_POP_MARK:
            if not marks:
                return BAD
            m = marks.pop()
            if FLOAT in stack[m:]:
                self.whole = False
            del stack[m:]
        elif kind == K_DUP:
            if len(stack) <= fence:
                return BAD
            top = stack[-1]
            if top is FLOAT:
                self.whole = False
            elif top.__class__ is Node:
                self.shared = True
            stack.append(top)
            self.elements += 1
        elif kind == K_PUT or kind == K_MEMOIZE:
            if len(stack) <= fence:
                return BAD
            memo = self.memo
            if kind == K_MEMOIZE:
                idx = len(memo)
            else:
                idx = _index(name, arg)
                if idx is None:
                    return BAD
                # CPython sizes its memo table by the largest index: only
                # allow a defined index or the next one.
                if idx > len(memo):
                    return f"memo index {idx} out of sequence (memo has {len(memo)} entries)"
            if stack[-1] is FLOAT:
                self.whole = False
            memo[idx] = stack[-1]
        elif kind == K_GET:
            idx = _index(name, arg)
            if idx is None:
                return BAD
            item = self.memo.get(idx)
            if item is None:
                return f"memo reference to undefined entry {idx}"
            if item.__class__ is Node:
                self.shared = True
            stack.append(item)
            self.elements += 1
        if stack:
            top = stack[-1]
            if top.__class__ is Node and top.depth > limits.max_depth:
                return f"nesting deeper than {limits.max_depth}"
        if self.elements > limits.max_elements:
            return f"more than {limits.max_elements} elements"
        if self.containers > limits.max_containers:
            return f"more than {limits.max_containers} containers"
        if self.edges > limits.max_containers:
            # Each reference to a container is at least one container of the
            # unfolded value: refused here, before sizing the graph at STOP.
            return f"more than {limits.max_containers} containers (references to containers counted)"
        return None

    def _expansion_problem(self):
        """Why the complete value is refused for what it unfolds to (or None)."""
        limits = self.limits
        if not self.shared:
            # Every container was built once and referenced once: the value
            # is what was read (depth tracked exactly on the way, no cycle).
            samples = self.elements - self.containers
            if samples <= limits.max_samples:
                self.expanded = (samples, self.containers, node_depth(self.stack[0]))
                return None
        sized = expansion(self.stack[0])
        if sized is None:
            return "a container that contains itself"
        samples, containers, depth = sized
        self.expanded = sized
        if samples > limits.max_samples or containers > limits.max_containers:
            return (f"{EXPANSION_REASON} {samples} samples and {containers} containers "
                    f"(memo references unfolded; {self.elements} elements read), over "
                    f"DAQ.MAX_SAMPLES_PER_FRAME ({limits.max_samples}) or "
                    f"{limits.max_containers} containers")
        if depth > limits.max_depth:
            return f"nesting deeper than {limits.max_depth}"
        return None


def _isolated_floats(items):
    """True if no two floats are adjacent in ``items`` (key/value pairs after
    a MARK): each float is then a run of its own."""
    prev = None
    for item in items:
        if item is FLOAT and prev is FLOAT:
            return False
        prev = item
    return True


def _float_run(buf, p, n):
    """How many complete BINFLOAT opcodes (``G`` + 8 bytes) start at ``p``:
    the opcode bytes sit 9 apart, so a strided slice checks them in C, in
    windows that grow so a short run costs a short slice."""
    count = 0
    window = 64
    full = (n - p) // 9
    while count < full:
        units = min(window, full - count)
        at = p + 9 * count
        probe = buf[at:at + 9 * units:9]
        k = units - len(probe.lstrip(b"G"))
        count += k
        if k < units:
            break
        window *= 4
    return count


def _index(name, arg):
    if name in ("PUT", "GET"):
        text = bytes(arg)
        if not text.isdigit():
            return None
        return int(text)
    return int.from_bytes(arg, "little")


def loads(frame):
    """Build the value of a frame the walker accepted (or a cached shape matched)."""
    return pickle.loads(frame)
