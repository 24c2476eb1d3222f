"""Decoder benchmark: the safe DAQ decoder against ``pickle.loads``.

    .venv/bin/python bench/decoder.py [--quick]

Shapes: the deployed frame (2 sensors x 30 floats, protocol 4, ``5C 6F``
terminated) and a 4 x 25,600-float chunk.  Rows:

- ``pickle.loads``: the unsafe baseline on exactly the frame bytes (it needs
  frames already cut, which the deployed stream does not allow safely);
- ``restricted Unpickler``: ``find_class`` refusing everything (not safe on
  its own: a 9-byte LONG_BINPUT makes CPython allocate gigabytes);
- ``walker + loads (cold)``: every frame walked opcode by opcode;
- ``framer (stream)``: what the daemon runs, a stream of frames fed in 64 KiB
  reads; frames with a known skeleton take the shape-cache path;
- ``framer + schema``: plus the event check and finite test;
- ``framer, events``: what the daemon runs (``events=True``): frames of a
  known shape are decoded by ``struct`` straight into hub-ready events
  (``fastpath.py``); the per-frame work of ingest before the hub.

Two more rows run the protocol in process (no socket): ``protocol -> hub``
at the deployed shape with no rooms, and full-rate frames (4 x 25,600
floats, 1 MiB reads) through protocol -> hub -> statistics, the daemon's
CPU per sample at full rate with raw CSV and spectra off.

Rows are timed interleaved (one pass of every row per repeat, best of the
repeats) so that load from other processes hits them alike.  Relative
throughput is against ``pickle.loads`` on the same frames.
"""

import argparse
import io
import os
import pickle
import random
import sys
import time

# One BLAS thread, as the daemon runs (twisted/plugins/tsrmon_plugin.py), for
# the statistics row: effective only if numpy is not loaded yet.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tsrmon.ingest import schema  # noqa: E402
from tsrmon.ingest.framing import EVENT, OK, PickleFramer  # noqa: E402
from tsrmon.ingest.opcodes import DONE, Limits  # noqa: E402
from tsrmon.ingest.safepickle import PickleWalk  # noqa: E402


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError("globals refused")


def frames(sensors, n_floats, count, seed=1):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        data = {f"sensor{i}": {"type": "VIB", "data": [rng.gauss(0, 0.3) for _ in range(n_floats)]}
                for i in range(sensors)}
        out.append(pickle.dumps(("DataUpdate", data), protocol=4))
    return out


def best(fn, repeat):
    """Best CPU time of ``repeat`` runs (process time: the machine is shared,
    and wall time would mostly measure the other processes)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def run(label, sensors, n_floats, count, repeat):
    pickles = frames(sensors, n_floats, count)
    stream = b"".join(p + b"\\o" for p in pickles)
    limits = Limits(max_frame_bytes=16 * 1024 * 1024)

    def loads():
        for p in pickles:
            pickle.loads(p)

    def restricted():
        for p in pickles:
            _NoGlobals(io.BytesIO(p)).load()

    def walker_cold():
        for p in pickles:
            w = PickleWalk(0, limits)
            assert w.walk(p) == DONE
            pickle.loads(p)

    def feed(framer, data, handle, step=65536):
        """64 KiB reads, each batch handled and dropped as the daemon does
        (keeping every decoded frame alive would benchmark the GC)."""
        n = 0
        for i in range(0, len(data), step):
            items = framer.feed(data[i:i + step])
            handle(items)
            # An EVENT may stand for a run of frames of one shape (DataFrame.frames).
            n += sum(getattr(item[1], "frames", 1) if item[0] == EVENT else 1 for item in items)
        assert n == count, (n, count)

    def framer_stream():
        feed(PickleFramer(limits), stream, lambda items: None)

    def framer_schema():
        known = set()

        def handle(items):
            for item in items:
                if item[0] == OK:
                    schema.from_pickle(item[1], item[2], known)
        feed(PickleFramer(limits), stream, handle)

    def framer_events():
        known = set()

        def handle(items):
            for item in items:
                if item[0] == OK:
                    schema.from_pickle(item[1], item[2], known)
        feed(PickleFramer(limits, events=True), stream, handle)

    rows = [("pickle.loads", loads), ("restricted Unpickler", restricted),
            ("walker + loads (cold)", walker_cold), ("framer (stream)", framer_stream),
            ("framer + schema", framer_schema), ("framer, events", framer_events)]
    times = {name: [] for name, _ in rows}
    for _ in range(repeat):
        for name, fn in rows:
            times[name].append(best(fn, 1))
    results = [(name, min(times[name])) for name, _ in rows]
    RESULTS[label] = {name: count / t for name, t in results}
    base = results[0][1]
    size = len(pickles[0])
    print(f"\n{label}: {count} frames of {size} bytes ({sensors} x {n_floats} floats)")
    print(f"{'decoder':<24}{'frames/s':>12}{'M floats/s':>12}{'vs loads':>10}")
    for name, t in results:
        fps = count / t
        print(f"{name:<24}{fps:>12,.0f}{fps * sensors * n_floats / 1e6:>12.1f}{base / t:>9.2f}x")


def run_protocol(count, repeat):
    """The whole ingest path per frame: protocol, schema, hub (no rooms attached)."""
    import tempfile

    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from tsrmon.config import build_config
    from tsrmon.hub.machines import MachineHub
    from tsrmon.ingest.admission import DAQFactory

    pickles = frames(2, 30, count)
    stream = pickle.dumps(("name", "Bench"), protocol=4) + b"\\o" + b"".join(p + b"\\o" for p in pickles)
    config = build_config({}, None, tempfile.mkdtemp())

    def once():
        clock = Clock()
        hub = MachineHub(config, clock)
        proto = DAQFactory(config, hub, clock).buildProtocol(None)
        proto.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1)))
        for i in range(0, len(stream), 65536):
            proto.dataReceived(stream[i:i + 65536])
        assert hub.machines["Bench"].frames == count

    t = min(best(once, 1) for _ in range(repeat))
    RESULTS["protocol"] = count / t
    print(f"\nprotocol -> hub (no rooms), deployed shape: {count / t:,.0f} frames/s")


def run_fullrate_stats(count, repeat):
    """Full-rate frames (4 x 25,600 floats) through protocol -> hub ->
    statistics (six sums + moments, an in-memory store), fed in 1 MiB reads
    as the daemon reads such a DAQ: the daemon's per-sample CPU at full rate
    with raw CSV and spectra off, minus the socket."""
    import tempfile

    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from tsrmon.config import build_config
    from tsrmon.hub.machines import MachineHub
    from tsrmon.ingest.admission import DAQFactory
    from tsrmon.stats.memory import MemoryStore
    from tsrmon.stats.service import StatsService

    pickles = frames(4, 25600, min(count, 20))
    stream = pickle.dumps(("name", "Bench"), protocol=4) + b"\\o" + b"".join(
        pickles[i % len(pickles)] + b"\\o" for i in range(count))
    config = build_config({"DAQ": {"MAX_BUFFER_BYTES": 64 * 1024 * 1024}}, None, tempfile.mkdtemp())
    step = 1024 * 1024

    def once():
        clock = Clock()
        clock.advance(1.7e9)
        stats = StatsService(config, clock, [], MemoryStore())
        hub = MachineHub(config, clock, stats=stats)
        proto = DAQFactory(config, hub, clock).buildProtocol(None)
        proto.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1)))
        for i in range(0, len(stream), step):
            proto.dataReceived(stream[i:i + step])
            clock.advance(0.01)  # seconds roll as in the daemon
        stats._reduce_pending(second_done=True)
        assert stats.samples == count * 4 * 25600, stats.samples

    t = min(best(once, 1) for _ in range(repeat))
    RESULTS["fullrate-stats"] = count * 4 * 25600 / t
    print(f"\nprotocol -> hub -> statistics, 4 x 25,600 floats: {count * 4 * 25600 / t / 1e6:,.1f} M samples/s "
          f"(CPU time, one core)")


RESULTS = {}


def bench_rows(quick=False, workdir=None):
    """Rows for ``python -m bench``: the daemon's decode path vs pickle.loads."""
    main(["--quick"] if quick else [])
    rows = []
    for label, n in (("deployed shape", 60), ("large chunks", 4 * 25600)):
        r = RESULTS[label]
        ratio = r["framer, events"] / r["pickle.loads"]
        rows.append({"row": f"decoder-{'deployed' if n == 60 else 'fullrate'}",
                     "figure": f"safe decoder vs pickle.loads, {label}",
                     "value": f"{ratio:.2f}x", "target": "≥ 0.5x", "pass": ratio >= 0.5,
                     "detail": f"{r['framer, events']:,.0f} frames/s ({r['framer, events'] * n / 1e6:.1f} M floats/s) "
                               f"vs {r['pickle.loads']:,.0f}"})
    rows.append({"row": "decoder-protocol", "figure": "protocol → hub (no rooms), deployed shape, frames/s",
                 "value": round(RESULTS["protocol"]), "target": "", "pass": True,
                 "detail": "CPU time, one core"})
    large = RESULTS["large chunks"]["pickle.loads"] * 4 * 25600
    rows.append({"row": "decoder-fullrate-stats",
                 "figure": "protocol → hub → statistics, 4×25,600 floats, M samples/s", "target": "",
                 "value": round(RESULTS["fullrate-stats"] / 1e6, 1), "pass": True,
                 "detail": f"CPU time, one core, 1 MiB reads; {RESULTS['fullrate-stats'] / large:.2f}x "
                           f"pickle.loads of the same frames ({large / 1e6:.1f} M samples/s)"})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames (a smoke run)")
    args = parser.parse_args(argv)
    k = 10 if args.quick else 1
    print(f"Python {sys.version.split()[0]}")
    run("deployed shape", 2, 30, 20000 // k, 7)
    run("large chunks", 4, 25600, 40 if k == 1 else 20, 5)  # enough frames that the first (cold) walk does not dominate
    run_protocol(20000 // k, 3)
    run_fullrate_stats(200 // k, 3)


if __name__ == "__main__":
    main()
