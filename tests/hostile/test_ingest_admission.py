"""Attack 2, connection exhaustion, against the real daemon: connections that
never name themselves cannot lock a DAQ out, unfinished pickles cannot hold
memory before the name frame, and named connections holding unfinished frames
stay within the global buffer budget and give their memory back."""

import threading
import time

import pytest

from tests.daemon.harness import Daemon
from tests.hostile.ingest_attacks import name_frame
from tests.hostile.ingest_peers import MiB, HealthProbe, LegitDaq, connect, csv_bytes, machine_metric, wait_for

ADDRESS_SPACE = 2048 * MiB


def _idle(port, bind):
    try:
        return connect(port, bind=bind)
    except OSError:
        return None


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_idle_connections_never_lock_out_a_daq(tmp_path):
    d = Daemon(tmp_path, {"DAQ": {"NAME_TIMEOUT": 6}}, rlimit_as=ADDRESS_SPACE).start()
    idle = []
    legit = LegitDaq(d.tcp_port, "Legit", bind="127.0.0.1")
    probe = HealthProbe(d)
    try:
        probe.start()
        # 300 silent connections from 10 addresses: more than DAQ.MAX_CONNECTIONS (256).
        for i in range(300):
            idle.append(_idle(d.tcp_port, f"127.0.0.{2 + i % 10}"))
        wait_for(lambda: d.metric("tsrmon_ingest_evicted_unnamed_total") >= 300 - 256, 20,
                 what="the oldest unnamed connections evicted")
        legit.start()
        wait_for(lambda: csv_bytes(d, "Legit") > 0, 5, what="Legit stored while 256 idle connections are open")
        assert legit.connects == 1
        # One source address feeding many machines: 32 named, the 33rd refused.
        named = []
        for i in range(33):
            if i == 32:
                wait_for(lambda: all(machine_metric(d, "connected", f"Press{k}") == 1 for k in (0, 31)), 10,
                         what="32 named connections from one address")
            s = connect(d.tcp_port, bind="127.0.0.20")
            s.sendall(name_frame(f"Press{i}") + b"\x5c\x6f")
            named.append(s)
        wait_for(lambda: d.metric("tsrmon_ingest_refused_per_host_total") == 1, 10, what="per-host refusal")
        # The silent ones run out of time (DAQ.NAME_TIMEOUT), the named ones do not.
        wait_for(lambda: d.metric("tsrmon_ingest_refused_name_timeout_total") >= 200, 20,
                 what="name deadline")
        wait_for(lambda: d.metric("tsrmon_ingest_unnamed_now") == 0, 20, what="no unnamed connection left")
        assert d.metric("tsrmon_ingest_open_connections") == 1 + 32
        probe.stop()
        print(f"300 idle + 33 named: /healthz worst {probe.worst * 1000:.0f} ms; evicted "
              f"{d.metric('tsrmon_ingest_evicted_unnamed_total'):.0f}, timed out "
              f"{d.metric('tsrmon_ingest_refused_name_timeout_total'):.0f}")
        assert probe.statuses == {200} and probe.worst < 2.0
        assert d.metric("tsrmon_ingest_refused_max_connections_total") == 0
        for s in named:
            s.close()
    finally:
        probe.stop()
        legit.stop()
        for s in idle:
            if s is not None:
                s.close()
        rc = d.stop()
    assert rc == 0


def _push(port, head, total, bind=None, hold=None):
    """Send ``head`` then zeros up to ``total`` bytes (an unfinished pickle
    string); with ``hold``, keep the socket open until the event is set."""
    try:
        s = connect(port, bind=bind, timeout=60)
    except OSError:
        return
    try:
        s.sendall(head)
        chunk = b"\0" * 65536
        left = total - len(head)
        while left > 0:
            s.sendall(chunk[:left])
            left -= min(left, len(chunk))
        if hold is not None:
            hold.wait(120)
    except OSError:
        pass  # closed by the daemon: expected
    finally:
        s.close()


def _unfinished(size):
    """A pickle header and the start of a BINUNICODE of ``size`` bytes."""
    return b"\x80\x04X" + size.to_bytes(4, "little")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_unfinished_pickles_before_the_name_hold_nothing(tmp_path):
    d = Daemon(tmp_path, rlimit_as=ADDRESS_SPACE).start()
    legit = LegitDaq(d.tcp_port, "Legit")
    try:
        wait_for(lambda: d.get("/healthz")[0] == 200, 20, what="healthy daemon")
        base = d.rss()
        legit.start()
        wait_for(lambda: csv_bytes(d, "Legit") > 0, 20, what="Legit stored")
        threads = [threading.Thread(target=_push, args=(d.tcp_port, _unfinished(15_000_000), 15_000_000),
                                    kwargs={"bind": f"127.0.0.{2 + i % 5}"}) for i in range(30)]
        for t in threads:
            t.start()
        stored = csv_bytes(d, "Legit")
        wait_for(lambda: csv_bytes(d, "Legit") > stored, 30, what="Legit stored during the attack")
        for t in threads:
            t.join(60)
        wait_for(lambda: d.metric("tsrmon_ingest_refused_unnamed_buffer_total") == 30, 20,
                 what="30 refusals at 64 KiB")
        assert legit.connects == 1
        print(f"30 x 15 MB unfinished pickles before the name: RSS {base / MiB:.0f} -> peak "
              f"{d.peak_rss() / MiB:.0f} MiB")
        assert d.peak_rss() < base + 64 * MiB  # was 1.25 GB
        assert d.metric("tsrmon_ingest_buffered_bytes_now") == 0
    finally:
        legit.stop()
        rc = d.stop()
    assert rc == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_named_unfinished_frames_stay_within_the_budget_and_are_released(tmp_path):
    budget = 96 * MiB
    d = Daemon(tmp_path, {"DAQ": {"MAX_TOTAL_BUFFER_BYTES": budget, "MAX_PAUSE": 2}},
               rlimit_as=ADDRESS_SPACE).start()
    legit = LegitDaq(d.tcp_port, "Legit")
    hold = threading.Event()
    threads = []
    try:
        wait_for(lambda: d.get("/healthz")[0] == 200, 20, what="healthy daemon")
        base = d.rss()
        legit.start()
        wait_for(lambda: csv_bytes(d, "Legit") > 0, 20, what="Legit stored")
        for i in range(20):
            head = name_frame(f"Hog{i}") + b"\x5c\x6f" + _unfinished(15_000_000)
            t = threading.Thread(target=_push, args=(d.tcp_port, head, len(head) + 15_000_000 - 8),
                                 kwargs={"hold": hold})
            t.start()
            threads.append(t)
        wait_for(lambda: d.metric("tsrmon_ingest_budget_paused_total") >= 1, 30, what="reading paused")
        # Over the budget, the paused connection holding most is closed every
        # DAQ.MAX_PAUSE: the rest finish their (never complete) frames in turn.
        wait_for(lambda: d.metric("tsrmon_ingest_refused_buffer_budget_total") >= 3, 30,
                 what="stuck connections closed")
        stored = csv_bytes(d, "Legit")
        wait_for(lambda: csv_bytes(d, "Legit") > stored, 30, what="Legit stored during the attack")
        peak = d.peak_rss()
        hold.set()
        for t in threads:
            t.join(30)
        wait_for(lambda: d.metric("tsrmon_ingest_buffered_bytes_now") < MiB, 20, what="buffers released")
        time.sleep(1.5)
        after = d.rss()
        print(f"20 named x 15 MB unfinished frames, budget {budget / MiB:.0f} MiB: RSS {base / MiB:.0f} -> peak "
              f"{peak / MiB:.0f} -> {after / MiB:.0f} MiB after they closed")
        assert peak < base + budget + 96 * MiB  # 20 x 15 MB = 300 MB without the budget
        assert after < base + 48 * MiB  # memory of closed connections is given back
    finally:
        hold.set()
        legit.stop()
        rc = d.stop()
    assert rc == 0
