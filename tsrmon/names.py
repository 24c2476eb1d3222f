"""The one rule for machine and sensor names.

Unicode letters and digits, ``_``, ``.`` and ``-``; 1 to 64 characters and
at most 200 bytes in UTF-8; not starting with ``.`` or ``-``.  So
``진공펌프1`` is valid and ``../x``, ``a/b`` and ``a b`` are not.  The byte
bound keeps every name derived from it within the 255-byte file-name limit
of Linux file systems: ``<machine>.db-journal`` (+11 bytes) and
``<YYYYMMDD>_<sensor>.csv.gz`` (+16) with room to spare; 64 characters of
4 bytes each (256 bytes) would not fit.  Every name is checked here before it
reaches a path, and quoted (:func:`quote_identifier`) wherever it reaches SQL.

Names that differ only in case (:func:`case_key`) are distinct to Python but
the same table to SQLite (and the same file on a case-insensitive file
system): the hub refuses the second one it sees for a machine or a sensor.
"""

MAX_NAME_LENGTH = 64
MAX_NAME_BYTES = 200
_EXTRA = frozenset("_.-")


def _utf8_len(name):
    return len(name.encode("utf-8", "surrogatepass"))


def case_key(name):
    """The key under which names that differ only in case collide."""
    return name.lower()


def is_valid_name(name):
    """True if ``name`` may name a machine or a sensor."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        return False
    if name[0] in ".-":
        return False
    return all(c.isalnum() or c in _EXTRA for c in name) and _utf8_len(name) <= MAX_NAME_BYTES


def name_problem(name):
    """Why ``name`` is refused, as a short phrase (None if it is valid)."""
    if not isinstance(name, str):
        return f"a name must be a string, not {type(name).__name__}"
    if not name:
        return "empty name"
    if len(name) > MAX_NAME_LENGTH:
        return f"name longer than {MAX_NAME_LENGTH} characters"
    if name[0] in ".-":
        return "name starts with '.' or '-'"
    bad = next((c for c in name if not (c.isalnum() or c in _EXTRA)), None)
    if bad is not None:
        return f"character {bad!r} not allowed in a name"
    size = _utf8_len(name)
    if size > MAX_NAME_BYTES:
        return f"name of {size} bytes in UTF-8, longer than {MAX_NAME_BYTES}"
    return None


def quote_identifier(name):
    """SQL-quote an identifier (names are valid already; quote anyway)."""
    return '"' + name.replace('"', '""') + '"'
