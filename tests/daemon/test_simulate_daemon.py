"""``tsrmon simulate`` against the real daemon: every sample it sends is counted."""

import os
import re
import sqlite3
import subprocess
import sys

import pytest

from tests.daemon.harness import Daemon

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]  # each ~1 s measured


@pytest.mark.parametrize("encoding", [[], ["--json"]], ids=["pickle", "json"])
def test_simulate_against_the_daemon(tmp_path, encoding):
    d = Daemon(tmp_path).start()
    try:
        r = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "tsrmon"), "simulate",
             "--server", f"127.0.0.1:{d.tcp_port}", "--machines", "2", "--sensors", "2",
             "--rate", "20", "--chunk", "30", "--duration", "2", "--prefix", "sim", "--fault-every", "0"] + encoding,
            capture_output=True, text=True, timeout=60)
    finally:
        assert d.stop() == 0, d.log_text()
    assert r.returncode == 0, r.stderr
    sent = int(re.search(r"sent (\d+) frames", r.stdout).group(1))
    assert sent > 0
    frames = 0
    for db in os.listdir(tmp_path / "db"):
        if not db.endswith(".db"):
            continue
        con = sqlite3.connect(tmp_path / "db" / db)
        tables = [t for (t,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%\\_hour\\_avg' ESCAPE '\\'")]
        counts = [con.execute(f'SELECT SUM(count) FROM "{t}"').fetchone()[0] or 0 for t in tables]
        con.close()
        assert len(tables) == 2 and len(set(counts)) == 1  # both sensors of a machine alike
        frames += counts[0] // 30
    # simulate counts every frame it wrote: one handshake per machine, then
    # DataUpdates (no FaultDetects with --fault-every 0)
    assert frames == sent - 2
