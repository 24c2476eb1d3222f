"""The pickle opcodes the safe decoder knows: which build plain data
(:data:`ALLOWED`), which are refused and why, each one's argument layout,
and the caps applied to every frame (:class:`Limits`, docs/protocol.md)."""

import pickletools

# Result of PickleWalk.walk
DONE, NEED, BAD, YIELD = "done", "need", "bad", "yield"

GLOBAL_REASON = "a global/import opcode"
EXPANSION_REASON = "frame expands to"  # start of the refusal for an over-large expansion

FORBIDDEN = {
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
K_SCALAR, K_EMPTY, K_MARK, K_BUILD_MARK, K_TUPLE_N, K_APPEND, K_SETITEM, K_ITEMS, K_POP, K_POP_MARK, \
    K_DUP, K_PUT, K_GET, K_MEMOIZE, K_PROTO, K_FRAME, K_STOP = range(17)

KIND = {
    "NONE": K_SCALAR, "NEWTRUE": K_SCALAR, "NEWFALSE": K_SCALAR,
    "INT": K_SCALAR, "BININT": K_SCALAR, "BININT1": K_SCALAR, "BININT2": K_SCALAR,
    "LONG": K_SCALAR, "LONG1": K_SCALAR, "LONG4": K_SCALAR,
    "FLOAT": K_SCALAR, "BINFLOAT": K_SCALAR,
    "STRING": K_SCALAR, "BINSTRING": K_SCALAR, "SHORT_BINSTRING": K_SCALAR,
    "UNICODE": K_SCALAR, "BINUNICODE": K_SCALAR, "SHORT_BINUNICODE": K_SCALAR, "BINUNICODE8": K_SCALAR,
    "BINBYTES": K_SCALAR, "SHORT_BINBYTES": K_SCALAR, "BINBYTES8": K_SCALAR,
    "EMPTY_TUPLE": K_EMPTY, "EMPTY_LIST": K_EMPTY, "EMPTY_DICT": K_EMPTY,
    "TUPLE": K_BUILD_MARK, "LIST": K_BUILD_MARK, "DICT": K_BUILD_MARK,
    "TUPLE1": K_TUPLE_N, "TUPLE2": K_TUPLE_N, "TUPLE3": K_TUPLE_N,
    "APPEND": K_APPEND, "SETITEM": K_SETITEM, "APPENDS": K_ITEMS, "SETITEMS": K_ITEMS,
    "POP": K_POP, "POP_MARK": K_POP_MARK, "DUP": K_DUP, "MARK": K_MARK,
    "GET": K_GET, "BINGET": K_GET, "LONG_BINGET": K_GET,
    "PUT": K_PUT, "BINPUT": K_PUT, "LONG_BINPUT": K_PUT, "MEMOIZE": K_MEMOIZE,
    "PROTO": K_PROTO, "FRAME": K_FRAME, "STOP": K_STOP,
}
ALLOWED = frozenset(KIND)

# Argument layouts.
A_NONE, A_FIXED, A_LINE, A_LINE2, A_LEN1, A_LEN4S, A_LEN4U, A_LEN8U = range(8)
NUMERIC_LINE_MAX = 4096  # INT/LONG/FLOAT/PUT/GET text arguments


def _build_table():
    table = [None] * 256
    for op in pickletools.opcodes:
        code = ord(op.code)
        arg = op.arg
        if arg is None:
            layout, size = A_NONE, 0
        elif arg.n > 0:
            layout, size = A_FIXED, arg.n
        elif arg.n == pickletools.UP_TO_NEWLINE:
            layout = A_LINE2 if arg.name == "stringnl_noescape_pair" else A_LINE
            size = 0
        else:
            layout = {
                pickletools.TAKEN_FROM_ARGUMENT1: A_LEN1,
                pickletools.TAKEN_FROM_ARGUMENT4: A_LEN4S,
                pickletools.TAKEN_FROM_ARGUMENT4U: A_LEN4U,
                pickletools.TAKEN_FROM_ARGUMENT8U: A_LEN8U,
            }[arg.n]
            size = 0
        numeric = op.name in ("INT", "LONG", "FLOAT", "PUT", "GET")
        table[code] = (op.name, layout, size, KIND.get(op.name), FORBIDDEN.get(op.name), numeric)
    return table


OPCODES = _build_table()
BINFLOAT = ord("G")


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
