"""The daemon's own small SQLite files beside the machine databases (alarm
state, notification attempts).  Their names start with a dot, which no
machine name may, so they are never listed or served as machines."""

import os

from twisted.enterprise import adbapi


def _wal(conn):
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def sidecar_pool(path, reactor):
    """A one-connection adbapi pool on ``path`` (its folder created).

    Raises OSError when the folder cannot be created; the caller logs it and
    carries on without the file.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return adbapi.ConnectionPool(
        "sqlite3", path, check_same_thread=False, cp_min=1, cp_max=1,
        cp_openfun=_wal, cp_reactor=reactor)
