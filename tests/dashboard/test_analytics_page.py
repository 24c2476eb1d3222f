"""Issue 17: the demo's machine page shows a spectrum, a waterfall and
velocity RMS with ISO 10816-3 zones, in real headless Chromium against
``twistd tsrmon --demo`` (its CoolingFan streams 8,192 samples/s with
unbalance, misalignment and an outer-race defect), and the next minute's
spectrum arrives as a live ``spectrum`` event; the History table shows the
new statistics.  The values the page shows are the REST answers'."""

import json
import os
import subprocess

import pytest
import requests

from tests.daemon.harness import Daemon
from tests.dashboard.helpers import ARTIFACTS, HERE, chromium
from tsrmon.daqside.demo import DEMO_FULL_RATE

DRIVER = os.path.join(HERE, "analytics.cjs")
MACHINE = "CoolingFan"
SENSOR = "fan_vib"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_machine_page_shows_spectrum_waterfall_and_velocity_with_iso_zones(browser_ready, tmp_path):
    daemon = Daemon(tmp_path, demo=True)
    daemon.start()
    try:
        env = dict(os.environ, TSRMON_CHROMIUM=chromium() or "")
        done = subprocess.run(["node", DRIVER, daemon.url(""), ARTIFACTS, MACHINE, "200000"], cwd=HERE,
                              capture_output=True, text=True, timeout=260, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert "error" not in out, f"{out['error']}\n{daemon.log_text()[-3000:]}"
        assert out["foreign_requests"] == [] and out["page_errors"] == []
        features = requests.get(daemon.url("/features"), params={"machine": MACHINE, "sensor": SENSOR},
                                timeout=5).json()
        spectrum = requests.get(daemon.url("/spectrum"), params={"machine": MACHINE, "sensor": SENSOR},
                                timeout=5).json()
        machines = requests.get(daemon.url("/machines"), timeout=5).json()["machines"]
    finally:
        assert daemon.stop() == 0

    (card,) = [c for c in out["cards"] if c["sensor"] == SENSOR]
    fr = DEMO_FULL_RATE[MACHINE]["rpm"] / 60
    # The spectrum: 1,600 RMS lines; its strongest peak is the unbalance 1×,
    # labelled, and the orders 1×, 2×, 3× are labelled at n × running speed.
    spec = card["spectrum"]
    # From /spectrum (1,600 lines) or, right after subscribing, from the live
    # `spectrum` event of the same minute (grouped to 400 values).
    assert (spec["source"], spec["lines"]) in (("rest", "1600"), ("live", "400"))
    assert spec["amplitude"] == "rms" and spec["inked"] > 1000
    assert abs(float(spec["peakHz"]) - fr) < 1.0
    peaks = [lab for lab in card["labels"] if lab["kind"] == "peak"]
    orders = {lab["order"]: float(lab["hz"]) for lab in card["labels"] if lab["kind"] == "order"}
    assert peaks and "Hz" in peaks[0]["text"]
    assert set(orders) == {"1", "2", "3"} and all(abs(orders[k] - int(k) * fr) < 1.5 for k in orders)
    assert spectrum["amplitude"] == "rms" and spectrum["unit"] == "g"
    # The waterfall: at least one row of 200 columns, drawn.
    wf = card["waterfall"]
    assert int(wf["rows"]) >= 1 and wf["cols"] == "200" and wf["inked"] > 1000
    # Velocity RMS with the ISO zones of /features (group 2, rigid), and the
    # shown value is the REST value (the fan runs near the B/C boundary).
    vel = card["velocity"]
    assert vel["canvases"] >= 1 and int(vel["points"]) >= 1
    assert [float(z) for z in vel["zones"].split(",")] == features["iso10816"]["boundaries"] == [1.4, 2.8, 4.5]
    rest_values = [r["velocity_rms"] for r in features["rows"]]
    assert any(abs(float(vel["latest"]) - v) < 1e-9 for v in rest_values)
    assert 1.4 < float(vel["latest"]) < 7.1 and vel["zone"] in ("B", "C", "D")
    assert card["zone_badge"].startswith("ISO " + vel["zone"])
    assert "A/B 1.4" in card["iso_note"]
    # /machines shows the sensor's metadata from the demo's SENSORS entry.
    fan = next(m for m in machines if m["machine"] == MACHINE)
    meta = next(s for s in fan["sensors"] if s["name"] == SENSOR)["meta"]
    assert meta["rate"] == 8192 and meta["unit"] == "g" and meta["rpm"] == 1480.0
    # A newer minute arrived as a live `spectrum` event: 400 values (the
    # stored lines grouped by 4), its strongest peak still the 1×.
    live = out["live"]
    assert int(live["t0"]) > out["rest_t0"] and live["lines"] == "400"
    assert abs(float(live["peakHz"]) - fr) < 1.0
    # History: the moment statistics as columns, with numbers for the fan.
    assert out["history_fields"] == ["skewness", "kurtosis", "peak", "peak_to_peak", "crest"]
    fan_rows = [r for r in out["history_rows"] if r["sensor"] == SENSOR]
    assert fan_rows and any(r["fields"]["kurtosis"] not in ("–", "") for r in fan_rows)
    for shot in out["screenshots"]:
        assert os.path.getsize(shot) > 1000, shot
