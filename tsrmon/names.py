"""The one rule for machine and sensor names.

Unicode letters and digits, ``_``, ``.`` and ``-``; 1 to 64 characters; not
starting with ``.`` or ``-``.  So ``진공펌프1`` is valid and ``../x``, ``a/b``
and ``a b`` are not.  Every name is checked here before it reaches a path,
and quoted (:func:`quote_identifier`) wherever it reaches SQL.
"""

MAX_NAME_LENGTH = 64
_EXTRA = frozenset("_.-")


def is_valid_name(name):
    """True if ``name`` may name a machine or a sensor."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        return False
    if name[0] in ".-":
        return False
    return all(c.isalnum() or c in _EXTRA for c in name)


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
    return None


def quote_identifier(name):
    """SQL-quote an identifier (names are valid already; quote anyway)."""
    return '"' + name.replace('"', '""') + '"'
