"""The real daemon under twistd: start, listen, refuse, stop (issue 2)."""

import os
import signal
import sqlite3
import time

import pytest
import requests

from tests.conftest import fixture_bytes
from tests.daemon.harness import Daemon, port_is_closed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]  # each ~1-5 s; a daemon start on a loaded machine


@pytest.mark.parametrize("tac", [False, True], ids=["plugin", "tac"])
def test_starts_listens_and_exits_zero_on_sigterm(tmp_path, tac):
    d = Daemon(tmp_path, tac=tac).start()
    try:
        r = requests.get(d.url("/stat/machineList"), timeout=10)
        assert r.status_code == 200 and r.json() == {"machine_list": []}
    finally:
        t0 = time.monotonic()
        rc = d.stop()
    assert rc == 0, d.log_text()
    assert time.monotonic() - t0 < 5
    assert port_is_closed(d.http_port) and port_is_closed(d.tcp_port)
    # logged to the dated file as well as stdout
    logs = os.listdir(tmp_path / "log")
    assert any(name.startswith("tsrmon.") and name.endswith(".log") for name in logs)


def test_bad_configuration_stops_startup_with_one_line(tmp_path):
    cfg = tmp_path / "bad.yml"
    cfg.write_text("SERVER:\n  PORT: 123456\n")
    d = Daemon(tmp_path)
    d.config_path = str(cfg)
    d.start(wait=False)
    rc = d.proc.wait(30)
    out = d.log_text()
    assert rc != 0
    assert f"tsrmon: {cfg}: SERVER.PORT: must be at most 65535, got 123456" in out
    assert "Traceback" not in out


def test_second_daemon_on_same_folders_is_refused_naming_the_pid(tmp_path):
    first = Daemon(tmp_path / "one", overrides={"DATA": {"PATH": str(tmp_path / "data")},
                                                "DATABASE": {"PATH": str(tmp_path / "db")}}).start()
    try:
        second = Daemon(tmp_path / "two", overrides={"DATA": {"PATH": str(tmp_path / "data")},
                                                     "DATABASE": {"PATH": str(tmp_path / "db")}})
        second.start(wait=False)
        rc = second.proc.wait(30)
        out = second.log_text()
        assert rc == 2
        assert f"is in use by another tsrmon (PID {first.proc.pid}" in out
        assert "Another twistd server is running" not in out  # ours, not twistd's pidfile message
    finally:
        assert first.stop() == 0


def test_restart_after_sigkill_has_no_stale_lock(tmp_path):
    d = Daemon(tmp_path).start()
    d.stop(sig=signal.SIGKILL)
    again = Daemon(tmp_path).start()  # same folders, so the same lock files
    assert again.stop() == 0, again.log_text()


DEPLOYED_DDL = """
CREATE TABLE anomaly(id INTEGER PRIMARY KEY AUTOINCREMENT, time TIMESTAMP, threshold REAL, score REAL);
CREATE TABLE shot_blast_vib1_hour_avg (id INTEGER PRIMARY KEY AUTOINCREMENT, time TIMESTAMP, data REAL);
CREATE TABLE shot_blast_vib1_day_avg (id INTEGER PRIMARY KEY AUTOINCREMENT, time TIMESTAMP, data REAL);
CREATE TABLE shot_blast_vib1_month_avg (id INTEGER PRIMARY KEY AUTOINCREMENT, time TIMESTAMP, data REAL);
CREATE TABLE shot_blast_vib1_year_avg (id INTEGER PRIMARY KEY AUTOINCREMENT, time TIMESTAMP, data REAL);
INSERT INTO anomaly(time, threshold, score) VALUES ('2024-01-27 10:15:02.123456', 5.0, 7.0);
INSERT INTO shot_blast_vib1_hour_avg(time, data) VALUES ('2024-01-27 10:00:00', 0.25);
INSERT INTO shot_blast_vib1_hour_avg(time, data) VALUES ('2024-01-27 11:00:00', 0.5);
"""


def test_deployed_working_directory_is_found_and_served(tmp_path):
    """A deployed server's folder: resources/config.yml, db/*.db, data/ — as is."""
    (tmp_path / "resources").mkdir()
    (tmp_path / "db").mkdir()
    (tmp_path / "data" / "ShotBlast").mkdir(parents=True)
    (tmp_path / "data" / "ShotBlast" / "20240127_shot_blast_vib1.csv").write_bytes(
        b"time,data\r\n10:15:02,0.25\r\n")
    con = sqlite3.connect(tmp_path / "db" / "ShotBlast.db")
    con.executescript(DEPLOYED_DDL)
    con.close()
    d = Daemon(tmp_path)
    # the deployed file, with only the ports changed so the test can run in parallel
    deployed = (
        "SERVER:\n  HOST: '127.0.0.1'\n  PORT: %d\n  TCP_PORT: %d\n  CORS_ORIGINS: ['*']\n"
        "FCM:\n  CRED_PATH: resources/tsr-monitoring-app-c08931e07d1a.json\n  TIMEOUT: 120\n"
        "LOGGER:\n  PATH: 'log'\nSTAT:\n  VIB: ABS\n  TEMP: REAL\n"
        "DATABASE:\n  PATH: 'db'\nDATA:\n  PATH: 'data'\nTIME:\n  ZONE: Asia/Seoul\n"
    ) % (d.http_port, d.tcp_port)
    (tmp_path / "resources" / "config.yml").write_text(deployed)
    d.config_path = str(tmp_path / "resources" / "config.yml")
    d.tac = True  # the .tac reads TSRMON_CONFIG
    d.start()
    try:
        assert requests.get(d.url("/stat/machineList"), timeout=10).json() == {"machine_list": ["ShotBlast"]}
        rows = requests.get(d.url("/stat/hour?machine=ShotBlast&start=2024-01-27&end=2024-01-27"),
                            timeout=10).json()
        assert [(r["time"], r["data"]) for r in rows] == [("2024-01-27 10:00:00", 0.25),
                                                          ("2024-01-27 11:00:00", 0.5)]
        an = requests.get(d.url("/stat/anomaly?machine=ShotBlast&start=2024-01-27&end=2024-01-27"),
                          timeout=10).json()
        assert an[0]["score"] == 7.0 and an[0]["threshold"] == 5.0
        # new data for the same machine lands in the same database file
        d.send(fixture_bytes("session.bin"))
    finally:
        assert d.stop() == 0, d.log_text()
    con = sqlite3.connect(tmp_path / "db" / "ShotBlast.db")
    n_legacy = con.execute("SELECT COUNT(*) FROM shot_blast_vib1_hour_avg WHERE time LIKE '2024-01-27%'").fetchone()[0]
    n_new = con.execute("SELECT COUNT(*) FROM shot_blast_vib1_hour_avg WHERE t0 IS NOT NULL").fetchone()[0]
    con.close()
    assert n_legacy == 2 and n_new >= 1
    assert os.listdir(tmp_path / "data" / "ShotBlast")  # raw CSV beside the old files
