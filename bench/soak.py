"""Soak: the daemon under a plant-like load for a while, then the books are checked.

    .venv/bin/python -m bench.soak [--minutes 10] [--keep DIR]

Starts the daemon (its default configuration: raw CSV on, DATABASE.FLUSH
10 s, LIVE.INTERVAL 60 s) and, from other processes, with pre-encoded frames:

- 20 DAQs × 2 sensors × 30 floats at 1 Hz (the deployed shape and rate),
  each with a FaultDetect (under threshold) every 10 s;
- 4 DAQs × 2 sensors × 30 floats at 50 Hz;
- 1 DAQ × 4 sensors × 2,560 floats at 2 Hz (a tenth of full rate);
- 20 lean Socket.IO clients (10 subscribed to the per-second stream of one
  machine, 10 on another taking ``update`` only), plus a REST poller.

Checks, each printed; exit status 1 if any fails:

- samples sent = samples counted: after the feeders stop, the daemon's
  ``/machines`` frame counts reach the frames written, then SIGTERM (exit 0)
  and ``SUM(count)`` over every ``<sensor>_hour_avg`` row with ``t0`` set,
  per machine, equals what was sent;
- no ``#error]``, ``#critical]`` or ``Traceback`` line in the daemon's log
  (debug lines aside: autobahn reports each clean close at debug level with
  a frameless "Traceback" of ConnectionDone);
- RSS growth < 5 %: the median RSS of the last 10 samples against the median
  of the first 10 after the warm-up (``--warmup``; default a fifth of the run,
  at most 2 minutes).  What fills during the first minutes is bounded state,
  not a leak: the built-in flat-line alarm rule keeps a 600 s window per
  sensor (about 60 KiB each once full, ``bench/memtrace.py`` shows it), the
  live cache LIVE.CACHE updates per sensor;
- the Socket.IO clients stayed connected and got their events.
"""

import argparse
import glob
import json
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.live import ClientProcesses  # noqa: E402
from bench.load import PacedFeeders, data_frames  # noqa: E402
from bench.proc import cpu_seconds, rss_mb, tree_rss_mb  # noqa: E402
from tests.daemon.harness import Daemon  # noqa: E402

ERROR_LINE = re.compile(r"#error\]|#critical\]|Traceback")
# autobahn logs every clean close at debug level with "Traceback (failure with
# no frames): ConnectionDone"; a debug line is not an error.
DEBUG_LINE = re.compile(r"#debug\]")


def plant_groups():
    """``(machines, frames, rate, fault_every, sensors, floats)`` of the soak's DAQs."""
    return [
        ([f"daq{i:03d}" for i in range(20)], data_frames(2, 30, 20), 1, 10.0, 2, 30),
        ([f"fast{i:02d}" for i in range(4)], data_frames(2, 30, 20, seed=2), 50, 0.0, 2, 30),
        (["chunk00"], data_frames(4, 2560, 4, seed=3), 2, 0.0, 4, 2560),
    ]


def stored_samples_by_machine(db_folder):
    """``{machine: SUM(count)}`` over every ``*_hour_avg`` table (rows with t0)."""
    out = {}
    for path in glob.glob(os.path.join(db_folder, "*.db")):
        machine = os.path.basename(path)[:-3]
        con = sqlite3.connect(path)
        try:
            tables = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%\\_hour\\_avg' ESCAPE '\\'")]
            total = 0
            for t in tables:
                q = t.replace('"', '""')
                total += con.execute(f'SELECT SUM(count) FROM "{q}" WHERE t0 IS NOT NULL').fetchone()[0] or 0
            out[machine] = total
        except sqlite3.Error as e:
            out[machine] = f"error: {e}"
        finally:
            con.close()
    return out


def error_lines(workdir):
    """Error lines of the daemon: its stdout and the files under its log folder."""
    bad = []
    paths = [os.path.join(workdir, "daemon.out")] + glob.glob(os.path.join(workdir, "log", "*.log"))
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if ERROR_LINE.search(line) and not DEBUG_LINE.search(line):
                        bad.append(f"{os.path.basename(path)}: {line.rstrip()[:300]}")
        except OSError:
            pass
    return bad


def accepted_by_machine(d):
    body = requests.get(d.url("/machines"), timeout=10).json()
    return {m["machine"]: int(m.get("samples", 0)) for m in body.get("machines", [])}


def rss_growth(samples, warmup_s, n=10):
    """``(baseline MB, final MB, growth %)`` from ``[(t, rss)]`` (t from the start)."""
    after = [r for t, r in samples if t >= warmup_s]
    if len(after) < 2 * n:
        n = max(1, len(after) // 3)
    if not after:
        return None, None, None
    base = statistics.median(after[:n])
    final = statistics.median(after[-n:])
    return base, final, 100.0 * (final - base) / base


def run(workdir, groups, seconds, warmup_s, clients=(), overrides=None, rest_every=5.0, log=print,
        interval=60.0):
    """Run the daemon under ``groups`` of paced DAQs for ``seconds``; returns a result dict.

    ``clients``: ``[(machine, count, subscribe)]`` Socket.IO client processes.
    """
    d = Daemon(workdir, overrides=overrides).start()
    feeders = None
    client_sets = []
    result = {"ok": False}
    try:
        feeders = PacedFeeders("127.0.0.1", d.tcp_port, [g[:4] for g in groups]).start()
        time.sleep(1.0)  # the machines exist once their name frames are in
        for machine, count, subscribe in clients:
            sensors = next(g[4] for g in groups if machine in g[0])
            sub = [f"vib{i + 1}" for i in range(sensors)] if subscribe else ()
            cp = ClientProcesses(d.http_port, "/sio/" + machine, count, 1, subscribe=sub, interval=interval,
                                 frame_after=0.0)
            cp.start()
            client_sets.append((machine, count, cp))
        started = time.time()
        end = started + seconds
        for _, _, cp in client_sets:
            cp.window(started, end)
        cpu0 = cpu_seconds(d.proc.pid)
        samples = []
        rest_errors = 0
        next_rest = started
        next_report = started + 60
        while True:
            now = time.time()
            if now >= end:
                break
            samples.append((now - started, rss_mb(d.proc.pid)))
            if now >= next_rest:
                next_rest += rest_every
                for path in ("/machines", "/healthz", "/metrics"):
                    try:
                        if requests.get(d.url(path), timeout=10).status_code != 200:
                            rest_errors += 1
                    except requests.RequestException:
                        rest_errors += 1
            if now >= next_report:
                next_report += 60
                log(f"  {now - started:5.0f} s: RSS {samples[-1][1]:.1f} MB, "
                    f"CPU {100 * (cpu_seconds(d.proc.pid) - cpu0) / (now - started):.0f}%")
            time.sleep(max(0.0, min(1.0, end - time.time())))
        cpu = cpu_seconds(d.proc.pid) - cpu0
        tree = tree_rss_mb(d.proc.pid)
        parts = feeders.stop()
        feeders = None
        sent = {}  # machine -> (data frames, samples)
        faults = 0
        for gi, machines, frames, nfaults in parts:
            _, _, _, _, sensors, floats = groups[gi]
            for m in machines:
                sent[m] = (frames, frames * sensors * floats)
            faults += nfaults * len(machines)
        # Every frame written reached the kernel; wait until the daemon has taken them all.
        deadline = time.time() + 60
        accepted = {}
        while time.time() < deadline:
            accepted = accepted_by_machine(d)
            if all(accepted.get(m, 0) >= n for m, (_, n) in sent.items()):
                break
            time.sleep(0.2)
        live = []
        for machine, count, cp in client_sets:
            counts, upd, _stamp, sec, closed = cp.collect()
            live.append({"machine": machine, "clients": count, "counts": counts, "closed": closed,
                         "update_n": len(upd), "second_n": len(sec),
                         "second_p99_ms": sec[int(0.99 * (len(sec) - 1))] if sec else None})
        client_sets = []
    finally:
        for _, _, cp in client_sets:
            cp.kill()
        if feeders is not None:
            try:
                feeders.stop()
            except Exception:
                pass
        rc = d.stop(timeout=120)
    stored = stored_samples_by_machine(os.path.join(workdir, "db"))
    mismatched = {m: {"sent": s, "stored": stored.get(m)} for m, (_, s) in sent.items() if stored.get(m) != s}
    base, final, growth = rss_growth(samples, warmup_s)
    errors = error_lines(workdir)
    samples_sent = sum(s for _, s in sent.values())
    samples_stored = sum(v for v in stored.values() if isinstance(v, int))
    live_ok = all(x["closed"] == 0 and x["counts"].get("update", 0) + x["counts"].get("second", 0) > 0
                  for x in live)
    result = {
        "seconds": seconds, "warmup_s": warmup_s, "exit": rc,
        "daqs": len(sent), "frames_sent": sum(f for f, _ in sent.values()), "faults_sent": faults,
        "samples_sent": samples_sent, "samples_stored": samples_stored,
        "samples_per_s": samples_sent / seconds, "mismatched": mismatched,
        "accepted_samples": sum(accepted.values()),
        "rss_baseline_mb": base, "rss_final_mb": final, "rss_growth_pct": growth,
        "rss_max_mb": max(r for _, r in samples) if samples else None, "tree_rss_mb": tree,
        "server_cpu_pct": 100 * cpu / seconds, "rest_errors": rest_errors,
        "error_lines": errors[:20], "error_line_count": len(errors), "live": live,
        "rss_samples": [(round(t, 1), round(r, 2)) for t, r in samples[::max(1, len(samples) // 120)]],
    }
    result["checks"] = {
        "samples sent = samples counted": not mismatched and samples_sent == samples_stored,
        "daemon exit 0 on SIGTERM": rc == 0,
        "no error lines in the log": not errors,
        "RSS growth < 5 % after warm-up": growth is not None and growth < 5.0,
        "REST answered": rest_errors == 0,
        "live clients served": live_ok,
    }
    result["ok"] = all(result["checks"].values())
    return result


def _ms(v):
    return "n/a" if v is None else f"{v:.1f} ms"


def report(r, out=print):
    out(f"soak: {r['seconds'] / 60:.1f} min, {r['daqs']} DAQs, {r['frames_sent']:,} frames, "
        f"{r['faults_sent']:,} FaultDetects, {r['samples_sent']:,} samples ({r['samples_per_s']:,.0f}/s)")
    out(f"  samples stored {r['samples_stored']:,} (sent {r['samples_sent']:,}); mismatched machines: "
        f"{r['mismatched'] or 'none'}")
    out(f"  RSS baseline {r['rss_baseline_mb']:.1f} MB after {r['warmup_s']:.0f} s warm-up, final "
        f"{r['rss_final_mb']:.1f} MB, growth {r['rss_growth_pct']:+.2f} %, max {r['rss_max_mb']:.1f} MB "
        f"(with the CSV writer process {r['tree_rss_mb']:.1f} MB); server CPU {r['server_cpu_pct']:.0f}%")
    for x in r["live"]:
        out(f"  live /sio/{x['machine']}: {x['clients']} clients, {x['counts'].get('update', 0)} updates, "
            f"{x['counts'].get('second', 0)} seconds, {x['closed']} closed, second p99 "
            f"{_ms(x['second_p99_ms'])}")
    out(f"  error lines: {r['error_line_count']}; REST errors: {r['rest_errors']}; exit {r['exit']}")
    for line in r["error_lines"]:
        out(f"    {line}")
    for name, ok in r["checks"].items():
        out(f"  [{'ok' if ok else 'FAIL'}] {name}")
    out(f"soak {'passed' if r['ok'] else 'FAILED'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=None,
                    help="minutes before the RSS baseline (default: a fifth of the run, at most 2); "
                         "the built-in flat-line alarm windows (600 s) fill during the first 10 minutes")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    seconds = args.minutes * 60
    warmup = args.warmup * 60 if args.warmup is not None else min(120.0, seconds / 5)
    clients = [("daq000", 10, True), ("fast00", 10, False)]
    overrides = {"DATABASE": {"FLUSH": 10}}

    def go(workdir):
        print(f"soak: {args.minutes} min in {workdir}", flush=True)
        return run(workdir, plant_groups(), seconds, warmup, clients=clients, overrides=overrides,
                   log=lambda s: print(s, flush=True))

    if args.keep:
        r = go(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="tsrmon-soak-") as tmp:
            r = go(tmp)
    report(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
