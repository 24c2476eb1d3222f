"""Float-to-CSV-text throughput: which formatter the raw CSV writer uses.

Each method turns frames of floats into ``<prefix><float>\\r\\n`` rows (the
deployed ``HH:MM:SS,<value>`` layout) and must give text that parses back
to the very same floats.  Short runs only (about ``--seconds`` per method)::

    .venv/bin/python bench/csv_format.py            # default: 0.5 s per method
    .venv/bin/python bench/csv_format.py --seconds 1 --frame 30

Numbers are floats (= CSV rows) per second on one core.  The last rows time
the real writer (:class:`tsrmon.rawlog.service.RawCSVService`) writing 2 x 30
float frames to files in a temp folder, in M samples/s: wall-clock
throughput; per CPU-second of the daemon process (all its threads) and of
the worker process; and what raw CSV adds to the daemon's CPU per sample
(compared with the ``off`` row, DATA.ENABLED false: the same feeding loop
with ``write()`` returning at once).  CPU numbers are the ones to compare on
a busy machine; wall-clock ones depend on the load.
"""

import argparse
import os
import random
import struct
import sys
import tempfile
import time

import numpy as np
import orjson

PREFIX = "12:34:56,"
BPREFIX = PREFIX.encode()
SEP = "\r\n" + PREFIX
BSEP = SEP.encode()


def repr_rows(values):
    return "".join([PREFIX + repr(v) + "\r\n" for v in values]).encode()


def repr_join(values):
    return (PREFIX + SEP.join(map(repr, values)) + "\r\n").encode()


def float_repr_join(values):
    return (PREFIX + SEP.join(map(float.__repr__, values)) + "\r\n").encode()


def percent_g17(values):
    # %.17g round-trips but is longer (0.1 -> 0.10000000000000001)
    return (PREFIX + SEP.join(["%.17g" % v for v in values]) + "\r\n").encode()


def orjson_list_memoryview(values):
    # what tsrmon.rawlog.rows does: no copy for the brackets
    return b"".join([BPREFIX, memoryview(orjson.dumps(values).replace(b",", BSEP))[1:-1], b"\r\n"])


def writer_format_values(values):
    from tsrmon.rawlog.rows import format_values
    out = []
    format_values(BPREFIX, values, out)
    return b"".join(out)


def orjson_list(values):
    return BPREFIX + orjson.dumps(values)[1:-1].replace(b",", BSEP) + b"\r\n"


def orjson_numpy(values):
    arr = np.asarray(values, dtype=np.float64)
    return BPREFIX + orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].replace(b",", BSEP) + b"\r\n"


def numpy_char_mod(values):
    arr = np.asarray(values, dtype=np.float64)
    return (PREFIX + SEP.join(np.char.mod("%.17g", arr).tolist()) + "\r\n").encode()


def numpy_astype_str(values):
    arr = np.asarray(values, dtype=np.float64)
    return (PREFIX + SEP.join(arr.astype(str).tolist()) + "\r\n").encode()


def numpy_savetxt(values):
    import io
    buf = io.BytesIO()
    np.savetxt(buf, np.asarray(values, dtype=np.float64), fmt=PREFIX + "%.17g", newline="\r\n")
    return buf.getvalue()


def numpy_format_float(values):
    f = np.format_float_positional
    return (PREFIX + SEP.join([f(v, unique=True) for v in values]) + "\r\n").encode()


METHODS = [
    ("repr per row (str concat)", repr_rows),
    ("repr join (map(repr))", repr_join),
    ("float.__repr__ join", float_repr_join),
    ("'%.17g' join", percent_g17),
    ("orjson list + replace", orjson_list),
    ("orjson + replace, memoryview", orjson_list_memoryview),
    ("tsrmon rawlog.rows.format_values", writer_format_values),
    ("orjson numpy + replace", orjson_numpy),
    ("numpy char.mod('%.17g')", numpy_char_mod),
    ("numpy astype(str)", numpy_astype_str),
    ("numpy savetxt %.17g", numpy_savetxt),
    ("numpy format_float_positional", numpy_format_float),
]


def vibration(n, rng):
    """Vibration-like values in g: what the DAQs send (full 17-digit doubles)."""
    return [rng.gauss(0.0, 0.3) for _ in range(n)]


def sample(n, rng):
    """Vibration-like values plus 10% awkward magnitudes (tiny, huge)."""
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.9:
            out.append(rng.gauss(0.0, 0.3))
        elif r < 0.95:
            out.append(rng.gauss(0.0, 1e-6))
        else:
            out.append(rng.uniform(-1, 1) * 10.0 ** rng.randint(-300, 300))
    return out


def check(fn, values):
    text = fn(values).decode()
    rows = text.split("\r\n")
    assert rows[-1] == ""
    parsed = [float(r.split(",", 1)[1]) for r in rows[:-1]]
    # bit-exact, so -0.0 must come back as -0.0
    return struct.pack(f"<{len(values)}d", *parsed) == struct.pack(f"<{len(values)}d", *values)


def timeit(fn, arg, seconds):
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            fn(arg)
        n += 10
        now = time.perf_counter()
        if now >= deadline:
            return n, now - start


def bench_methods(seconds, frame, batch):
    rng = random.Random(1)
    # one flush of one file groups many frames of one second into a batch
    edge = [0.0, -0.0, 5e-324, 1.7976931348623157e308, 1e16, 1e-5]
    datasets = [("vibration", vibration(frame * batch, rng) + edge),
                ("mixed", sample(frame * batch, rng) + edge)]
    print(f"{frame * batch + len(edge)} floats per call ({batch} frames x {frame} + edge cases); "
          f"M floats/s for: {', '.join(name for name, _ in datasets)}")
    for name, fn in METHODS:
        rates = []
        ok = True
        for _, values in datasets:
            ok = ok and check(fn, values)
            calls, took = timeit(fn, values, seconds / 2)
            rates.append(calls * len(values) / took / 1e6)
        print(f"  {name:34s} " + "  ".join(f"{r:7.2f}" for r in rates)
              + f"  round-trip {'ok' if ok else 'FAILED'}")


def bench_service(seconds, frame, sensors):
    """The real writer: inline (one core, no reactor), thread pool, worker process."""
    from twisted.internet import defer, task

    from bench.proc import cpu_seconds
    from tsrmon.config import build_config
    from tsrmon.rawlog.service import RawCSVService

    rng = random.Random(2)
    chunk = 5000  # frames per sensor per flush: 0.1 s at 50,000 frames/s
    # unique lists (a real decoder makes a new list per frame; marshal would
    # otherwise send repeats as back-references)
    pool = [[rng.gauss(0.0, 0.3) for _ in range(frame)] for _ in range(chunk * sensors)]
    names = [f"s{i}" for i in range(sensors)]

    def feed(svc, t, first, count):
        write = svc.write
        for i in range(first, first + count):
            t += 2e-5
            for k, s in enumerate(names):
                write("bench", s, pool[k * chunk + i], t)
        return t

    baseline = {}  # fmt -> daemon CPU-seconds per sample with DATA.ENABLED false

    @defer.inlineCallbacks
    def run(reactor, mode, fmt, tmp):
        config = build_config({"DATA": {"PATH": tmp, "TIME_FORMAT": fmt, "MIN_FREE_MB": 0,
                                        "ENABLED": mode != "off"},
                               "TIME": {"ZONE": "Asia/Seoul"}})
        clock = task.Clock()
        clock.advance(1_800_000_000)
        if mode in ("inline", "off"):
            svc = RawCSVService(config, clock, None)
        else:
            # One worker process: the per-CPU-second figures are per process.
            svc = RawCSVService(config, clock, reactor, worker=mode, workers=1)
        svc.startService()
        yield svc.flush()  # start the worker before timing
        t = clock.seconds()
        n = 0
        inflight = []
        cpu0 = time.process_time()
        # The worker is idle here (its replies are in): read its CPU from /proc.
        child0 = cpu_seconds(svc._workers[0].pid) if mode == "process" else 0.0
        wall0 = time.perf_counter()
        end = wall0 + seconds
        while time.perf_counter() < end:
            for first in range(0, chunk, 500):
                t = feed(svc, t, first, 500)
                if first + 500 >= chunk:
                    inflight.append(svc.flush())
                # let the reactor run (pipe writes, replies) as between real frames
                yield task.deferLater(reactor, 0, lambda: None)
            n += chunk * sensors * frame
            if len(inflight) > 1:  # keep one flush queued behind the running one
                yield inflight.pop(0)
        yield defer.DeferredList(inflight)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        child = (cpu_seconds(svc._workers[0].pid) - child0) if mode == "process" else 0.0
        yield svc.stopService()
        c = svc.counters()
        if mode == "off":
            baseline[fmt] = cpu / n
            print(f"  off     {fmt}: DATA.ENABLED false (the feeding loop alone): "
                  f"{n / cpu / 1e6:5.2f} M samples per CPU-second")
            return
        assert c["rows_written"] == n, (c, n)
        child_text = f", worker process {n / child / 1e6:5.2f}" if child else ""
        added = (cpu / n - baseline[fmt]) * 1e9
        print(f"  {mode:7s} {fmt}: {n / wall / 1e6:5.2f} M samples/s wall "
              f"({n / wall / frame / sensors / 1e3:4.0f} k frames/s of {sensors}x{frame}); "
              f"per CPU-second: daemon {n / cpu / 1e6:5.2f}{child_text} M samples; "
              f"raw CSV adds {added:4.0f} ns/sample to the daemon")

    @defer.inlineCallbacks
    def main(reactor):
        for mode in ("off", "inline", "thread", "process"):
            for fmt in ("hms", "iso"):
                with tempfile.TemporaryDirectory() as tmp:
                    yield run(reactor, mode, fmt, tmp)

    task.react(main)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=0.5, help="time per method")
    p.add_argument("--frame", type=int, default=30, help="floats per sensor per frame")
    p.add_argument("--batch", type=int, default=100, help="frames formatted per call")
    p.add_argument("--sensors", type=int, default=2)
    p.add_argument("--no-service", action="store_true", help="skip the writer rows")
    a = p.parse_args()
    print(f"python {sys.version.split()[0]}, orjson {orjson.__version__}, numpy {np.__version__}")
    bench_methods(a.seconds, a.frame, a.batch)
    if not a.no_service:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        bench_service(a.seconds * 4, a.frame, a.sensors)


if __name__ == "__main__":
    main()
