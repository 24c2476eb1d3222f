"""History's default range shows data that exists (issue 14, item 4): a
machine whose newest data is weeks old opens on that data, not on an empty
"last 2 days"."""

import datetime
import time
import zoneinfo

import pytest
import requests

from tests.daemon.harness import Daemon
from tests.dashboard.helpers import ZONE, drive
from tsrmon.client import encode_json


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_history_opens_on_the_newest_data(browser_ready, tmp_path):
    zone = zoneinfo.ZoneInfo(ZONE)
    date = datetime.datetime.now(zone).date() - datetime.timedelta(days=40)
    t = datetime.datetime.combine(date, datetime.time(10, 10), zone).timestamp()  # 40 days ago, 10:10
    day = date.isoformat()
    daemon = Daemon(tmp_path).start()
    try:
        frames = [encode_json("name", "Kiln")]
        for k in range(3):  # three hours of that day
            frames.append(encode_json("DataUpdate", {"kiln_temp": {"type": "TEMP", "data": [800.0 + k]}},
                                      t=t + 3600 * k))
        daemon.send(b"".join(frames))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = requests.get(daemon.url("/stat/hour"), params={"machine": "Kiln", "start": day, "end": day},
                                timeout=5).json()
            if rows:
                break
            time.sleep(0.3)
        assert rows, "the late data was not stored"
        out = drive(daemon, "historylevels", "Kiln")
    finally:
        assert daemon.stop() == 0
    hour = out["levels"]["hour"]
    assert hour["end"] == day and hour["rows"] >= 2 and hour["min_points"] >= 2, hour
    assert out["levels"]["day"]["end"] == day and out["levels"]["day"]["rows"] >= 1
