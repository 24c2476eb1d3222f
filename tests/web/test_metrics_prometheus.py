"""Debian's ``prometheus`` scrapes a running daemon's ``/metrics`` (issue 14,
item 6): the scrape is healthy and Prometheus reads the types we declare.

Needs the ``prometheus`` binary (Debian: ``apt-get install prometheus``);
skipped without it, failed under TSRMON_REQUIRE_SERVICES=1.
"""

import os
import shutil
import subprocess
import time

import pytest
import requests

from tests.conftest import require_service
from tests.daemon.harness import Daemon, free_port, wait_port


def _api(port, path, **params):
    r = requests.get(f"http://127.0.0.1:{port}/api/v1/{path}", params=params, timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]


def _wait_ready(port, proc, timeout):
    """Prometheus listens before its TSDB is open and answers 503 until then
    (a loaded CI machine took longer than one poll): wait for ``/-/ready``."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "prometheus exited during start-up"
        try:
            if requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"prometheus not ready after {timeout} s"
        time.sleep(0.25)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_prometheus_scrapes_the_daemon(tmp_path):
    binary = shutil.which("prometheus")
    require_service(binary, "Debian's prometheus is not installed (apt-get install prometheus)")
    daemon = Daemon(tmp_path / "daemon").start()
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: tsrmon\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{daemon.http_port}']\n")
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_port(prom_port, timeout=30, proc=prom)
        _wait_ready(prom_port, prom, timeout=40)
        deadline = time.monotonic() + 45
        target = None
        while time.monotonic() < deadline:
            targets = _api(prom_port, "targets")["activeTargets"]
            target = targets[0] if targets else None
            if target and target["health"] == "up" and _api(
                    prom_port, "query", query="tsrmon_reactor_lag_seconds_count")["result"]:
                break
            time.sleep(0.5)
        assert target and target["health"] == "up", (target, (tmp_path / "prometheus.log").read_text()[-2000:])
        assert target["lastError"] == ""
        lag = _api(prom_port, "query", query="tsrmon_reactor_lag_seconds_count")["result"]
        assert lag and float(lag[0]["value"][1]) >= 1
        # Prometheus saw the declared types (# TYPE; the text format names a
        # counter by its _total sample) for the rooms' values.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            meta = _api(prom_port, "metadata")
            if "tsrmon_ingest_frames_total" in meta:
                break
            time.sleep(0.5)
        types = {name: entries[0]["type"] for name, entries in meta.items() if name.startswith("tsrmon_")}
        assert types["tsrmon_ingest_frames_total"] == "counter"
        assert types["tsrmon_ingest_refused_names_total"] == "counter"
        assert types["tsrmon_ingest_open_connections"] == "gauge"
        assert types["tsrmon_reactor_lag_seconds"] == "histogram"
        assert "unknown" not in types.values(), {n: t for n, t in types.items() if t == "unknown"}
        frames = _api(prom_port, "query", query="tsrmon_ingest_frames_total")["result"]
        assert frames and float(frames[0]["value"][1]) == 0.0
        # The reactor's recent lag is in /healthz too.
        reactor_check = requests.get(daemon.url("/healthz"), timeout=5).json()["checks"]["reactor"]
        assert reactor_check["ok"] is True and reactor_check["lag_max_recent_seconds"] >= 0.0
    finally:
        prom.terminate()
        try:
            prom.wait(15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(5)
        log.close()
        assert daemon.stop() == 0
    assert not os.path.exists(os.path.join(daemon.workdir, "twistd.pid"))
