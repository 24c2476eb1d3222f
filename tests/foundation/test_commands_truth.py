"""Commands that tell the truth (issue 14, item 5 and part of 6): ``tsrmon
simulate`` reports progress and fails when it could not stream, ``backup``
copies every database and refuses an unusable destination in one line,
``rebuild-stats`` counts days, ``tsrmon --help`` suggests no pidfile, and the
console follows LOGGER.LEVEL."""

import os
import re
import sqlite3
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.daemon.harness import Daemon, free_port
from tests.ingest.helpers import port_of, start_listener
from tsrmon import simulate
from tsrmon.cli import main

BIN = os.path.dirname(sys.executable)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_config(tmp_path):
    path = tmp_path / "tsrmon.yml"
    path.write_text(f"DATABASE:\n  PATH: {tmp_path / 'db'}\nDATA:\n  PATH: {tmp_path / 'data'}\n"
                    f"LOGGER:\n  PATH: {tmp_path / 'log'}\nTIME:\n  ZONE: Asia/Seoul\n")
    return str(path)


# -- simulate ------------------------------------------------------------------

def run_simulate(args, timeout=60):
    return subprocess.run([os.path.join(BIN, "tsrmon"), "simulate", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_simulate_fails_when_nothing_listens():
    port = free_port()  # closed again: nothing listens there
    done = run_simulate(["--server", f"127.0.0.1:{port}", "--duration", "1.5", "--progress", "0.5"])
    assert done.returncode == 1, done
    assert "SimMachine1: could not connect" in done.stderr and "refused" in done.stderr
    assert "sent 0 frames" in done.stdout
    # Progress while it ran: the failed attempts per machine.
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert progress and "SimMachine1 0 frames" in progress[-1] and "failed attempts" in progress[-1]


def test_simulate_help_says_the_link_has_no_acknowledgements():
    done = run_simulate(["--help"])
    assert done.returncode == 0
    assert "no acknowledgements" in done.stdout and "Exit status" in done.stdout


@pytest_twisted.inlineCallbacks
def test_simulate_reports_progress_and_succeeds_against_a_listener(tmp_path):
    svc, hub, rec = start_listener(tmp_path)
    try:
        args = simulate.parse_args(["--server", f"127.0.0.1:{port_of(svc)}", "--machines", "2",
                                    "--rate", "20", "--duration", "0.6", "--progress", "0.2"])
        out = Progress()
        sim = yield simulate.run(reactor, args, out=out)
        status, lines = simulate.summary(sim, args)
        assert status == 0, lines
        assert lines[0].startswith(f"sent {sim.frames_sent()} frames from 2 machines")
        assert sim.frames_sent() > 2
        assert out.lines and all("SimMachine1" in line and "SimMachine2" in line for line in out.lines)
        assert any("connected, 0 reconnects" in line for line in out.lines)
        assert all(f.reconnects == 0 and f.closed_by_server == 0 for f in sim.factories)
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_simulate_fails_when_the_server_refuses_the_token(tmp_path):
    svc, hub, rec = start_listener(tmp_path, daq={"TOKENS": {"SimMachine1": "right"}})
    try:
        args = simulate.parse_args(["--server", f"127.0.0.1:{port_of(svc)}", "--token", "wrong",
                                    "--rate", "20", "--duration", "1.5", "--progress", "0"])
        assert args.json  # a token travels in the JSON name frame only
        sim = yield simulate.run(reactor, args)
        status, lines = simulate.summary(sim, args)
        assert status == 1
        assert any("SimMachine1: the server closed the connection" in line for line in lines), lines
        assert sim.factories[0].closed_by_server >= 1
        assert svc.factory.counters["refused_names"] >= 1
    finally:
        yield svc.stopService()


class Progress:
    def __init__(self):
        self.lines = []

    def write(self, text):
        self.lines.extend(line for line in text.splitlines() if line)

    def flush(self):
        pass


# -- backup ------------------------------------------------------------------------

def make_db(path, value):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t(v REAL)")
    con.execute("INSERT INTO t VALUES (?)", (value,))
    con.commit()
    con.close()


def test_backup_includes_the_side_databases(tmp_path, capsys):
    cfg = write_config(tmp_path)
    db = tmp_path / "db"
    db.mkdir()
    make_db(db / "M.db", 1.0)
    make_db(db / ".alarms.sqlite", 2.0)
    make_db(db / ".notifications.sqlite", 3.0)
    (db / "notes.txt").write_text("not a database")
    (db / "backups").mkdir()  # migration backups are not copied again
    make_db(db / "backups" / "M.old.db", 4.0)
    dest = tmp_path / "out"
    assert main(["backup", "--config", cfg, str(dest)]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(os.path.basename(p) for p in printed) == [".alarms.sqlite", ".notifications.sqlite", "M.db"]
    for name, value in ((".alarms.sqlite", 2.0), (".notifications.sqlite", 3.0), ("M.db", 1.0)):
        con = sqlite3.connect(dest / name)
        assert con.execute("SELECT v FROM t").fetchall() == [(value,)]
        con.close()


@pytest.mark.parametrize("kind", ["a file", "under a file"])
def test_backup_to_an_unusable_destination_is_one_line_and_exit_2(tmp_path, kind, capsys):
    # In process: an exception other than the one-line refusal would escape
    # main() here (the console script itself: test_cli.py).
    cfg = write_config(tmp_path)
    (tmp_path / "db").mkdir()
    make_db(tmp_path / "db" / "M.db", 1.0)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    dest = blocker if kind == "a file" else blocker / "sub"
    assert main(["backup", "--config", cfg, str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tsrmon: backup destination {dest} is unusable: ")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_backup_to_a_folder_it_may_not_write_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    # Root writes anywhere, so the permission is refused the way a plant
    # operator's account sees it: the destination is not writable.
    from tsrmon.store import sqlite_tools

    cfg = write_config(tmp_path)
    (tmp_path / "db").mkdir()
    make_db(tmp_path / "db" / "M.db", 1.0)
    dest = tmp_path / "readonly"
    dest.mkdir()
    real = os.access
    monkeypatch.setattr(sqlite_tools.os, "access",
                        lambda p, mode: False if os.path.abspath(p) == str(dest) else real(p, mode))
    assert main(["backup", "--config", cfg, str(dest)]) == 2
    err = capsys.readouterr().err
    assert err == f"tsrmon: backup destination {dest} is unusable: Permission denied\n"
    assert os.listdir(dest) == []


# -- rebuild-stats -------------------------------------------------------------------

def test_rebuild_stats_counts_a_one_day_range_as_one_day(tmp_path, capsys):
    cfg = write_config(tmp_path)
    folder = tmp_path / "data" / "M"
    folder.mkdir(parents=True)
    for sensor in ("vib", "temp"):  # two sensors, one day
        (folder / f"20261126_{sensor}.csv").write_bytes(b"time,data\r\n10:00:01,1.0\r\n")
    (folder / "20261127_vib.csv").write_bytes(b"time,data\r\n10:00:01,1.0\r\n")
    assert main(["rebuild-stats", "--config", cfg, "--machine", "M",
                 "--from", "2026-11-26", "--to", "2026-11-26"]) == 0
    assert re.search(r"\bdays: 1$", capsys.readouterr().out.strip())
    assert main(["rebuild-stats", "--config", cfg, "--machine", "M",
                 "--from", "2026-11-26", "--to", "2026-11-27"]) == 0
    assert re.search(r"\bdays: 2$", capsys.readouterr().out.strip())


def test_rebuild_stats_on_an_unreachable_postgresql_store_refuses_in_one_line_and_touches_nothing(tmp_path, capsys):
    # The PostgreSQL half (store/postgres/rebuild.py) connects only once the
    # arguments, locks, spool and raw files are checked; a store that does
    # not answer is one line and nothing is written.
    path = tmp_path / "pg.yml"
    path.write_text(f"DATABASE:\n  PATH: {tmp_path / 'db'}\n  BACKEND: postgresql\n"
                    f"  DSN: postgresql://postgres@127.0.0.1:1/none\nDATA:\n  PATH: {tmp_path / 'data'}\n"
                    f"LOGGER:\n  PATH: {tmp_path / 'log'}\n")
    folder = tmp_path / "data" / "M"
    folder.mkdir(parents=True)
    (folder / "20261126_vib.csv").write_bytes(b"time,data\r\n10:00:01,1.0\r\n")
    assert main(["rebuild-stats", "--config", str(path), "--machine", "M",
                 "--from", "2026-11-26", "--to", "2026-11-26"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the PostgreSQL store" in err
    assert sorted(os.listdir(tmp_path)) == ["data", "pg.yml"]
    assert sorted(os.listdir(folder)) == ["20261126_vib.csv"]


# -- no pidfile, console level ------------------------------------------------------

def test_help_suggests_twistd_commands_without_a_pidfile():
    done = subprocess.run([os.path.join(BIN, "tsrmon"), "--help"], capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stdout.splitlines() if re.search(r"twistd\s+-", line)]
    assert lines and any("tsrmon.tac" in line for line in lines)
    for line in lines:
        assert "--pidfile=" in line, line
    with open(os.path.join(ROOT, "tsrmon.tac"), encoding="utf-8") as f:
        commands = [line for line in f if line.startswith("#") and re.search(r"twistd\s+-", line)]
    assert commands and all("--pidfile=" in line for line in commands)


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("tac", [False, True], ids=["plugin", "tac"])
def test_console_honours_logger_level(tmp_path, tac):
    daemon = Daemon(tmp_path, overrides={"LOGGER": {"LEVEL": "warn"}}, tac=tac)
    daemon.start()
    try:
        import requests

        assert requests.get(daemon.url("/healthz"), timeout=5).status_code in (200, 503)
    finally:
        assert daemon.stop() == 0
    out = daemon.log_text()
    assert "#warn]" in out  # the console shows warnings (FCM disabled) ...
    assert "#info]" not in out and "#debug]" not in out  # ... and nothing below LOGGER.LEVEL
    assert not os.path.exists(os.path.join(daemon.workdir, "twistd.pid"))
