"""The spool beside the offline tools: ``backup`` copies unreplayed spool
files, ``rebuild-stats`` refuses while one waits (it would count its rows
twice), ``check-config`` reports names that differ only in case."""

import os
import re
import sqlite3

from tests.foundation.test_commands_truth import make_db, write_config
from tsrmon.cli import main
from tsrmon.store import schema, spool


def _spool_file(db_folder, text='{"spool": 1}\n'):
    folder = spool.spool_dir(str(db_folder))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "20261126T100000-1" + spool.SUFFIX)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def test_backup_copies_the_unreplayed_spool(tmp_path, capsys):
    cfg = write_config(tmp_path)
    db = tmp_path / "db"
    db.mkdir()
    make_db(db / "M.db", 1.0)
    src = _spool_file(db, '{"header": true}\n{"sums": 1}\n')
    dest = tmp_path / "out"
    assert main(["backup", "--config", cfg, str(dest)]) == 0
    printed = capsys.readouterr().out.split()
    copied = os.path.join(dest, spool.SPOOL_DIR, os.path.basename(src))
    assert copied in printed
    with open(copied, encoding="utf-8") as f:
        assert f.read() == '{"header": true}\n{"sums": 1}\n'


def test_rebuild_refuses_while_a_spool_waits_for_replay(tmp_path, capsys):
    cfg = write_config(tmp_path)
    folder = tmp_path / "data" / "M"
    folder.mkdir(parents=True)
    (folder / "20261126_vib.csv").write_bytes(b"time,data\r\n10:00:01,1.0\r\n")
    (tmp_path / "db").mkdir()
    _spool_file(tmp_path / "db")
    assert main(["rebuild-stats", "--config", cfg, "--machine", "M",
                 "--from", "2026-11-26", "--to", "2026-11-26"]) == 2
    err = capsys.readouterr().err
    assert "spool file(s)" in err and "start the daemon once" in err
    assert not os.path.exists(tmp_path / "db" / "M.db")  # nothing rebuilt


def test_check_config_reports_case_collisions_and_still_passes(tmp_path, capsys):
    cfg = write_config(tmp_path)
    db = tmp_path / "db"
    db.mkdir()
    conn = sqlite3.connect(db / "M.db")
    conn.execute(f"CREATE TABLE {schema.SENSORS_TABLE} (name TEXT PRIMARY KEY, type TEXT, "
                 f"mode TEXT, first_seen REAL, ord INTEGER)")
    conn.executemany(f"INSERT INTO {schema.SENSORS_TABLE} (name, ord) VALUES (?, ?)",
                     [("Vib", 0), ("vib", 1)])
    conn.commit()
    conn.close()
    assert main(["check-config", cfg]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tsrmon: warning: ")]
    assert len(lines) == 1 and re.search(r"'Vib', 'vib'", lines[0])
