"""What a pickle frame expands to once every memo reference is unfolded.

The walker (``safepickle.py``) simulates each container as a :class:`Node`
(its direct scalars and child nodes, shared by reference through the memo,
so an append after a reference is seen too); :func:`expansion` sizes the
tree the value unfolds to over that graph, each shared node once per
reference, and finds a container that contains itself.
"""


class FloatMark:
    """The stack item of a BINFLOAT (a scalar; told apart from other scalars,
    0, so the walk knows whether float runs are only taken whole)."""

    __slots__ = ()

    def __repr__(self):
        return "F"


FLOAT = FloatMark()


class Node:
    """A simulated container: its depth so far, its direct scalars and its
    child containers (with repeats: each reference unfolds again)."""

    __slots__ = ("depth", "scalars", "kids", "entries")

    def __init__(self, depth=1, entries=-1):
        self.depth = depth
        self.scalars = 0
        self.kids = []
        self.entries = entries  # key/value pairs set so far (dicts), -1 otherwise

    def add(self, item):
        if item.__class__ is Node:
            self.kids.append(item)
            if item.depth + 1 > self.depth:
                self.depth = item.depth + 1
        else:
            self.scalars += 1

    def add_many(self, items):
        # Mostly floats (0): counted in C, containers looked for only if any.
        scalars = items.count(FLOAT)
        if scalars != len(items):
            scalars += items.count(0)
        if scalars == len(items):
            self.scalars += scalars
            return
        add = self.add
        for item in items:
            add(item)


def node_depth(item):
    return item.depth if item.__class__ is Node else 0


def expansion(root):
    """(samples, containers, depth) of the tree ``root`` unfolds to, every
    shared node counted once per reference; None when a container contains
    itself.  Iterative, each node visited once."""
    if root.__class__ is not Node:
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
