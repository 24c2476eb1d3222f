"""Analytics benchmark: the per-sample cost of issue 17's computations.

    .venv/bin/python -m bench.analytics [--quick] [--seconds S]

Standalone (no daemon): feeds ``--seconds`` of a 25,600 samples/s vibration
signal, in the daemon's 1-s chunks of 25,600 float64, to each computation and
prints one markdown table of samples/s.  Every row is compared with a
yardstick measured in the same run on the same chunks: ``numpy.sum`` of each
chunk (one memory pass, the cheapest thing any reducer can do).  Rows are
timed interleaved (one pass of every row per repeat, best of the repeats) so
that load from other processes hits them alike.  Numbers are printed, never
asserted.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.__main__ import machine_info as bench_machine_info  # noqa: E402
from tsrmon.analytics import meta as M  # noqa: E402
from tsrmon.analytics.envelope import EnvelopeSpectrum  # noqa: E402
from tsrmon.analytics.features import features  # noqa: E402
from tsrmon.analytics.moments import Moments, reduce_chunk  # noqa: E402
from tsrmon.analytics.signals import BEARING_6205, FaultSignal  # noqa: E402
from tsrmon.analytics.spectrum import MinuteSpectra, WelchSpectrum, lines_of  # noqa: E402
from tsrmon.stats.sums import PartialSums, SumsReducer  # noqa: E402

RATE = 25600


def machine_info():
    return f"{bench_machine_info()}, numpy {np.__version__}"


def rows(chunks):
    """name -> (setup() -> state, run(state)) pairs; run consumes all chunks."""
    ref = 0.0

    def yardstick(_):
        for c in chunks:
            np.add.reduce(c)

    def partial_sums(_):
        for c in chunks:
            PartialSums.of(c)

    def moments_plain(_):
        for c in chunks:
            reduce_chunk(c, ref)

    def moments_scratch(scratch):
        for c in chunks:
            reduce_chunk(c, ref, scratch)

    def both(r):
        # What the statistics room does a chunk: the six sums and the moments
        # in one pass (SumsReducer).
        for c in chunks:
            r(c, ref)

    def welch(_):
        w = WelchSpectrum(RATE)
        for c in chunks:
            w.feed(c)
        w.take()

    def minute(_):
        acc = MinuteSpectra(RATE)
        t = 1_700_000_000.0
        for c in chunks:
            acc.add(t, c)
            t += 1.0
        acc.flush()

    def envelope(_):
        e = EnvelopeSpectrum(RATE, band=(2000, 5000))
        for c in chunks:
            e.feed(c)
        e.take()

    def everything(r):
        acc = MinuteSpectra(RATE)
        e = EnvelopeSpectrum(RATE, band=(2000, 5000))
        t = 1_700_000_000.0
        for c in chunks:
            r(c, ref)
            acc.add(t, c)
            e.feed(c)
            t += 1.0
        acc.flush()
        e.take()

    return [
        ("yardstick: numpy.sum per chunk", lambda: None, yardstick),
        ("existing PartialSums.of (6 sums)", lambda: None, partial_sums),
        ("moments reduce_chunk (Σd¹..⁴, min, max)", lambda: None, moments_plain),
        ("moments reduce_chunk (scratch buffers)", lambda: (np.empty(RATE), np.empty(RATE)), moments_scratch),
        ("six sums + moments, one pass (SumsReducer)", SumsReducer, both),
        ("Welch spectrum (N=32768, 50 %)", lambda: None, welch),
        ("MinuteSpectra.add (Welch + minute split)", lambda: None, minute),
        ("envelope spectrum (2–5 kHz band)", lambda: None, envelope),
        ("all: sums + moments + spectrum + envelope", SumsReducer, everything),
    ]


def per_minute_costs(x, repeats):
    """Milliseconds per minute spectrum for the steps done once a minute."""
    w = WelchSpectrum(RATE)
    w.feed(x)
    fine = w.take_fine()
    e = EnvelopeSpectrum(RATE, band=(2000, 5000))
    e.feed(x)
    env = e.take()
    meta = M.resolve("m", "s", "VIB", M.validate_entries([
        {"match": "m/*", "rate": RATE, "rpm": 1500, "bearing": BEARING_6205,
         "bands": {"low": [10, 1000], "high": [1000, 10000]}}]))
    out = {}
    for name, fn in (("lines_of (16385 bins → 1600 float32 lines)",
                      lambda: lines_of(fine, RATE / 2.56, 1600)),
                     ("features (velocity, bands, 5 peaks, orders, bearing tones)",
                      lambda: features(fine, meta, env))):
        best = float("inf")
        for _ in range(repeats * 5):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = best * 1000
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer seconds and repeats")
    ap.add_argument("--seconds", type=int, default=None,
                    help="seconds of 25.6 kHz signal per pass (default 60, quick 10)")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    seconds = args.seconds or (10 if args.quick else 60)
    repeats = args.repeats or (3 if args.quick else 7)

    sig = FaultSignal(RATE, "outer_race", rpm=1500, level=0.5, seed=1)
    x = sig.read(seconds * RATE)
    chunks = [np.ascontiguousarray(x[i:i + RATE]) for i in range(0, x.size, RATE)]
    # Sanity: the moments reducer agrees with PartialSums on what both compute.
    m = Moments.of(chunks[0], 0.0)
    assert abs(m.rms - PartialSums.of(chunks[0]).rms) < 1e-12

    table = rows(chunks)
    best = {name: float("inf") for name, _, _ in table}
    for _ in range(repeats):
        for name, setup, run in table:
            state = setup()
            t0 = time.perf_counter()
            run(state)
            best[name] = min(best[name], time.perf_counter() - t0)

    n = x.size
    yard = n / best[table[0][0]]
    print("Analytics benchmark: %d s of 25,600 samples/s in 1-s chunks, best of %d; %s"
          % (seconds, repeats, machine_info()))
    print()
    print("| row | samples/s | × real time (1 sensor) | vs yardstick |")
    print("| --- | ---: | ---: | ---: |")
    for name, _, _ in table:
        rate = n / best[name]
        print("| %s | %s | %s | %s |" % (
            name, "{:,.0f}".format(rate), "{:,.0f}".format(rate / RATE),
            "1.00" if name == table[0][0] else "%.3f (%.1f× slower)" % (rate / yard, yard / rate)))
    print()
    print("| once a minute | ms |")
    print("| --- | ---: |")
    for name, ms in per_minute_costs(x[:60 * RATE] if x.size >= 60 * RATE else x, repeats).items():
        print("| %s | %.2f |" % (name, ms))
    all_rate = n / best[table[-1][0]]
    print()
    print("One core running every analytics step keeps up with %s samples/s "
          "(%.0f sensors at 25.6 kHz, %.0f DAQs of 4 sensors)."
          % ("{:,.0f}".format(all_rate), all_rate / RATE, all_rate / RATE / 4))


if __name__ == "__main__":
    main()
