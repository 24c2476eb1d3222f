"""Attack 3, names that collide or overflow, against the real daemon."""

import glob
import os

import pytest

from tests.daemon.harness import Daemon
from tests.hostile.ingest_attacks import name_frame
from tests.hostile.ingest_peers import MiB, HealthProbe, LegitDaq, connect, csv_bytes, machine_metric, wait_for
from tests.ingest.helpers import frame

WIDE = "\U00010400" * 64  # a valid-looking 64-character name of 256 UTF-8 bytes


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_overflowing_and_case_colliding_names(tmp_path):
    d = Daemon(tmp_path, rlimit_as=2048 * MiB).start()
    legit = LegitDaq(d.tcp_port, "Legit")
    probe = HealthProbe(d, period=0.2)
    try:
        legit.start()
        probe.start()
        # A machine name that cannot become a file name: refused at the name frame.
        with connect(d.tcp_port) as s:
            s.sendall(name_frame(WIDE) + b"\x5c\x6f")
            s.sendall(frame("DataUpdate", {"v": {"type": "VIB", "data": [1.0]}}))
            wait_for(lambda: d.metric("tsrmon_ingest_refused_name_bad_total") == 1, 10, what="wide name refused")
        # A sensor name that cannot become a file name, and two that differ in case.
        with connect(d.tcp_port) as s:
            s.sendall(name_frame("Press") + b"\x5c\x6f")
            for _ in range(3):
                s.sendall(frame("DataUpdate", {"Vib": {"type": "VIB", "data": [1.0, 2.0]},
                                               "vib": {"type": "VIB", "data": [50.0]},
                                               WIDE: {"type": "VIB", "data": [3.0]}}))
            wait_for(lambda: d.metric("tsrmon_ingest_refused_sensor_case_total") == 3, 10, what="vib refused")
            wait_for(lambda: csv_bytes(d, "Press") > 0, 10, what="Vib stored")
        # A machine that differs only in case from a known one.
        with connect(d.tcp_port, bind="127.0.0.2") as s:
            s.sendall(name_frame("press") + b"\x5c\x6f")
            wait_for(lambda: d.metric("tsrmon_ingest_refused_name_case_total") == 1, 10, what="press refused")
        stored = csv_bytes(d, "Legit")
        wait_for(lambda: csv_bytes(d, "Legit") > stored, 10, what="Legit still stored")
        probe.stop()
        assert probe.statuses == {200}  # a bad sensor name used to turn /healthz 503 until restart
        assert machine_metric(d, "samples", "Press") == 6
        assert machine_metric(d, "dropped_sensors", "Press") == 6  # vib and the wide name, 3 frames
        data = os.path.join(d.workdir, "data")
        assert sorted(n for n in os.listdir(data) if not n.startswith(".")) == ["Legit", "Press"]
        files = [os.path.basename(p) for p in glob.glob(os.path.join(data, "Press", "*"))]
        assert files and all(f.endswith("_Vib.csv") for f in files)
        log = d.log_text()
        assert "sensor 'vib' refused: it differs only in case from the known sensor 'Vib'" in log
        assert "machine name 'press' differs only in case from the known machine 'Press'" in log
        assert "name of 256 bytes in UTF-8, longer than 200" in log
    finally:
        probe.stop()
        legit.stop()
        rc = d.stop()
    assert rc == 0
