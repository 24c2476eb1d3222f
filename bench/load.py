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
