"""Real Redis (127.0.0.1:6379) for the cluster tests, isolated by a unique
key/channel prefix per test and cleaned up after it."""

import os
import socket
import uuid

import pytest

from tests.conftest import require_service

REDIS = (os.environ.get("TSRMON_TEST_REDIS_HOST", "127.0.0.1"), int(os.environ.get("TSRMON_TEST_REDIS_PORT", "6379")))


def resp(*args):
    """One command over a plain socket (set-up and clean-up only)."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(REDIS, timeout=2) as s:
        s.sendall(out)
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def redis_up():
    try:
        return resp("PING").startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_where():
    """``(host, port, db, password)`` of the test Redis."""
    require_service(redis_up(), f"Redis not reachable at {REDIS[0]}:{REDIS[1]}")
    return (REDIS[0], REDIS[1], 0, None)


@pytest.fixture
def prefix(redis_where):
    p = "tsrmon-test-" + uuid.uuid4().hex[:12]
    yield p
    keys = resp("KEYS", p + ":*").split(b"\r\n")
    names = [k for k in keys[2::2] if k]
    if names:
        resp("DEL", *names)
