"""The daemon under systemd's protocols: socket activation and sd_notify (issue 9).

``systemd-socket-activate`` (from the systemd package) binds the two ports
and execs twistd with LISTEN_FDS, as systemd does for ``tsrmon.socket``; the
configuration uses ``systemd:domain=INET:index=N`` endpoints.  A datagram
socket of the test's own stands in for $NOTIFY_SOCKET.
"""

import shutil
import socket
import sqlite3

import pytest
import requests

from tests.conftest import fixture_bytes
from tests.daemon.harness import Daemon

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]  # ~20 s measured


def test_socket_activated_daemon_serves_and_notifies(tmp_path):
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is not installed (no systemd on this machine)")
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(20)
    d = Daemon(tmp_path / "work", overrides={"SERVER": {
        "HTTP_ENDPOINT": "systemd:domain=INET:index=0",
        "TCP_ENDPOINT": "systemd:domain=INET:index=1"}}, env={"NOTIFY_SOCKET": notify_path})
    # --fdname: systemd (>= 227) always sets LISTEN_FDNAMES, and Twisted requires it
    # (it passes no environment on by itself: -E for each variable)
    d.wrapper = [activate, "--fdname=http:daq", "-l", f"127.0.0.1:{d.http_port}",
                 "-l", f"127.0.0.1:{d.tcp_port}", "-E", f"NOTIFY_SOCKET={notify_path}",
                 "-E", "PATH", "-E", "PYTHONUNBUFFERED", "-E", f"TSRMON_CONFIG={d.config_path}"]
    d.twistd_args = ["--logger=tsrmon.logs.stdout_observer"]  # as tsrmon.service runs it
    try:
        d.start()
        ready = notify.recv(4096).decode()
        assert ready.startswith("READY=1\n") and f"MAINPID={d.proc.pid}" in ready
        health = requests.get(d.url("/healthz"), timeout=10)
        assert health.status_code == 200, health.text
        d.send(fixture_bytes("session.bin"))
    finally:
        rc = d.stop()
    assert rc == 0, d.log_text()
    assert notify.recv(4096) == b"STOPPING=1"
    notify.close()
    con = sqlite3.connect(tmp_path / "work" / "db" / "ShotBlast.db")
    n = con.execute('SELECT SUM(count) FROM "shot_blast_vib1_hour_avg" WHERE t0 IS NOT NULL').fetchone()[0]
    con.close()
    assert n == 3600
    journal = d.log_text()
    assert "DAQ feed listening" in journal
    assert "#debug]" not in journal  # the unit's --logger keeps the journal at info and above
