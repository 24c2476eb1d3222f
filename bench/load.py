"""Load generators that run in their own processes (the daemon's core stays its own).

Frames are pre-encoded once with ``pickle.dumps`` exactly as the deployed DAQ
does (protocol 4 + the ``5C 6F`` terminator), then written with ``sendall``
in large slices, so the generator is never the bottleneck.
"""

import math
import multiprocessing
import pickle
import random
import socket
import time

TERMINATOR = b"\x5c\x6f"


def frame(event, data):
    return pickle.dumps((event, data), protocol=4) + TERMINATOR


def data_frames(n_sensors, n_floats, count, seed=1):
    rng = random.Random(seed)
    out = []
    for k in range(count):
        sensors = {}
        for s in range(n_sensors):
            sensors[f"vib{s + 1}"] = {
                "type": "VIB",
                "data": [math.sin(0.01 * (k * n_floats + i)) + rng.gauss(0, 0.1) for i in range(n_floats)],
            }
        out.append(frame("DataUpdate", sensors))
    return out


def _feed(host, port, machines, payload_frames, repeat, barrier, out):
    socks = []
    for name in machines:
        s = socket.create_connection((host, port))
        s.sendall(frame("name", name))
        socks.append(s)
    blob = b"".join(payload_frames)
    barrier.wait()
    t0 = time.perf_counter()
    # Round-robin so every connection progresses together.
    for _ in range(repeat):
        for s in socks:
            s.sendall(blob)
    out.put(time.perf_counter() - t0)
    time.sleep(0.5)
    for s in socks:
        s.close()


def run_feeders(host, port, machines, payload_frames, repeat, processes=1):
    """Start feeders; return (start barrier release time, list of send durations)."""
    ctx = multiprocessing.get_context("spawn")
    groups = [machines[i::processes] for i in range(processes)]
    groups = [g for g in groups if g]
    barrier = ctx.Barrier(len(groups) + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=_feed, args=(host, port, g, payload_frames, repeat, barrier, out))
             for g in groups]
    for p in procs:
        p.start()
    barrier.wait()
    started = time.perf_counter()
    return started, procs, out


def fault_frame(score, threshold):
    return frame("FaultDetect", {"score": score, "threshold": threshold})


def _paced(host, port, machines, payload_frames, rate, stop, out, fault_every=0.0, phase=0.0):
    """Send one frame per machine every 1/rate s until ``stop`` is set.

    Rounds are on a fixed schedule at ``(k + phase) / rate`` in epoch time
    (k an integer), so with an integer rate and phase 0 a round starts right
    at every whole second (a late round is not made up in a burst);
    the process stops after a whole round and reports the frames it wrote to
    the kernel: ``(data frames per machine, fault frames per machine)``.
    """
    socks = []
    for name in machines:
        s = socket.create_connection((host, port))
        s.sendall(frame("name", name))
        socks.append(s)
    fault = fault_frame(2, 5)  # under threshold: recorded, never notified
    rounds = faults = 0
    n = len(payload_frames)
    now = time.time()
    next_round = (math.ceil(now * rate - phase) + phase) / rate
    next_fault = now + fault_every if fault_every else float("inf")
    rounds_base = round(next_round * rate - phase)  # integer round numbers: no drift from float sums
    out.put(("ready", len(socks)))
    time.sleep(max(0.0, next_round - time.time()))
    while not stop.is_set():
        data = payload_frames[rounds % n]
        for s in socks:
            s.sendall(data)
        rounds += 1
        now = time.time()
        if now >= next_fault:
            for s in socks:
                s.sendall(fault)
            faults += 1
            next_fault += fault_every
        next_round = (rounds_base + rounds + phase) / rate
        delay = next_round - now
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:  # fell behind by a second: do not burst to catch up
            rounds_base = math.ceil(now * rate - phase) - rounds
    for s in socks:
        s.close()
    out.put(("done", rounds, faults))


class PacedFeeders:
    """Groups of DAQs at a steady rate in their own processes.

    ``groups``: list of ``(machines, payload_frames, rate, fault_every)``; each
    group is split over ``processes_per_group`` processes; ``phase`` (a
    fraction of 1/rate) places the rounds after the whole multiples.  ``stop()`` returns
    the data frames written per group (each machine of a group got that many).
    """

    def __init__(self, host, port, groups, processes_per_group=1, phase=0.0):
        ctx = multiprocessing.get_context("spawn")
        self.stop_event = ctx.Event()
        self.parts = []  # (group index, machines, process, queue)
        for gi, (machines, payload_frames, rate, fault_every) in enumerate(groups):
            for k in range(processes_per_group):
                part = machines[k::processes_per_group]
                if not part:
                    continue
                q = ctx.Queue()
                p = ctx.Process(target=_paced, daemon=True,
                                args=(host, port, part, payload_frames, rate, self.stop_event, q, fault_every,
                                      phase))
                self.parts.append((gi, part, p, q))
        self.groups = groups

    def start(self, timeout=60):
        for _, _, p, _ in self.parts:
            p.start()
        for _, _, p, q in self.parts:
            msg = q.get(timeout=timeout)
            assert msg[0] == "ready", msg
        return self

    def stop(self, timeout=60):
        """Stop every feeder; ``[(machines, frames per machine, faults per machine)]`` per part."""
        self.stop_event.set()
        out = []
        for gi, part, p, q in self.parts:
            msg = q.get(timeout=timeout)
            p.join(10)
            out.append((gi, part, msg[1], msg[2]))
        return out
