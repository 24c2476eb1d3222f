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
("Decoder design") and ``bench/decoder.py``.  The per-frame cost is kept at
about that of ``pickle.loads`` by :class:`Shape`: a DAQ sends the same
opcode skeleton every second (same names, same memo indices, same list
lengths) and only the 8 bytes of each BINFLOAT differ.  A frame whose
non-float bytes equal those of a frame the walker already accepted, and whose
float opcodes sit at the same offsets, walks identically, so it is accepted
by a handful of slice comparisons instead of a walk.
"""

import pickle
import pickletools

# Result of PickleWalk.walk
DONE, NEED, BAD, YIELD = "done", "need", "bad", "yield"

GLOBAL_REASON = "a global/import opcode"
EXPANSION_REASON = "frame expands to"  # start of the refusal for an over-large expansion

_FORBIDDEN = {
    "GLOBAL": GLOBAL_REASON,
    "STACK_GLOBAL": GLOBAL_REASON,
    "INST": GLOBAL_REASON,
    "EXT1": GLOBAL_REASON,
    "EXT2": GLOBAL_REASON,
    "EXT4": GLOBAL_REASON,
    "REDUCE": "a call opcode",
    "BUILD": "a call opcode",
    "OBJ": "a call opcode",
    "NEWOBJ": "a call opcode",
    "NEWOBJ_EX": "a call opcode",
    "PERSID": "a persistent-id opcode",
    "BINPERSID": "a persistent-id opcode",
    "NEXT_BUFFER": "an out-of-band buffer opcode",
    "READONLY_BUFFER": "an out-of-band buffer opcode",
    "EMPTY_SET": "a set opcode (not plain data)",
    "ADDITEMS": "a set opcode (not plain data)",
    "FROZENSET": "a set opcode (not plain data)",
    "BYTEARRAY8": "a bytearray opcode (not plain data)",
}

# What each allowed opcode does to the simulated stack.
_SCALAR, _EMPTY, _MARK, _BUILD_MARK, _TUPLE_N, _APPEND, _SETITEM, _ITEMS, _POP, _POP_MARK, \
    _DUP, _PUT, _GET, _MEMOIZE, _PROTO, _FRAME, _STOP = range(17)

_KIND = {
    "NONE": _SCALAR, "NEWTRUE": _SCALAR, "NEWFALSE": _SCALAR,
    "INT": _SCALAR, "BININT": _SCALAR, "BININT1": _SCALAR, "BININT2": _SCALAR,
    "LONG": _SCALAR, "LONG1": _SCALAR, "LONG4": _SCALAR,
    "FLOAT": _SCALAR, "BINFLOAT": _SCALAR,
    "STRING": _SCALAR, "BINSTRING": _SCALAR, "SHORT_BINSTRING": _SCALAR,
    "UNICODE": _SCALAR, "BINUNICODE": _SCALAR, "SHORT_BINUNICODE": _SCALAR, "BINUNICODE8": _SCALAR,
    "BINBYTES": _SCALAR, "SHORT_BINBYTES": _SCALAR, "BINBYTES8": _SCALAR,
    "EMPTY_TUPLE": _EMPTY, "EMPTY_LIST": _EMPTY, "EMPTY_DICT": _EMPTY,
    "TUPLE": _BUILD_MARK, "LIST": _BUILD_MARK, "DICT": _BUILD_MARK,
    "TUPLE1": _TUPLE_N, "TUPLE2": _TUPLE_N, "TUPLE3": _TUPLE_N,
    "APPEND": _APPEND, "SETITEM": _SETITEM, "APPENDS": _ITEMS, "SETITEMS": _ITEMS,
    "POP": _POP, "POP_MARK": _POP_MARK, "DUP": _DUP, "MARK": _MARK,
    "GET": _GET, "BINGET": _GET, "LONG_BINGET": _GET,
    "PUT": _PUT, "BINPUT": _PUT, "LONG_BINPUT": _PUT, "MEMOIZE": _MEMOIZE,
    "PROTO": _PROTO, "FRAME": _FRAME, "STOP": _STOP,
}
ALLOWED = frozenset(_KIND)

# Argument layouts.
_A_NONE, _A_FIXED, _A_LINE, _A_LINE2, _A_LEN1, _A_LEN4S, _A_LEN4U, _A_LEN8U = range(8)
_NUMERIC_LINE_MAX = 4096  # INT/LONG/FLOAT/PUT/GET text arguments


def _build_table():
    table = [None] * 256
    for op in pickletools.opcodes:
        code = ord(op.code)
        arg = op.arg
        if arg is None:
            layout, size = _A_NONE, 0
        elif arg.n > 0:
            layout, size = _A_FIXED, arg.n
        elif arg.n == pickletools.UP_TO_NEWLINE:
            layout = _A_LINE2 if arg.name == "stringnl_noescape_pair" else _A_LINE
            size = 0
        else:
            layout = {
                pickletools.TAKEN_FROM_ARGUMENT1: _A_LEN1,
                pickletools.TAKEN_FROM_ARGUMENT4: _A_LEN4S,
                pickletools.TAKEN_FROM_ARGUMENT4U: _A_LEN4U,
                pickletools.TAKEN_FROM_ARGUMENT8U: _A_LEN8U,
            }[arg.n]
            size = 0
        numeric = op.name in ("INT", "LONG", "FLOAT", "PUT", "GET")
        table[code] = (op.name, layout, size, _KIND.get(op.name), _FORBIDDEN.get(op.name), numeric)
    return table


_TABLE = _build_table()
_BINFLOAT = ord("G")


class Limits:
    """Caps applied to every frame (see docs/protocol.md).

    ``max_elements`` and ``max_containers`` count what the walk reads;
    ``max_samples`` (scalars) and ``max_containers`` also bound what the
    value expands to once every memo reference is unfolded."""

    __slots__ = ("max_frame_bytes", "max_elements", "max_containers", "max_depth", "max_samples",
                 "max_dict_entries")

    def __init__(self, max_frame_bytes=16 * 1024 * 1024, max_elements=4_000_000,
                 max_containers=100_000, max_depth=32, max_samples=2_000_000, max_dict_entries=1024):
        self.max_frame_bytes = max_frame_bytes
        self.max_elements = max_elements
        self.max_containers = max_containers
        self.max_depth = max_depth
        self.max_samples = max_samples
        # A DataUpdate has one entry per sensor (DAQ.MAX_SENSORS, 64 by
        # default, are stored): a dict of 50,000 sensors would cost the
        # reactor a name check each before the hub drops all but 64.
        self.max_dict_entries = max_dict_entries


class _FloatMark:
    """The stack item of a BINFLOAT (a scalar; told apart from other scalars,
    0, so the walk knows whether float runs are only taken whole)."""

    __slots__ = ()

    def __repr__(self):
        return "F"


_F = _FloatMark()


class _Node:
    """A simulated container: its depth so far, its direct scalars and its
    child containers (with repeats: each reference unfolds again)."""

    __slots__ = ("depth", "scalars", "kids", "entries")

    def __init__(self, depth=1, entries=-1):
        self.depth = depth
        self.scalars = 0
        self.kids = []
        self.entries = entries  # key/value pairs set so far (dicts), -1 otherwise

    def add(self, item):
        if item.__class__ is _Node:
            self.kids.append(item)
            if item.depth + 1 > self.depth:
                self.depth = item.depth + 1
        else:
            self.scalars += 1

    def add_many(self, items):
        # Mostly floats (0): counted in C, containers looked for only if any.
        scalars = items.count(_F)
        if scalars != len(items):
            scalars += items.count(0)
        if scalars == len(items):
            self.scalars += scalars
            return
        for item in items:
            if item.__class__ is _Node:
                self.kids.append(item)
                if item.depth + 1 > self.depth:
                    self.depth = item.depth + 1
            else:
                self.scalars += 1


def _depth(item):
    return item.depth if item.__class__ is _Node else 0


def expansion(root):
    """(samples, containers, depth) of the tree ``root`` unfolds to, every
    shared node counted once per reference; None when a container contains
    itself.  Iterative, each node visited once."""
    if root.__class__ is not _Node:
        return 1, 0, 0
    done = {}  # id(node) -> (samples, containers, depth)
    active = set()
    todo = [(root, False)]
    while todo:
        node, ready = todo.pop()
        key = id(node)
        if ready:
            samples, containers, depth = node.scalars, 1, 1
            for kid in node.kids:
                ks, kc, kd = done[id(kid)]
                samples += ks
                containers += kc
                if kd + 1 > depth:
                    depth = kd + 1
            done[key] = (samples, containers, depth)
            active.discard(key)
            continue
        if key in done:
            continue
        if key in active:
            return None
        active.add(key)
        todo.append((node, True))
        for kid in node.kids:
            k = id(kid)
            if k in active:
                return None
            if k not in done:
                todo.append((kid, False))
    return done[id(root)]


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
        self.stack = []  # simulated stack: 0 (scalar) or a _Node
        self.marks = []
        self.memo = {}  # index -> stack item (0 or the _Node itself)
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
        table = _TABLE
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
            if op == _BINFLOAT:
                count = _float_run(buf, p, n)
                if count:
                    e = p + 9 * count
                    if e > max_end:
                        return self._bad(f"frame larger than DAQ.MAX_FRAME_BYTES ({limits.max_frame_bytes})", p)
                    self.walked += count
                    self.steps += 1
                    if self.refused is None:
                        self.runs.append((p - self.start, count))
                        self.stack.extend([_F] * count)
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
            if layout == _A_NONE:
                end = a
            elif layout == _A_FIXED:
                end = a + size
                if end <= n:
                    arg = buf[a:end]
            elif layout == _A_LEN1:
                if a >= n:
                    end = a + 1
                else:
                    end = a + 1 + buf[a]
            elif layout == _A_LINE or layout == _A_LINE2:
                if self.line_from:  # resuming inside this opcode's lines
                    q, lines = self.line_from, self.line_left
                else:
                    q, lines = a, (2 if layout == _A_LINE2 else 1)
                cap = max_end if not numeric else min(max_end, a + _NUMERIC_LINE_MAX)
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
                width = 4 if layout in (_A_LEN4S, _A_LEN4U) else 8
                if a + width > n:
                    end = a + width
                else:
                    length = int.from_bytes(buf[a:a + width], "little", signed=(layout == _A_LEN4S))
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
            elif kind == _STOP:
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
            elif kind == _FRAME:
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
            elif kind == _PROTO:
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

        Stack items are 0 (a scalar) or a :class:`_Node` (a container, the
        same object wherever the memo or DUP references it)."""
        stack = self.stack
        marks = self.marks
        fence = marks[-1] if marks else 0
        limits = self.limits
        if kind == _SCALAR:
            stack.append(0)
            self.elements += 1
            if name == "FLOAT":
                self.whole = False
        elif kind == _EMPTY:
            stack.append(_Node(entries=0) if name == "EMPTY_DICT" else _Node())
            self.elements += 1
            self.containers += 1
        elif kind == _MARK:
            marks.append(len(stack))
        elif kind == _BUILD_MARK:
            if not marks:
                return BAD
            m = marks.pop()
            items = stack[m:]
            del stack[m:]
            node = _Node()
            if name == "DICT":
                if len(items) % 2:
                    return BAD
                if _F in items and not _isolated_floats(items):
                    self.whole = False
                node.entries = len(items) // 2
                if node.entries > limits.max_dict_entries:
                    return f"a dict of more than {limits.max_dict_entries} entries"
            node.add_many(items)
            self.edges += len(node.kids)
            stack.append(node)
            self.elements += 1
            self.containers += 1
        elif kind == _TUPLE_N:
            k = int(name[-1])
            if len(stack) - fence < k:
                return BAD
            items = stack[len(stack) - k:]
            del stack[len(stack) - k:]
            if _F in items:
                self.whole = False
            node = _Node()
            node.add_many(items)
            self.edges += len(node.kids)
            stack.append(node)
            self.elements += 1
            self.containers += 1
        elif kind == _APPEND:
            if len(stack) - fence < 2:
                return BAD
            v = stack.pop()
            # A float appended right onto its container is a run of its own.
            target = stack[-1]
            if target.__class__ is not _Node:
                return f"{name} to a value that is not a container"
            target.add(v)
            if v.__class__ is _Node:
                self.edges += 1
        elif kind == _SETITEM:
            if len(stack) - fence < 3:
                return BAD
            v = stack.pop()
            k = stack.pop()
            if k is _F:  # a float key; a float value under a key is a run of its own
                self.whole = False
            target = stack[-1]
            if target.__class__ is not _Node:
                return f"{name} to a value that is not a container"
            target.add(k)
            target.add(v)
            if v.__class__ is _Node:
                self.edges += 1
            if target.entries >= 0:
                target.entries += 1
                if target.entries > limits.max_dict_entries:
                    return f"a dict of more than {limits.max_dict_entries} entries"
        elif kind == _ITEMS:
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
                if _F in items and not _isolated_floats(items):
                    self.whole = False
            target = stack[-1]
            if target.__class__ is not _Node:
                return f"{name} to a value that is not a container"
            kids = len(target.kids)
            target.add_many(items)
            self.edges += len(target.kids) - kids
            if target.entries >= 0 and name == "SETITEMS":
                target.entries += len(items) // 2
                if target.entries > limits.max_dict_entries:
                    return f"a dict of more than {limits.max_dict_entries} entries"
        elif kind == _POP:
            if marks and marks[-1] == len(stack):
                marks.pop()
            elif len(stack) > fence:
                if stack.pop() is _F:
                    self.whole = False
            else:
                return BAD
        elif kind == _POP_MARK:
            if not marks:
                return BAD
            m = marks.pop()
            if _F in stack[m:]:
                self.whole = False
            del stack[m:]
        elif kind == _DUP:
            if len(stack) <= fence:
                return BAD
            top = stack[-1]
            if top is _F:
                self.whole = False
            elif top.__class__ is _Node:
                self.shared = True
            stack.append(top)
            self.elements += 1
        elif kind == _PUT or kind == _MEMOIZE:
            if len(stack) <= fence:
                return BAD
            memo = self.memo
            if kind == _MEMOIZE:
                idx = len(memo)
            else:
                idx = _index(name, arg)
                if idx is None:
                    return BAD
                # CPython sizes its memo table by the largest index: only
                # allow a defined index or the next one.
                if idx > len(memo):
                    return f"memo index {idx} out of sequence (memo has {len(memo)} entries)"
            if stack[-1] is _F:
                self.whole = False
            memo[idx] = stack[-1]
        elif kind == _GET:
            idx = _index(name, arg)
            if idx is None:
                return BAD
            item = self.memo.get(idx)
            if item is None:
                return f"memo reference to undefined entry {idx}"
            if item.__class__ is _Node:
                self.shared = True
            stack.append(item)
            self.elements += 1
        if stack:
            top = stack[-1]
            if top.__class__ is _Node and top.depth > limits.max_depth:
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
                self.expanded = (samples, self.containers, _depth(self.stack[0]))
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
        if item is _F and prev is _F:
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


class Shape:
    """The opcode skeleton of one accepted frame (see the module docstring).

    ``checks`` holds (start, stop, step, expected) slices relative to the
    frame start: the fixed bytes between float runs (step 1) and the opcode
    bytes of each BINFLOAT run (step 9, all ``G``).
    """

    __slots__ = ("length", "checks", "key", "head", "plan")

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
        self.key = bytes(frame[:self.KEY_BYTES])
        self.head = checks[0][3][:64] if checks[0][2] == 1 else b""

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


def loads(frame):
    """Build the value of a frame the walker accepted (or a cached shape matched)."""
    return pickle.loads(frame)
