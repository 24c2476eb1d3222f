"""The shipped systemd units pass ``systemd-analyze verify`` (issue 9)."""

import configparser
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ETC = os.path.join(ROOT, "etc")


def unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(os.path.join(ETC, name))
    return parser


def test_service_unit_has_what_plants_need():
    svc = unit("tsrmon.service")["Service"]
    assert svc["Type"] == "notify" and svc["Restart"] == "on-failure"
    # A bad configuration or a held lock (exit 2) is not restarted in a loop.
    assert svc["RestartPreventExitStatus"] == "2"
    assert "--pidfile=" in svc["ExecStart"] and "tsrmon" in svc["ExecStart"]
    assert svc["User"] == "tsrmon" and svc["WorkingDirectory"]
    assert int(svc["LimitNOFILE"]) >= 8192
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"
    assert all(p in svc["ReadWritePaths"] for p in ("db", "data", "log"))
    assert svc["ExecReload"].endswith("-HUP $MAINPID") and svc["WatchdogSec"]
    sock = unit("tsrmon.socket")["Socket"]
    assert sock["ListenStream"]  # socket activation: the listening sockets outlive restarts


@pytest.mark.timeout(60)
def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (no systemd on this machine)")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    with open(os.path.join(ETC, "tsrmon.service"), encoding="utf-8") as f:
        text = f.read().replace("/opt/tsrmon/venv/bin/twistd", twistd)
    (tmp_path / "tsrmon.service").write_text(text)
    shutil.copy(os.path.join(ETC, "tsrmon.socket"), tmp_path / "tsrmon.socket")
    r = subprocess.run([analyze, "verify", "--man=no", "./tsrmon.service", "./tsrmon.socket"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=50)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if line.strip() and "Failed to connect to bus" not in line]
    assert r.returncode == 0 and not problems, problems


def test_verify_would_catch_a_broken_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (no systemd on this machine)")
    (tmp_path / "broken.service").write_text("[Service]\nType=notify\nExecStart=relative/path\nFrobnicate=yes\n")
    r = subprocess.run([analyze, "verify", "--man=no", "./broken.service"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=50)
    assert r.returncode != 0 or "Frobnicate" in r.stderr
