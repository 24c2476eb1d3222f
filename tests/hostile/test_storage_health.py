"""One bad file degrades only its own component, against the real daemon:
/healthz stays 200 with the detail and recovers by itself once writes
succeed; an idle CSV handle is closed so a deleted file frees its space."""

import datetime
import os
import shutil
import socket
import time
import zoneinfo

import pytest
import requests

from tests.daemon.harness import Daemon
from tsrmon.client import encode_pickle

SEOUL = zoneinfo.ZoneInfo("Asia/Seoul")  # the harness's TIME.ZONE


def days():
    """Today and tomorrow in Seoul (a test running across midnight)."""
    now = datetime.datetime.now(SEOUL)
    return [(now + datetime.timedelta(days=k)).strftime("%Y%m%d") for k in (0, 1)]


def connect(d, machine):
    s = socket.create_connection(("127.0.0.1", d.tcp_port))
    s.sendall(encode_pickle("name", machine))
    return s


def send(s, sensors, value=1.0):
    s.sendall(encode_pickle("DataUpdate", {name: {"type": "VIB", "data": [value] * 10}
                                           for name in sensors}))


def wait_health(d, predicate, timeout, what, feed=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if feed is not None:
            feed()
        r = requests.get(d.url("/healthz"), timeout=10)
        last = (r.status_code, r.json())
        if predicate(*last):
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last /healthz: {last}")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_one_bad_csv_file_degrades_only_raw_csv_and_recovers(tmp_path):
    d = Daemon(tmp_path).start()
    blockers = [tmp_path / "data" / "M" / f"{day}_bad.csv" for day in days()]
    for b in blockers:
        b.mkdir(parents=True)  # a folder where the sensor's file goes
    try:
        s = connect(d, "M")
        status, body = wait_health(
            d, lambda st, b: b["checks"]["raw_csv"].get("state") == "degraded", 30,
            "raw CSV degraded", feed=lambda: send(s, ["good", "bad"]))
        assert status == 200 and body["ok"] is True
        raw = body["checks"]["raw_csv"]
        assert raw["ok"] is True and list(raw["degraded"]) == ["M/bad"]
        assert raw["degraded"]["M/bad"]["dropped_rows"] >= 10
        # Every other check is untouched, and the good sensor is written.
        assert all(c["ok"] for c in body["checks"].values())
        good = tmp_path / "data" / "M" / f"{days()[0]}_good.csv"
        assert good.exists() or (tmp_path / "data" / "M" / f"{days()[1]}_good.csv").exists()
        for b in blockers:
            shutil.rmtree(b)
        status, body = wait_health(
            d, lambda st, b: b["checks"]["raw_csv"]["state"] == "ok", 30, "raw CSV recovered",
            feed=lambda: send(s, ["good", "bad"]))
        assert status == 200 and "degraded" not in body["checks"]["raw_csv"]
        s.close()
    finally:
        assert d.stop() == 0
    log = d.log_text()
    assert "cannot write the file of M/bad" in log and "M/bad is written again" in log


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_one_unwritable_database_degrades_only_its_machine_and_recovers(tmp_path):
    d = Daemon(tmp_path).start()
    blocker = tmp_path / "db" / "Bad.db"
    blocker.mkdir(parents=True)  # a folder where the machine's database goes
    try:
        good, bad = connect(d, "Good"), connect(d, "Bad")

        def feed():
            send(good, ["vib"])
            send(bad, ["vib"])

        status, body = wait_health(
            d, lambda st, b: b["checks"]["database"].get("state") == "degraded", 30,
            "database degraded", feed=feed)
        assert status == 200 and body["ok"] is True
        db = body["checks"]["database"]
        assert list(db["degraded"]) == ["Bad"] and db["degraded"]["Bad"]["queued_rows"] > 0
        assert "unable to open" in db["degraded"]["Bad"]["error"]
        assert (tmp_path / "db" / "Good.db").is_file()
        shutil.rmtree(blocker)
        status, body = wait_health(
            d, lambda st, b: b["checks"]["database"]["state"] == "ok", 30, "database recovered",
            feed=feed)
        assert status == 200 and body["checks"]["database"]["queued_rows"] >= 0
        good.close()
        bad.close()
    finally:
        assert d.stop() == 0
    assert (tmp_path / "db" / "Bad.db").is_file()
    assert not (tmp_path / "db" / "spool").exists() or not os.listdir(tmp_path / "db" / "spool")


def _holders(pid, path):
    """fd links to ``path`` held by process ``pid`` and its children."""
    pids = {pid}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.add(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    links = []
    for p in pids:
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if link.startswith(str(path)):
                links.append(link)
    return links


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_deleted_csv_frees_its_space_after_the_idle_timeout(tmp_path):
    idle = 2.0
    overrides = {"DATA": {"MIN_FREE_MB": 0, "IDLE_CLOSE": idle}}
    d = Daemon(tmp_path, overrides=overrides).start()
    try:
        s = connect(d, "M")
        send(s, ["s"])
        folder = tmp_path / "data" / "M"
        files = []

        def written():
            files[:] = list(folder.glob("*_s.csv")) if folder.exists() else []
            return files and _holders(d.proc.pid, files[0])

        deadline = time.monotonic() + 30
        while not written():
            assert time.monotonic() < deadline, "the CSV file was never opened"
            time.sleep(0.1)
        path = files[0]
        os.remove(path)
        assert any(link.endswith("(deleted)") for link in _holders(d.proc.pid, path))
        # No more rows: only the idle timer can close it.
        deadline = time.monotonic() + idle + 30
        while _holders(d.proc.pid, path):
            assert time.monotonic() < deadline, "the deleted file is still held open"
            time.sleep(0.2)
        s.close()
    finally:
        assert d.stop() == 0
