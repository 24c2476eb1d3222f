"""Shared pieces of the browser tests: what they need, and the driver.

Debian's ``chromium`` is a system package the README's test command (and
``.ci/run``) installs; the tests never install it, they skip (or fail under
TSRMON_REQUIRE_SERVICES=1) without it.  ``playwright-core`` (``npm ci`` in
this folder) and a built dashboard (``npm ci && npm run build`` in
``dashboard/``) are set up here when missing.
"""

import json
import os
import shutil
import subprocess

from tests.conftest import ROOT

HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.path.join(HERE, "artifacts")
DRIVER = os.path.join(HERE, "browser.cjs")
DASHBOARD_SRC = os.path.join(ROOT, "dashboard")
STATIC_INDEX = os.path.join(ROOT, "tsrmon", "dashboard", "static", "index.html")
ZONE = "Asia/Seoul"  # the harness's TIME.ZONE


def chromium():
    """Path of Debian's chromium (or $TSRMON_CHROMIUM), or None."""
    return os.environ.get("TSRMON_CHROMIUM") or shutil.which("chromium")


def _run(cmd, cwd=None, timeout=600):
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return done.returncode == 0, (done.stdout + done.stderr)[-2000:]


def ensure_npm(folder, module):
    if os.path.isdir(os.path.join(folder, "node_modules", module)):
        return None
    if shutil.which("npm") is None or shutil.which("node") is None:
        return "node and npm are needed (Debian: apt-get install nodejs npm)"
    ok, out = _run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, timeout=600)
    return None if ok else f"npm ci in {folder} failed: {out}"


def ensure_build():
    if os.path.isfile(STATIC_INDEX):
        return None
    problem = ensure_npm(DASHBOARD_SRC, "esbuild")
    if problem:
        return problem
    ok, out = _run(["npm", "run", "build"], cwd=DASHBOARD_SRC, timeout=300)
    return None if ok else f"npm run build failed: {out}"


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
