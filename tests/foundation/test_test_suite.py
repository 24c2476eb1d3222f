"""The test suite itself (issue 14): no test installs packages, long tests are
in the slow set with their own timeouts, and the benchmark reports rows cut
by its time limit instead of dropping them."""

import configparser
import os
import re
import subprocess
import sys
import types

import pytest

from tests import conftest
from tests.conftest import ROOT

# Install commands as a test would run them: argv lists (``["apt-get", "install", ...]``,
# ``[npm, "ci"]``) or ``sh -c`` strings.  A skip reason or docstring that only
# names the command ("apt-get install chromium") is one string, not a call.
INSTALLS = [
    re.compile(r"""["']apt(-get)?["']\s*,\s*["'](install|update)["']"""),
    re.compile(r"""\bnpm\w*["']?\s*,\s*["'](ci|install|i)["']"""),
    re.compile(r"""["']pip3?["']\s*,\s*["']install["']"""),
    re.compile(r"""["'](ba)?sh["']\s*,\s*["']-c["']\s*,\s*["'][^"']*\b(apt-get|apt|npm|pip3?) (install|update|ci)"""),
]
SELF = os.path.relpath(os.path.abspath(__file__), ROOT)


def test_files():
    try:
        out = subprocess.run(["git", "ls-files", "tests"], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [p for p in out if p.endswith(".py") and p != SELF]


def install_calls(text):
    return [m.group(0) for pattern in INSTALLS for m in pattern.finditer(text)]


def test_no_test_installs_packages():
    offenders = {}
    for rel in test_files():
        path = os.path.join(ROOT, rel)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                calls = install_calls(f.read())
            if calls:
                offenders[rel] = calls
    assert offenders == {}, "tests must not install packages (.ci/install-test-deps does)"


def test_the_install_check_sees_the_old_ways():
    assert install_calls('subprocess.run(["apt-get", "install", "-y", "faketime"], check=False)')
    assert install_calls('subprocess.run([npm, "ci", "--no-audit"], cwd=JS_DIR)')  # npm as a variable
    assert install_calls('_run(["npm", "ci", "--no-audit"], cwd=folder)')
    assert install_calls('for cmd in (["apt-get", "install", "-y", "-q", "faketime"],):')
    assert install_calls('subprocess.run(["sh", "-c", "apt-get update -q && apt-get install -y x"])')
    assert install_calls('pytest.skip("missing (apt-get install chromium)")') == []
    assert install_calls('require_service(ok, "run .ci/install-test-deps (npm ci in tests/js)")') == []


def _uses_the_harness(tmp_path):
    d = Daemon(tmp_path).start()  # noqa: F821 - only compiled, never called
    d.stop()


def _fast():
    return 1


class FakeItem:
    def __init__(self, rel, fixtures=(), marks=()):
        self.path = os.path.join(ROOT, rel)
        self.fixturenames = list(fixtures)
        self.marks = {m: types.SimpleNamespace(name=m) for m in marks}

    def get_closest_marker(self, name):
        return self.marks.get(name)

    def add_marker(self, mark):
        self.marks[mark.name] = mark


def test_slow_rules_mark_folders_fixtures_and_give_a_timeout():
    items = {
        "daemon": FakeItem("tests/daemon/test_lifecycle.py"),
        "browser": FakeItem("tests/dashboard/test_browser.py"),
        "clock": FakeItem("tests/ops/test_clock_jumps.py"),
        "hostile": FakeItem("tests/hostile/test_anything.py"),
        "node": FakeItem("tests/live/test_other.py", fixtures=["node_client"]),
        "explicit": FakeItem("tests/web/test_x.py", marks=["slow", "timeout"]),
        "fast": FakeItem("tests/stats/test_sums.py"),
        "harness": FakeItem("tests/web/test_y.py"),
    }
    items["harness"].function = _uses_the_harness
    items["fast"].function = _fast
    conftest.pytest_collection_modifyitems(None, list(items.values()))
    for name, item in items.items():
        assert (item.get_closest_marker("slow") is not None) == (name != "fast"), name
        assert (item.get_closest_marker("timeout") is not None) == (name != "fast"), name
    assert items["daemon"].get_closest_marker("timeout").args == (conftest.SLOW_DEFAULT_TIMEOUT,)
    assert not hasattr(items["explicit"].get_closest_marker("timeout"), "args")  # its own is kept


def test_fast_tests_default_to_a_short_timeout():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    assert int(cfg["tool:pytest"]["timeout"]) <= 30
    assert "slow:" in cfg["tool:pytest"]["markers"]


def test_benchmark_lists_rows_its_time_limit_left_out(tmp_path, monkeypatch, capsys):
    import bench.__main__ as bench_main

    monkeypatch.setattr(bench_main, "HERE", str(tmp_path))  # its JSON goes to tmp, not the checkout
    rc = bench_main.main(["--quick", "--only", "decoder", "--only", "live", "--time-limit", "0"])
    out = capsys.readouterr().out
    assert rc == 3
    assert "Rows that did not finish within the limit:" in out
    assert "- decoder: not started: time limit 0 s reached" in out
    assert "- live: not started: time limit 0 s reached" in out


def test_ci_runs_everything_with_services_required():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    assert "export TSRMON_REQUIRE_SERVICES=1" in ci
    assert "git clone" in ci and "mktemp -d" in ci   # a fresh clone, nothing beside it
    assert re.search(r"timeout .*300 .*bench --quick --time-limit \d+", ci)
    assert '-m "not slow"' not in ci and "-m 'not slow'" not in ci


def test_a_leaked_thread_does_not_hang_the_run(tmp_path):
    """A test that leaves a non-daemon thread running: pytest still exits, with
    its own status, and names the thread (a hang would hit this test's timeout)."""
    (tmp_path / "test_leak.py").write_text(
        "import threading\n\n"
        "def test_leaks():\n"
        "    threading.Thread(target=threading.Event().wait, name='leaky-worker').start()\n")
    env = dict(os.environ, TSRMON_LEAK_GRACE="0.2")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                        "--rootdir", str(tmp_path), str(tmp_path / "test_leak.py")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
    assert "left 1 non-daemon thread(s) running" in r.stderr and "leaky-worker" in r.stderr
