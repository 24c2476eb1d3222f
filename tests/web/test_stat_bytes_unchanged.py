"""Issue 17: the deployed /stat answers are byte-identical before and after
the opt-in `fields=` was added.  The REST layer as it was just before
(``tsrmon/web/rest.py`` at BEFORE, read from git) and the current one serve
the same database (filled through the real statistics, spectra room and
store) and every default answer (JSON and CSV, every level, /stat/minute)
is compared byte for byte."""

import importlib.util
import os
import subprocess
import sys

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.web.server import Site

from tests.conftest import ROOT
from tests.web.analytics_db import fill
from tsrmon.reader.sqlite_reader import SQLiteReader
from tsrmon.web.rest import RestAPI

BEFORE = "9d4bad5"  # the last commit before issue 17's REST routes


def old_rest_api(tmp_path):
    try:
        text = subprocess.run(["git", "show", f"{BEFORE}:tsrmon/web/rest.py"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"git history with {BEFORE} is not available: {e}")
    # The modules it imported have moved since (issue 19): point it at their homes.
    text = text.replace("from tsrmon.store.reader import", "from tsrmon.reader.series import")
    path = tmp_path / "rest_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("tsrmon_rest_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.RestAPI


class OldStyleConfig:
    """The typed config as the REST layer at BEFORE read it: the two item
    reads it made (``config["APP"]["MACHINE_ALIASES"]``,
    ``config["TIME"]["ZONE"]``), attributes for the current modules it uses."""

    def __init__(self, config):
        self._config = config

    def __getattr__(self, name):
        return getattr(self._config, name)

    def __getitem__(self, section):
        return {"APP": {"MACHINE_ALIASES": self._config.app.machine_aliases},
                "TIME": {"ZONE": self._config.time.zone}}[section]


@pytest_twisted.inlineCallbacks
def test_default_stat_answers_keep_their_bytes(tmp_path):
    OldRestAPI = old_rest_api(tmp_path)
    filled = yield fill(tmp_path / "db")
    reader = SQLiteReader(filled.cfg, reactor)
    reader.warm_hour_cache = False
    reader.startService()
    ports = []
    try:
        urls = []
        for cls, cfg, kw in ((OldRestAPI, OldStyleConfig(filled.cfg), {}),
                             (RestAPI, filled.cfg, {"catalog": filled.catalog})):
            api = cls(cfg, filled.clock, filled.hub, reader, **kw)
            port = reactor.listenTCP(0, Site(api.resource()), interface="127.0.0.1")
            ports.append(port)
            urls.append(f"http://127.0.0.1:{port.getHost().port}")
        paths = []
        for level in ("hour", "day", "month", "year"):
            for extra in ("", "&align=false", "&format=csv"):
                paths.append(f"/stat/{level}?machine=Fan&start=2026-01-01&end=2026-12-31{extra}")
        paths += ["/stat/minute?machine=Fan&minutes=10", "/stat/minute?machine=Fan&minutes=10&format=csv",
                  "/stat/minute?machine=Fan1&minutes=10&align=true", "/stat/machineList",
                  "/stat/hour?machine=Fan&start=2026-12-07&end=2026-12-07"]
        compared = 0
        for path in paths:
            answers = []
            for url in urls:
                r = yield treq.get(url + path, persistent=False)
                body = yield r.content()
                answers.append((r.code, r.headers.getRawHeaders("content-type"),
                                r.headers.getRawHeaders("content-disposition"), body))
            assert answers[0] == answers[1], path
            assert answers[0][0] == 200 and len(answers[0][3]) > 20, path
            compared += 1
        assert compared == len(paths)
    finally:
        for port in ports:
            yield port.stopListening()
        yield reader.stopService()
