"""The ``tsrmon`` command's tools, as an operator runs them."""

import os
import sqlite3
import subprocess
import sys

from tsrmon.cli import main
from tsrmon.lock import InstanceLock

BIN = os.path.dirname(sys.executable)


def write_config(tmp_path):
    path = tmp_path / "tsrmon.yml"
    path.write_text(f"DATABASE:\n  PATH: {tmp_path / 'db'}\nDATA:\n  PATH: {tmp_path / 'data'}\n"
                    f"LOGGER:\n  PATH: {tmp_path / 'log'}\nTIME:\n  ZONE: Asia/Seoul\n")
    return str(path)


def test_rebuild_stats_from_raw_csv_with_progress(tmp_path, capsys):
    cfg = write_config(tmp_path)
    folder = tmp_path / "data" / "M"
    folder.mkdir(parents=True)
    (folder / "20261126_vib.csv").write_bytes(b"time,data\r\n10:00:01,1.0\r\n10:00:01,-3.0\r\n11:30:00,2.0\r\n")
    assert main(["rebuild-stats", "--config", cfg, "--machine", "M",
                 "--from", "2026-11-26", "--to", "2026-11-26"]) == 0
    out = capsys.readouterr()
    assert "rebuilt" in out.out and "samples: 3" in out.out
    assert "100.0%" in out.err  # the progress bar reached the end
    con = sqlite3.connect(tmp_path / "db" / "M.db")
    rows = con.execute('SELECT time, "count", sum FROM vib_hour_avg ORDER BY time').fetchall()
    con.close()
    assert rows == [("2026-11-26 10:00:00", 2, -2.0), ("2026-11-26 11:00:00", 1, 2.0)]


def test_rebuild_refuses_while_a_daemon_holds_the_lock(tmp_path, capsys):
    cfg = write_config(tmp_path)
    lock = InstanceLock([tmp_path / "data", tmp_path / "db"]).acquire()
    try:
        assert main(["rebuild-stats", "--config", cfg, "--machine", "M",
                     "--from", "2026-11-26", "--to", "2026-11-26"]) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert err.startswith("tsrmon: ") and f"PID {os.getpid()}" in err and err.count("\n") == 1


def test_backup_copies_every_database(tmp_path, capsys):
    cfg = write_config(tmp_path)
    (tmp_path / "db").mkdir()
    for name in ("A", "B"):
        con = sqlite3.connect(tmp_path / "db" / f"{name}.db")
        con.execute("CREATE TABLE anomaly(id INTEGER PRIMARY KEY, time TIMESTAMP, threshold REAL, score REAL)")
        con.execute("INSERT INTO anomaly(time, threshold, score) VALUES ('2026-11-26 10:00:00', 5, 7)")
        con.commit()
        con.close()
    dest = tmp_path / "backup"
    assert main(["backup", "--config", cfg, str(dest)]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2
    for path in printed:
        con = sqlite3.connect(path)
        assert con.execute("SELECT score, threshold FROM anomaly").fetchall() == [(7.0, 5.0)]
        con.close()


def test_console_script_is_installed_and_answers():
    r = subprocess.run([os.path.join(BIN, "tsrmon"), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "check-config" in r.stdout and "rebuild-stats" in r.stdout
