"""Attack 1, memo amplification, against the real daemon under an
address-space limit: a legal 13.5 MB pickle whose 64 sensors all reference
one memoized list of 1.5 M floats (96 M samples) is refused before it is
built, while a legitimate DAQ keeps being stored and /healthz keeps answering.
The largest legal frame (64 sensors x 25,600 samples) is accepted under the
same limit, and its cost is measured as /healthz latency."""

import os
import threading
import time

import pytest

from tests.daemon.harness import Daemon
from tests.hostile.ingest_attacks import legit_frame, memo_amplification, name_frame
from tests.hostile.ingest_peers import (MiB, HealthProbe, LegitDaq, connect, csv_bytes, lag_samples_over,
                                        machine_metric, reactor_lag, wait_for)

# Idle, the daemon maps ~650 MB (RSS ~90 MB); the unbounded decoder took
# 2.9 GB RSS (and 4.7 GB in the CSV worker) for this attack.
ADDRESS_SPACE = 2048 * MiB


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_memo_amplification_refused_cheaply(tmp_path):
    d = Daemon(tmp_path, rlimit_as=ADDRESS_SPACE).start()
    legit = LegitDaq(d.tcp_port, "Legit")
    probe = HealthProbe(d)
    try:
        wait_for(lambda: d.get("/healthz")[0] == 200, 20, what="healthy daemon")
        base_rss = d.rss()
        legit.start()
        wait_for(lambda: csv_bytes(d, "Legit") > 0, 30, what="Legit stored")
        probe.start()
        cpu_late_before, _ = lag_samples_over(d, 0.1, cpu=True)
        attack = memo_amplification()
        with connect(d.tcp_port, timeout=60) as s:
            s.sendall(name_frame("Evil") + b"\x5c\x6f")
            for _ in range(5):
                s.sendall(attack + b"\x5c\x6f")
            wait_for(lambda: d.metric("tsrmon_ingest_refused_expansion_total") == 5, 120,
                     what="5 refused expansions")
        stored_before = csv_bytes(d, "Legit")
        sent_before = legit.sent
        wait_for(lambda: csv_bytes(d, "Legit") > stored_before and legit.sent > sent_before + 5, 30,
                 what="Legit still stored after the attack")
        probe.stop()
        legit.stop()
        lag, cpu_lag = reactor_lag(d), reactor_lag(d, cpu=True)
        cpu_late = lag_samples_over(d, 0.1, cpu=True)[0] - cpu_late_before
        print(f"memo attack x5: reactor lag max {lag * 1000:.0f} ms (its CPU share {cpu_lag * 1000:.0f} ms); "
              f"/healthz worst {probe.worst * 1000:.0f} ms over {len(probe.results)} probes; "
              f"RSS {base_rss / MiB:.0f} -> peak {d.peak_rss() / MiB:.0f} MiB; "
              f"CSV worker peak {d.children_peak_rss() / MiB:.0f} MiB; load {os.getloadavg()[0]:.1f}")
        assert probe.statuses == {200}
        assert probe.worst < 2.0  # was a 14.4 s freeze; measured figures printed above
        assert lag < 2.0  # wall clock: other processes on a loaded machine count here
        assert cpu_late == 0  # no turn of the reactor's own work over 100 ms
        assert d.peak_rss() < base_rss + 400 * MiB  # was 2.9 GB
        assert d.children_peak_rss() < 400 * MiB  # was 4.7 GB
        assert machine_metric(d, "samples", "Evil") == 0 and csv_bytes(d, "Evil") == 0
        assert machine_metric(d, "refused_frames", "Evil") == 5
        assert "frame expands to 96000257 samples" in d.log_text()
    finally:
        probe.stop()
        legit.stop()
        rc = d.stop()
    assert rc == 0


# With spectra on (the default), the FFTs run on the spectra room's own
# worker thread; the room builds each new sensor's accumulators on the
# reactor, with Hann windows shared per block size (64 new sensors once cost
# 0.2-0.7 s of the reactor's CPU building 192 windows; now ~25 ms).
WITH_SPECTRA = pytest.param(True, id="with-spectra")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("spectra", [pytest.param(False, id="ingest"), WITH_SPECTRA])
def test_largest_legal_frame_accepted_under_the_limit(tmp_path, spectra):
    d = Daemon(tmp_path, {"SPECTRA": {"ENABLED": spectra}}, rlimit_as=ADDRESS_SPACE).start()
    probe = HealthProbe(d)
    try:
        wait_for(lambda: d.get("/healthz")[0] == 200, 20, what="healthy daemon")
        probe.start()
        cpu_late_before, samples_before = lag_samples_over(d, 0.1, cpu=True)
        cpu_over_250_before = lag_samples_over(d, 0.25, cpu=True)[0]
        frames = [legit_frame(64, 25_600, value=float(i)) for i in range(4)]
        with connect(d.tcp_port, timeout=60) as s:
            s.sendall(name_frame("Big") + b"\x5c\x6f")
            for f in frames:
                s.sendall(f + b"\x5c\x6f")
            wait_for(lambda: machine_metric(d, "samples", "Big") == 4 * 64 * 25_600, 120,
                     what="every sample of the 4 largest frames")
        probe.stop()
        lag, cpu_lag = reactor_lag(d), reactor_lag(d, cpu=True)
        cpu_late, samples = (a - b for a, b in zip(lag_samples_over(d, 0.1, cpu=True),
                                                   (cpu_late_before, samples_before)))
        print(f"4 frames of 64 x 25,600 samples ({len(frames[0]) / MiB:.1f} MiB each): reactor lag max "
              f"{lag * 1000:.0f} ms (its CPU share {cpu_lag * 1000:.0f} ms, {cpu_late:.0f} of {samples:.0f} "
              f"samples over 100 ms); /healthz worst {probe.worst * 1000:.0f} ms over {len(probe.results)} probes; "
              f"peak RSS {d.peak_rss() / MiB:.0f} MiB; load {os.getloadavg()[0]:.1f}")
        assert probe.statuses == {200}
        assert probe.worst < 2.0  # measured figures printed above (docs/security.md)
        assert lag < 2.0  # wall clock: other processes on a loaded machine count here
        # Issue 15: no frame within the caps lags the reactor more than 100 ms
        # by its own work (the first frame took 0.5-1 s before plan decoding).
        # A frame costs ~80 ms of reactor CPU here (py-spy at load 6: ~60 ms of
        # it the statistics' reduce of its 1.6 M samples, ~12 ms the decode),
        # and CPU time itself grows on a 2-core machine shared by 6-8 busy
        # processes: one sample in (100 ms, 250 ms] is let through, none above.
        over_250 = lag_samples_over(d, 0.25, cpu=True)[0] - cpu_over_250_before
        assert cpu_late <= 1 and over_250 == 0
        assert d.metric("tsrmon_ingest_refused_frames_total") == 0
        wait_for(lambda: csv_bytes(d, "Big") > 0, 30, what="Big stored")
    finally:
        probe.stop()
        rc = d.stop()
    assert rc == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_opcode_flood_is_walked_in_turns(tmp_path):
    """Pickles of one-byte opcodes (legal, within every cap) cost the walker
    ~2-5 us each in Python: 0.1-0.3 s per 64 KiB read, times every
    attacker's read in one reactor iteration. Walked in turns of at most
    WALK_BUDGET opcodes shared by the walking connections, they cannot hold
    the reactor. The frames never end (a slow frame is the attack), so what
    is measured is the walking, not the end of a frame."""
    d = Daemon(tmp_path, {"SPECTRA": {"ENABLED": False}}, rlimit_as=ADDRESS_SPACE).start()
    legit = LegitDaq(d.tcp_port, "Legit")
    probe = HealthProbe(d)
    socks = []
    try:
        wait_for(lambda: d.get("/healthz")[0] == 200, 20, what="healthy daemon")
        legit.start()
        wait_for(lambda: csv_bytes(d, "Legit") > 0, 30, what="Legit stored")
        time.sleep(1.0)
        probe.start()
        late_before, samples_before = lag_samples_over(d, 0.1)
        cpu_late_before, _ = lag_samples_over(d, 0.1, cpu=True)
        bytes_before = d.metric("tsrmon_ingest_bytes_total")
        flood = b"\x80\x04(" + b"N" * 1_900_000  # 1.9 M opcodes, no end
        for i in range(8):
            s = connect(d.tcp_port, bind=f"127.0.0.{2 + i}", timeout=120)
            s.sendall(name_frame(f"Flood{i}") + b"\x5c\x6f")
            socks.append(s)
        senders = [threading.Thread(target=s.sendall, args=(flood,)) for s in socks]
        for t in senders:
            t.start()
        for t in senders:
            t.join(120)
        wait_for(lambda: d.metric("tsrmon_ingest_bytes_total") - bytes_before >= 8 * len(flood), 120,
                 what="every byte read")
        time.sleep(10)  # walking in turns goes on after the last read
        stored = csv_bytes(d, "Legit")
        wait_for(lambda: csv_bytes(d, "Legit") > stored, 30, what="Legit still stored")
        probe.stop()
        legit.stop()
        lag = reactor_lag(d)
        late, samples = lag_samples_over(d, 0.1)
        late, samples = late - late_before, samples - samples_before
        cpu_late = lag_samples_over(d, 0.1, cpu=True)[0] - cpu_late_before
        print(f"8 connections x 1.9 M opcodes: reactor lag max {lag * 1000:.0f} ms, {late:.0f} of {samples:.0f} "
              f"lag samples over 100 ms ({cpu_late:.0f} by the reactor's own CPU share, max "
              f"{reactor_lag(d, cpu=True) * 1000:.0f} ms); /healthz worst {probe.worst * 1000:.0f} ms over "
              f"{len(probe.results)} probes; load {os.getloadavg()[0]:.1f}")
        assert probe.statuses == {200}
        # Each read walked at once: 0.2-0.3 s of the reactor's own work, many samples late.
        assert cpu_late == 0
        assert lag < 2.0 and probe.worst < 2.0  # wall clock: a loaded machine counts here
    finally:
        probe.stop()
        legit.stop()
        for s in socks:
            s.close()
        rc = d.stop()
    assert rc == 0
