"""Memory row: daemon RSS over a long ingest at 100 DAQs.

    .venv/bin/python -m bench.memory [--quick] [--seconds N]

100 DAQs × 2 sensors × 30 floats at 20 Hz each (2,000 frames/s, 40 times
the deployed rate) from one feeder process, default configuration (raw CSV
on) except DATABASE.FLUSH 1 s (the harness default) and the built-in
``sensor-flatline`` alarm window: 600 s by default, here as long as the
warm-up minus a margin.  That rule keeps one bucket per 2 s of its window
per sensor (about 60 KiB per sensor once full, 12 MB for these 200
sensors), so with the default window the first 10 minutes are bounded
fill, not a leak, and would hide one (``bench/memtrace.py`` shows it; the
soak measures the default configuration past that point).

RSS of the daemon process is sampled every second; growth is the median of
the last 10 samples against the median of the first 10 after the warm-up.
Zero loss is checked as in the soak (stored sums after a SIGTERM flush).
"""

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.load import data_frames  # noqa: E402
from bench.soak import run  # noqa: E402

RATE = 20


def measure(workdir, seconds, warmup_s, flatline_window):
    groups = [([f"mem{i:03d}" for i in range(100)], data_frames(2, 30, 20), RATE, 0.0, 2, 30)]
    # All 100 DAQs dial from 127.0.0.1: lift the per-source cap (32) as a plant with
    # one PC per machine would never need to.
    overrides = {"ALARM": {"RULES": [{"builtin": "sensor-flatline", "window": flatline_window}]},
                 "DAQ": {"MAX_CONNECTIONS_PER_HOST": 128}}
    return run(workdir, groups, seconds, warmup_s, overrides=overrides, log=lambda s: None)


def bench_rows(quick=False, workdir=None, seconds=None):
    seconds = seconds or (18 if quick else 200)
    warmup = 10 if quick else 75
    flatline = warmup - (2 if quick else 15)
    own = None
    if workdir is None:
        own = tempfile.TemporaryDirectory(prefix="tsrmon-memory-")
        workdir = own.name
    try:
        r = measure(os.path.join(workdir, "memory"), seconds, warmup, flatline)
    except Exception as e:  # reported as a row; the others still run
        return [{"row": "memory", "figure": "RSS growth at 100 DAQs", "value": "error", "target": "< 5 %",
                 "pass": False, "detail": repr(e)[:200]}]
    finally:
        if own is not None:
            own.cleanup()
    growth = r["rss_growth_pct"]
    lossless = r["checks"]["samples sent = samples counted"]
    raw = {k: v for k, v in r.items() if k != "rss_samples"}
    return [{
        "row": "memory",
        "figure": (f"RSS growth, 100 DAQs at {RATE} Hz for {seconds} s (after {warmup} s warm-up, "
                   f"flat-line window {flatline} s)"),
        "value": "error" if growth is None else f"{growth:+.2f} %", "target": "< 5 %",
        "pass": growth is not None and growth < 5.0 and lossless and not r["error_line_count"],
        "detail": (f"{r['rss_baseline_mb']:.1f} → {r['rss_final_mb']:.1f} MB (max {r['rss_max_mb']:.1f}, "
                   f"with CSV writer {r['tree_rss_mb']:.1f}); {r['frames_sent']:,} frames, "
                   f"{'zero loss' if lossless else 'LOSS: ' + str(r['mismatched'])[:80]}, "
                   f"{r['error_line_count']} error lines, CPU {r['server_cpu_pct']:.0f}%"),
        "raw": raw}]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=int)
    args = ap.parse_args(argv)
    for r in bench_rows(args.quick, seconds=args.seconds):
        print(f"{r['row']}: {r['value']} (target {r['target']}, {'pass' if r['pass'] else 'miss'}) {r['detail']}")


if __name__ == "__main__":
    main()
