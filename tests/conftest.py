"""Shared test helpers.

The byte-exact DAQ fixtures live in ``tests/fixtures/legacy-daq`` (written by
``tests/fixtures/make_legacy.py``); ``TSRMON_FIXTURES`` overrides the location.
Tests read them as bytes; nothing loads them with ``pickle``.
"""

import json
import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.environ.get(
    "TSRMON_FIXTURES",
    os.path.join(ROOT, "tests", "fixtures", "legacy-daq"),
)


def fixture_bytes(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def expected():
    with open(os.path.join(FIXTURES, "expected.json"), encoding="utf-8") as f:
        return json.load(f)


def require_service(available, reason):
    """Skip when an external service is absent, fail under TSRMON_REQUIRE_SERVICES=1."""
    if available:
        return
    if os.environ.get("TSRMON_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


@pytest.fixture
def fixtures_dir():
    if not os.path.isdir(FIXTURES):
        pytest.fail(f"DAQ fixtures not found at {FIXTURES} (set TSRMON_FIXTURES)")
    return FIXTURES


@pytest.fixture
def expected_json(fixtures_dir):
    return expected()


JS_DIR = os.path.join(ROOT, "tests", "js")


@pytest.fixture(scope="session")
def node_client():
    """tests/js with socket.io-client installed by ``.ci/install-test-deps`` (never by a test)."""
    node = shutil.which("node")
    require_service(node, "node not installed")
    installed = all(os.path.isdir(os.path.join(JS_DIR, "node_modules", m))
                    for m in ("socket.io-client", "socket.io-client-v2"))
    require_service(installed, "tests/js/node_modules missing (run .ci/install-test-deps)")
    return node, os.path.join(JS_DIR, "client.cjs")
