"""Attack 4, log amplification, against the real daemon: for a whole minute,
connections with 5 MiB and 60 KB names, a DAQ flooding refused frames that
quote its own text, a reconnect/takeover storm and another PC claiming the
storm's name grow the log file by at most ~100 KB (105 MB in 1.9 s before)."""

import json
import threading
import time

import pytest

from tests.daemon.harness import Daemon
from tests.hostile.ingest_attacks import name_frame
from tests.hostile.ingest_peers import MiB, HealthProbe, LegitDaq, connect, csv_bytes, machine_metric, wait_for
from tests.ingest.helpers import frame

ATTACK_SECONDS = 60
LOG_BUDGET = 100_000  # bytes of log file for the minute of attack


def _send_and_close(port, data, bind=None, wait=True):
    try:
        with connect(port, bind=bind, timeout=30) as s:
            s.sendall(data)
            if wait:
                s.settimeout(5)
                s.recv(1)  # until the daemon closes it
    except OSError:
        pass


def _loop(deadline, fn, *args, **kw):
    while time.monotonic() < deadline:
        fn(*args, **kw)


def _storm(port, deadline, counts):
    """Reconnect as "Storm" as fast as possible; each new connection takes
    over the previous one (same address), which is closed afterwards."""
    prev = None
    while time.monotonic() < deadline:
        try:
            s = connect(port)
            s.sendall(name_frame("Storm") + b"\x5c\x6f" + frame("DataUpdate", {"v": {"type": "VIB", "data": [1.0]}}))
            counts["connects"] += 1
        except OSError:
            continue
        if prev is not None:
            prev.close()
        prev = s
        time.sleep(0.005)
    if prev is not None:
        prev.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_log_growth_bounded_for_a_minute_of_attacks(tmp_path):
    d = Daemon(tmp_path, rlimit_as=2048 * MiB).start()
    legit = LegitDaq(d.tcp_port, "Legit")
    probe = HealthProbe(d, period=1.0)
    try:
        wait_for(lambda: d.get("/healthz")[0] == 200, 20, what="healthy daemon")
        legit.start()
        probe.start()
        wait_for(lambda: csv_bytes(d, "Legit") > 0, 20, what="Legit stored")
        before_file, before_out = d.log_bytes(stdout=False), d.log_bytes(files=False)
        started = time.monotonic()
        deadline = started + ATTACK_SECONDS
        huge = "\x1b[2J" + "A\n" * (5 * MiB // 2)
        names = [name_frame(huge), (json.dumps({"event": "name", "data": huge}) + "\n").encode(),
                 name_frame("B" * 60_000), name_frame("\n" * 30_000)]
        threads = [threading.Thread(target=_loop, args=(deadline, _send_and_close, d.tcp_port, names[i % 4],
                                                        f"127.0.0.{2 + i % 8}")) for i in range(20)]
        # A named DAQ flooding refused frames, each quoting 1 KB of its own text.
        bad = name_frame("Flood") + b"\x5c\x6f" + b"".join(frame("Nonsense" + "\n" * 1000, {}) for _ in range(500))
        threads.append(threading.Thread(target=_loop, args=(deadline, _send_and_close, d.tcp_port, bad,
                                                            "127.0.0.30", False)))
        counts = {"connects": 0}
        threads.append(threading.Thread(target=_storm, args=(d.tcp_port, deadline, counts)))
        # Another PC claiming the storm's name over and over.
        threads.append(threading.Thread(target=_loop, args=(deadline, _send_and_close, d.tcp_port,
                                                            name_frame("Storm") + b"\x5c\x6f", "127.0.0.40",
                                                            False)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(ATTACK_SECONDS + 60)
        elapsed = time.monotonic() - started
        grown_file = d.log_bytes(stdout=False) - before_file
        grown_out = d.log_bytes(files=False) - before_out
        takeovers = machine_metric(d, "takeovers", "Storm")
        stored = csv_bytes(d, "Legit")
        wait_for(lambda: csv_bytes(d, "Legit") > stored, 10, what="Legit still stored")
        probe.stop()
        print(f"log file grew {grown_file} bytes (stdout {grown_out}) in {elapsed:.1f} s: "
              f"{counts['connects']} storm connects, {takeovers:.0f} takeovers, "
              f"{d.metric('tsrmon_ingest_refused_names_total'):.0f} refused names, "
              f"{d.metric('tsrmon_ingest_refused_unnamed_buffer_total'):.0f} refused before the name, "
              f"{d.metric('tsrmon_ingest_refused_frames_total'):.0f} refused frames; "
              f"/healthz worst {probe.worst * 1000:.0f} ms")
        assert takeovers >= 100
        assert d.metric("tsrmon_ingest_refused_unnamed_buffer_total") >= 20  # the 5 MiB names
        assert d.metric("tsrmon_ingest_refused_name_bad_total") >= 10  # the 60 KB ones
        assert d.metric("tsrmon_ingest_refused_frames_total") >= 1000
        assert grown_file < LOG_BUDGET, grown_file
        assert grown_out < LOG_BUDGET, grown_out
        assert probe.statuses == {200}
        log = d.log_text()
        assert max(len(line) for line in log.splitlines()) < 1000
        assert "\x1b" not in log
    finally:
        probe.stop()
        legit.stop()
        rc = d.stop()
    assert rc == 0
