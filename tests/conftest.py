"""Shared test helpers.

The byte-exact DAQ fixtures live in ``tests/fixtures/legacy-daq`` (written by
``tests/fixtures/make_legacy.py``); ``TSRMON_FIXTURES`` overrides the location.
Tests read them as bytes; nothing loads them with ``pickle``.
"""

import json
import os
import shutil

# One BLAS thread, as the daemon runs (the twistd plugin sets it): threaded dot products
# on 25,600-sample chunks took ~6 ms instead of ~35 us on a loaded 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

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


# --- the slow set ------------------------------------------------------------
# `pytest -m "not slow"` is the fast set (under a minute).  Tests are slow when
# they start the real daemon or another server process, a browser, a clock
# jump, many clients or a hostile peer.  Explicit @pytest.mark.slow works
# anywhere; these rules catch whole folders/files and fixtures so a new test
# there cannot forget it.
SLOW_PATHS = (
    "tests/daemon/",                    # the real daemon as a subprocess
    "tests/ops/test_clock_jumps.py",    # the real daemon under libfaketime
    "tests/ops/test_faults.py",         # the real daemon against hundreds of peers
    "tests/dashboard/test_browser.py",  # Chromium
    "tests/live/test_clients.py",       # real client libraries (python-socketio, Node) end to end
    "tests/hostile/",                   # hostile peers
    "tests/cluster/",                   # several daemons behind haproxy
)
SLOW_FIXTURES = {"node_client"}  # a Node.js process per test
SLOW_NAMES = {"Daemon", "EnvDaemon"}  # tests/daemon/harness.py, tests/ops/helpers.py: the real daemon
# Slow tests name their own timeout (measured, about 3x headroom); one that
# does not gets this, and fast tests get setup.cfg's `timeout`.
SLOW_DEFAULT_TIMEOUT = 180


def _starts_the_daemon(item):
    """The test function itself names the daemon harness (Daemon(...).start())."""
    code = getattr(getattr(item, "function", None), "__code__", None)
    return code is not None and bool(SLOW_NAMES.intersection(code.co_names))


def pytest_collection_modifyitems(config, items):
    for item in items:
        rel = os.path.relpath(str(item.path), ROOT).replace(os.sep, "/")
        slow = (item.get_closest_marker("slow") is not None
                or rel.startswith(SLOW_PATHS)
                or SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                or _starts_the_daemon(item))
        if slow:
            if item.get_closest_marker("slow") is None:
                item.add_marker(pytest.mark.slow)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(SLOW_DEFAULT_TIMEOUT))


# --- a leaked thread must not hang the run ---------------------------------------
# A non-daemon thread a test left running (a service whose worker was never
# stopped) keeps the interpreter alive after the last test, and Twisted's
# SIGTERM handler then ignores `timeout`/CI: the run would hang for ever.
# Name the threads, then leave with pytest's own exit status.
LEAK_GRACE = float(os.environ.get("TSRMON_LEAK_GRACE", "5"))  # seconds


def pytest_sessionfinish(session, exitstatus):
    session.config._tsrmon_exitstatus = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    import sys
    import threading
    import time
    import traceback

    deadline = time.monotonic() + LEAK_GRACE
    leaked = []
    for t in threading.enumerate():
        if t is threading.main_thread() or t.daemon:
            continue
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            leaked.append(t)
    if not leaked:
        return
    frames = sys._current_frames()
    lines = [f"\ntests left {len(leaked)} non-daemon thread(s) running; exiting without waiting for them:"]
    for t in leaked:
        lines.append(f"--- {t.name} ({type(t).__module__}.{type(t).__qualname__})")
        if t.ident in frames:
            lines.extend(s.rstrip() for s in traceback.format_stack(frames[t.ident])[-4:])
    sys.stdout.flush()
    print("\n".join(lines), file=sys.stderr, flush=True)
    os._exit(getattr(config, "_tsrmon_exitstatus", 1))
