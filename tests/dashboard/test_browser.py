"""The dashboard in real headless Chromium against ``twistd tsrmon --demo``.

Needs Debian's ``chromium`` (a system package: the README's test command
installs it; skipped without it, failed under TSRMON_REQUIRE_SERVICES=1),
Node.js with ``playwright-core`` and a built dashboard (see helpers.py).
Screenshots of every view go to ``tests/dashboard/artifacts/`` (git-ignored).
"""

import datetime
import time
import urllib.parse
import zoneinfo

import pytest
import requests

from tests.conftest import require_service
from tests.daemon.harness import Daemon
from tests.dashboard.helpers import ZONE, drive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _machines(daemon):
    body = requests.get(daemon.url("/machines"), timeout=5).json()
    items = body["machines"] if isinstance(body, dict) else body
    out = {}
    for item in items:
        sensors = item.get("sensors") or {}
        if isinstance(sensors, list):
            sensors = {s["name"]: s["type"] for s in sensors}
        out[item["machine"]] = {"connected": item["connected"], "sensors": sensors,
                                "faults": item.get("faults", 0)}
    return out


@pytest.fixture(scope="module")
def demo(browser_ready, tmp_path_factory):
    """One demo daemon for the module; its DAQs connected with their sensors."""
    workdir = tmp_path_factory.mktemp("dashboard-demo")
    daemon = Daemon(workdir, demo=True)
    try:
        daemon.start()
    except (RuntimeError, TimeoutError) as e:
        log = daemon.log_text()
        daemon.stop()
        # Until the lead has wired every room into makeService the daemon may
        # not start at all; that is not this room's failure.
        wired = "ModuleNotFoundError" not in log and "ImportError" not in log
        require_service(wired, f"daemon not fully wired yet: {e}: {log[-600:]}")
        raise AssertionError(f"the demo daemon did not start: {e}\n{log[-3000:]}")
    try:
        page = requests.get(daemon.url("/"), headers={"Accept": "text/html"}, timeout=5)
        require_service('data-tsrmon-dashboard="built"' in page.text,
                        "the daemon does not serve the dashboard at / yet (wire "
                        "tsrmon.dashboard.dashboard_front(rest.resource(), config) as the Site root)")
        deadline = time.monotonic() + 20
        machines = {}
        while time.monotonic() < deadline:
            machines = {n: m for n, m in _machines(daemon).items() if m["connected"] and m["sensors"]}
            if machines:
                break
            time.sleep(0.5)
        assert machines, f"no demo DAQ connected within 20 s: {_machines(daemon)}"
        yield daemon, machines
    finally:
        daemon.stop()


def test_overview_lists_the_demo_machines(demo):
    daemon, machines = demo
    out = drive(daemon, "overview")
    assert out["dashboard"] == "built"
    assert out["conn"] == "connected"
    cards = {card["name"]: card for card in out["machines"]}
    assert set(machines) <= set(cards)
    for name, machine in machines.items():
        assert cards[name]["daq"] == "connected"
        assert set(cards[name]["sensors"]) == set(machine["sensors"])
    assert out["lang_after_toggle"] in ("ko", "en")
    assert out["conn_text_after_toggle"] in ("실시간: 연결됨", "Live: connected")
    assert len(out["screenshots"]) == 4


def test_live_chart_receives_new_points(demo):
    daemon, machines = demo
    name = sorted(machines)[0]
    out = drive(daemon, "live", name)
    assert set(out["points_first"]) == set(machines[name]["sensors"])
    for sensor, first in out["points_first"].items():
        assert out["points_later"][sensor] >= first + 2
    assert out["canvases"] and all(w > 0 and h > 0 for w, h in out["canvases"])


@pytest.mark.timeout(110)
def test_anomaly_from_the_daq_shows_up(demo):
    daemon, machines = demo
    out = drive(daemon, "anomaly", timeout=90, env={"TSRMON_ANOMALY_WAIT_MS": "45000"})
    badge, indicator = out["badge"], out["indicator"]
    assert out["machine"] in machines
    assert badge["anomaly"] in ("normal", "anomalous")
    score, threshold = float(badge["score"]), float(badge["threshold"])
    assert badge["anomaly"] == ("anomalous" if score > threshold else "normal")
    assert indicator["state"] == badge["anomaly"] and indicator["count"] >= 1
    # The daemon saw that FaultDetect too.
    assert _machines(daemon)[out["machine"]]["faults"] >= 1


def test_history_renders_rows_from_stat_hour_and_a_csv_downloads(demo):
    daemon, machines = demo
    name = sorted(machines)[0]
    today = datetime.datetime.now(zoneinfo.ZoneInfo(ZONE)).date().isoformat()
    query = {"machine": name, "start": today, "end": today}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if requests.get(daemon.url("/stat/hour"), params=query, timeout=5).json():
            break
        time.sleep(0.5)
    out = drive(daemon, "history", name)
    assert out["rows_reported"] >= 1
    assert out["chart_canvas"] >= 1
    assert len(out["table_rows"]) == min(out["rows_reported"], 1000)
    # The same request as the page's (its CSV link without format=csv):
    # every row shown is a row of /stat/hour (rows only ever get added).
    href = urllib.parse.urlsplit(out["csv_href"])
    params = {k: v for k, v in urllib.parse.parse_qsl(href.query) if k != "format"}
    assert params["machine"] == name and params["start"] <= today <= params["end"]
    rest = requests.get(daemon.url("/stat/hour"), params=params, timeout=5).json()
    stored = {(r["time"], r["name"][: -len("_hour_avg")]) for r in rest}
    shown = {(row[0], row[1]) for row in out["table_rows"]}
    assert shown and shown <= stored and len(rest) >= out["rows_reported"]
    assert {s for _, s in shown} <= set(machines[name]["sensors"])

    download = out["download"]
    assert download["failure"] is None and download["suggested"].endswith(".csv")
    with open(download["file"], encoding="utf-8") as f:
        lines = f.read().splitlines()
    direct = requests.get(out["csv_href"], timeout=5)
    assert direct.status_code == 200 and "csv" in direct.headers["content-type"]
    assert len(lines) >= 2 and lines[0] == direct.text.splitlines()[0]


def test_history_levels_show_lines_on_first_open(demo):
    """``--demo`` backfills 14 days through the late-data path: the History
    view's hour, day and month levels each draw a line (two points or more
    per sensor) in their default range, on first open."""
    daemon, machines = demo
    name = sorted(machines)[0]
    out = drive(daemon, "historylevels", name)
    today = datetime.datetime.now(zoneinfo.ZoneInfo(ZONE)).date()
    for lv, expected_rows in (("hour", 24), ("day", 14), ("month", 1)):
        got = out["levels"][lv]
        assert got["end"] == today.isoformat(), (lv, got)
        assert got["series"] == len(machines[name]["sensors"]), (lv, got)
        assert got["rows"] >= expected_rows * got["series"], (lv, got)
        assert got["min_points"] >= 2 and got["canvas"] >= 1, (lv, got)
