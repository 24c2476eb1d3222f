"""A single node (no CLUSTER.REDIS, the SQLite store) builds and starts
without the 'cluster' extra: the README's run command installs only
``pip install .``, which brings neither txredisapi nor psycopg."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = r"""
import importlib.abc, sys, tempfile
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("txredisapi", "psycopg"):
            raise ImportError("not installed: " + name)
sys.meta_path.insert(0, Block())
from tsrmon.config import build_config
from tsrmon.service import makeService
d = tempfile.mkdtemp()
top = makeService(build_config({"DATA": {"PATH": d + "/data"}, "DATABASE": {"PATH": d + "/db"}}), lock=False)
assert "cluster" not in top.rooms
assert not any(m.split(".")[0] in ("txredisapi", "psycopg") for m in sys.modules)
print("OK")
"""


@pytest.mark.timeout(60)
def test_the_daemon_builds_without_txredisapi_and_psycopg():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stderr[-2000:]
