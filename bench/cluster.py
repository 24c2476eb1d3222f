"""Benchmark: tsrmon nodes on one PostgreSQL and one Redis (issue 16).

    .venv/bin/python bench/cluster.py [--quick]

Needs PostgreSQL (``TSRMON_BENCH_PG_DSN``, else ``TSRMON_TEST_PG_DSN``, else
the local server as user postgres; a database of its own, dropped at the
end) and Redis (127.0.0.1:6379, a key prefix of its own).  Real daemon
processes (``twistd -n tsrmon``, the harness of tests/daemon) with
``DATABASE.BACKEND: postgresql`` and ``CLUSTER.REDIS``, their default
configuration otherwise (raw CSV on).

Rows:

* ``cluster-ingest-1`` / ``cluster-ingest-2``: frames/s at the deployed
  shape (10 DAQs, 2 sensors × 30 floats, pickle frames from two feeder
  processes) accepted by one node, then by two nodes (5 DAQs each) at
  once: aggregate frames/s until the last frame was accepted, zero loss
  checked in the store after SIGTERM (stored vib1 samples == sent);
  ``pickle.loads`` of the same frames in this process is the yardstick
  (the ratio is the figure to compare across machines).  On two cores the
  second node shows the second core put to work, not scaling;
* ``cluster-live-latency``: a FaultDetect written by a DAQ to node A until
  its ``anomaly`` event reaches a python-socketio client on node B (through
  A's hub, the Redis bus, B's live layer), p50/p99, with the same figure
  for a client on node A beside it.
"""

import argparse
import os
import pickle
import socket
import sys
import threading
import time
import uuid

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.load import data_frames, fault_frame, frame, run_feeders  # noqa: E402
from bench.proc import children, cpu_seconds  # noqa: E402
from tests.daemon.harness import Daemon  # noqa: E402

ADMIN_DSN = os.environ.get("TSRMON_BENCH_PG_DSN") or os.environ.get(
    "TSRMON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = ("127.0.0.1", 6379)
DAQS = 10


def pct(values, p):
    values = sorted(values)
    return values[max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))]


def fresh_database():
    import psycopg

    name = f"tsrmon_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = psycopg.conninfo.conninfo_to_dict(ADMIN_DSN)
    params["dbname"] = name

    def drop():
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return psycopg.conninfo.make_conninfo(**params), drop


def node(workdir, name, dsn, prefix):
    return Daemon(workdir, overrides={
        "DATABASE": {"BACKEND": "postgresql", "DSN": dsn},
        "DAQ": {"MAX_CONNECTIONS_PER_HOST": 64},
        "CLUSTER": {"REDIS": f"redis://{REDIS[0]}:{REDIS[1]}/0", "NODE": name, "PREFIX": prefix},
    })


def local_frames(d):
    """Frames of the machines fed through ``d`` (its /machines lists the others without counts)."""
    body = requests.get(d.url("/machines"), timeout=10).json()
    return sum(int(m.get("frames", 0)) for m in body["machines"])


def stored_vib1(dsn):
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT coalesce(sum(count), 0) FROM stat_hour WHERE sensor = 'vib1' AND machine <> 'lat'").fetchone()[0]


def yardstick(frames, seconds=1.0):
    """``pickle.loads`` of the frames (terminator cut), frames/s, best of three."""
    bodies = [f[:-2] for f in frames]
    best = 0.0
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            for b in bodies:
                pickle.loads(b)
            n += len(bodies)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def node_cpu(nodes):
    """CPU seconds so far of the nodes and their raw CSV worker processes."""
    total = 0.0
    for d in nodes:
        for pid in [d.proc.pid, *children(d.proc.pid)]:
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
    return total


def ingest(nodes, total, frames):
    """Feed ``total`` frames over DAQS machines spread over ``nodes`` (one
    feeder process per node, two for a single node); (expected, accepted,
    seconds, node CPU seconds) of this burst."""
    per_machine = total // DAQS
    distinct = min(per_machine, len(frames))
    repeat = max(1, per_machine // distinct)
    expected = repeat * distinct * DAQS
    machines = [f"c{i:02d}" for i in range(DAQS)]
    groups = [machines[i::len(nodes)] for i in range(len(nodes))]
    base = sum(local_frames(d) for d in nodes)  # counts since each node started
    cpu0 = node_cpu(nodes)
    runs = []
    for d, group in zip(nodes, groups):
        runs.append(run_feeders("127.0.0.1", d.tcp_port, group, frames[:distinct], repeat,
                                processes=2 if len(nodes) == 1 else 1))
    started = min(r[0] for r in runs)
    deadline = started + 600
    got = 0
    while time.perf_counter() < deadline:
        got = sum(local_frames(d) for d in nodes) - base
        if got >= expected:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    cpu = node_cpu(nodes) - cpu0
    for _, procs, _ in runs:
        for p in procs:
            p.join(30)
    return expected, got, elapsed, cpu


def latency(a, b, n):
    """Seconds from a FaultDetect written to node A until its ``anomaly``
    event reaches a Socket.IO client, on node B and on node A."""
    import socketio

    sock = socket.create_connection(("127.0.0.1", a.tcp_port))
    sock.sendall(frame("name", "lat") + data_frames(2, 30, 1)[0])
    arrived = {"a": {}, "b": {}}
    clients = []
    for key, d in (("a", a), ("b", b)):
        sio = socketio.Client(reconnection=False)

        def on(data, key=key):
            arrived[key][int(data["score"])] = time.perf_counter()
        sio.on("anomaly", on, namespace="/sio/lat")
        deadline = time.monotonic() + 30
        while True:  # node B knows the machine once A's first events came over the bus
            try:
                sio.connect(f"http://127.0.0.1:{d.http_port}", namespaces=["/sio/lat"], transports=["websocket"],
                            wait_timeout=5)
                break
            except socketio.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                sock.sendall(data_frames(2, 30, 1)[0])
                time.sleep(0.3)
        clients.append(sio)
    sent = {}
    try:
        for k in range(n):
            sent[k] = time.perf_counter()
            sock.sendall(fault_frame(k, 1e9))  # under threshold: shown live, never pushed
            time.sleep(0.01)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and min(len(v) for v in arrived.values()) < n:
            time.sleep(0.05)
    finally:
        for sio in clients:
            sio.disconnect()
        sock.close()
    out = {}
    for key, got in arrived.items():
        lat = [got[k] - sent[k] for k in sent if k in got]
        out[key] = (pct(lat, 50), pct(lat, 99), n - len(lat))
    return out


def measure(quick=False, log=print):
    import tempfile

    from tests.cluster.conftest import redis_up, resp

    if not redis_up():
        raise RuntimeError("Redis not reachable at 127.0.0.1:6379")
    total = 20_000 if quick else 200_000
    frames = data_frames(2, 30, 50)
    out = {"yardstick": yardstick(frames), "total": total}
    dsn, drop = fresh_database()
    prefix = "tsrmon-bench-" + uuid.uuid4().hex[:8]
    try:
        with tempfile.TemporaryDirectory(prefix="tsrmon-bench-cluster-") as tmp:
            for count in (1, 2):
                nodes = [node(os.path.join(tmp, f"{count}-{i}"), f"n{i}", dsn, prefix) for i in range(count)]
                for d in nodes:
                    d.start()
                bursts = []
                try:
                    before = stored_vib1(dsn)
                    for _ in range(1 if quick else 3):  # the full run reports the median of three bursts
                        bursts.append(ingest(nodes, total, frames))
                        log(f"{count} node(s): {bursts[-1][1]} of {bursts[-1][0]} frames in {bursts[-1][2]:.1f} s")
                    if count == 2:
                        out["latency"] = latency(nodes[0], nodes[1], 200 if quick else 1000)
                finally:
                    rcs = [d.stop(timeout=120) for d in nodes]
                stored = stored_vib1(dsn) - before  # after every node's SIGTERM flush
                rates = sorted(got / elapsed for _, got, elapsed, _ in bursts)
                out[count] = {"expected": sum(b[0] for b in bursts), "accepted": sum(b[1] for b in bursts),
                              "frames_per_s": rates[len(rates) // 2], "runs": rates,
                              # frames per CPU-second of the nodes: what sizes a node, whatever else runs
                              "per_cpu_s": sum(b[1] for b in bursts) / sum(b[3] for b in bursts),
                              "lost_samples": sum(b[0] for b in bursts) * 30 - stored, "exit": rcs}
    finally:
        drop()
        keys = resp("KEYS", prefix + ":*").split(b"\r\n")[2::2]
        if [k for k in keys if k]:
            resp("DEL", *[k for k in keys if k])
    return out


def rows_of(r):
    ms = 1e3
    rows = []
    for count in (1, 2):
        x = r[count]
        rows.append({
            "row": f"cluster-ingest-{count}",
            "figure": f"ingest 2×30 floats, {DAQS} DAQs on {count} node(s), PostgreSQL + Redis: aggregate frames/s, zero loss",
            "value": round(x["frames_per_s"]), "target": "(no bar)", "pass": x["lost_samples"] == 0,
            "detail": f"{x['frames_per_s'] / r['yardstick']:.2f} × pickle.loads ({r['yardstick']:,.0f} frames/s "
                      f"in one process); median of " + " / ".join(f"{v:,.0f}" for v in x["runs"])
                      + f"; {x['per_cpu_s']:,.0f} frames per node CPU-second"
                      + f"; lost {x['lost_samples']} of {x['expected'] * 30:,} samples"})
    (b50, b99, b_lost), (a50, a99, _) = r["latency"]["b"], r["latency"]["a"]
    rows.append({
        "row": "cluster-live-latency", "figure": "FaultDetect on node A → anomaly at a Socket.IO client on node B: p50 / p99",
        "value": f"{b50 * ms:.1f} / {b99 * ms:.1f} ms", "target": "(no bar)", "pass": b_lost == 0,
        "detail": f"client on node A itself: {a50 * ms:.1f} / {a99 * ms:.1f} ms; {b_lost} events missing on B"})
    return rows


def bench_rows(quick=False, workdir=None):
    return rows_of(measure(quick=quick, log=lambda *_: None))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    rows = rows_of(measure(quick=args.quick))
    print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| row | figure | value | target | pass | detail |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        value = f"{row['value']:,}" if isinstance(row["value"], (int, float)) else row["value"]
        print(f"| {row['row']} | {row['figure']} | {value} | {row['target']} | "
              f"{'pass' if row['pass'] else 'miss'} | {row['detail']} |")


if __name__ == "__main__":
    main()
