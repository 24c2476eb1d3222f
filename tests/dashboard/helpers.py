"""Shared pieces of the browser tests: what they need, and the driver.

The tests install nothing.  Debian's ``chromium`` and ``playwright-core``
(``npm ci`` in this folder) are installed by ``.ci/install-test-deps``, the
dashboard is built by the README's test command (``cd dashboard && npm ci &&
npm run build``); without one of them the browser tests skip with the reason
(or fail under TSRMON_REQUIRE_SERVICES=1).
"""

import json
import os
import shutil
import subprocess

from tests.conftest import ROOT

HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.path.join(HERE, "artifacts")
DRIVER = os.path.join(HERE, "browser.cjs")
STATIC_INDEX = os.path.join(ROOT, "tsrmon", "dashboard", "static", "index.html")
ZONE = "Asia/Seoul"  # the harness's TIME.ZONE


def chromium():
    """Path of Debian's chromium (or $TSRMON_CHROMIUM), or None."""
    return os.environ.get("TSRMON_CHROMIUM") or shutil.which("chromium")


def npm_problem(folder, module):
    """Why ``module`` is not usable from ``folder``, or None."""
    if shutil.which("node") is None:
        return "node is needed (Debian: apt-get install nodejs npm)"
    if not os.path.isdir(os.path.join(folder, "node_modules", module)):
        return f"{module} is not installed in {folder} (npm ci there; .ci/install-test-deps does it)"
    return None


def build_problem():
    """Why the dashboard is not built, or None."""
    if os.path.isfile(STATIC_INDEX):
        return None
    return "the dashboard is not built (cd dashboard && npm ci && npm run build)"


def drive(daemon, scenario, arg="", timeout=60, env=None):
    """Run one scenario of browser.cjs against ``daemon``; its observations."""
    cmd = ["node", DRIVER, scenario, daemon.url(""), ARTIFACTS]
    if arg:
        cmd.append(arg)
    env = dict(os.environ, TSRMON_CHROMIUM=chromium() or "", **(env or {}))
    done = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in out, f"{out['error']}\ndaemon log:\n{daemon.log_text()[-2000:]}"
    # Everything comes from tsrmon itself (no CDN), and the page never threw.
    assert out["foreign_requests"] == []
    assert out["page_errors"] == []
    for shot in out.get("screenshots", []):
        assert os.path.getsize(shot) > 1000, shot
    return out
