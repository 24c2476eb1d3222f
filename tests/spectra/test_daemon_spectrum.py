"""The real daemon, a full-rate 50 Hz tone (4 × 25,600 samples per frame,
sent faster than real time), SIGTERM, and the stored minute spectrum,
features and moments read back through the reader (issue 17)."""

import math

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import reactor

from bench.load import frame
from tests.daemon.harness import Daemon
from tsrmon.analytics import signals
from tsrmon.config import build_config
from tsrmon.reader.sqlite_reader import SQLiteReader

RATE = 25600


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest_twisted.inlineCallbacks
def test_full_rate_tone_through_the_daemon_stores_its_spectrum(tmp_path):
    d = Daemon(tmp_path, overrides={"DATA": {"ENABLED": False, "MIN_FREE_MB": 0}}).start()
    try:
        frames = [frame("name", "Spin")]
        for k in range(20):
            sensors = {f"vib{c}": {"type": "VIB", "data": signals.tone(
                RATE, RATE, 50.0, 1.0, start=k * RATE).tolist()} for c in (1, 2)}
            frames.append(frame("DataUpdate", sensors))
        d.send(b"".join(frames))
    finally:
        assert d.stop(timeout=60) == 0, d.log_text()

    cfg = build_config({"DATABASE": {"PATH": str(tmp_path / "db")}, "TIME": {"ZONE": "Asia/Seoul"}},
                       None, str(tmp_path))
    reader = SQLiteReader(cfg, reactor)
    reader.warm_hour_cache = False
    reader.startService()
    try:
        spec = yield reader.spectrum("Spin", "vib1")
        feats = yield reader.features("Spin", "vib2")
        moments = yield reader.moment_stats("Spin", "year")
    finally:
        yield reader.stopService()
    assert spec is not None and spec["convention"] == "rms" and len(spec["lines"]) == 1600
    lines = np.array(spec["lines"])
    k = int(np.argmax(lines))
    assert abs(spec["f0"] + k * spec["df"] - 50.0) <= spec["df"]
    assert np.sqrt(np.sum(lines[max(k - 2, 0):k + 3] ** 2)) == pytest.approx(1 / math.sqrt(2), rel=1e-3)
    # 20 s of samples: blocks of 32,768 with hop 16,384 (at most one minute split).
    assert spec["blocks"] >= 1
    assert sum(f["blocks"] for f in feats) >= 28
    assert all(f["velocity_rms"] == pytest.approx(22.07, abs=0.02) for f in feats)
    (year,) = moments["vib1"]
    assert year["count"] == year["moments_count"] == 20 * RATE
    assert year["kurtosis"] == pytest.approx(1.5, abs=1e-6)
    assert year["crest"] == pytest.approx(math.sqrt(2), abs=1e-6)
