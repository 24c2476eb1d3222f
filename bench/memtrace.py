"""Where does the daemon's RSS go?  The soak's load against an in-process daemon under tracemalloc.

    .venv/bin/python -m bench.memtrace [--minutes 6] [--warmup 2] [--top 15]

Builds the service tree with ``makeService`` in this process (tracemalloc
on, 1 frame per traceback to keep its own overhead small), feeds it the
soak's DAQs from other processes, and prints every minute the RSS next to
the bytes Python has allocated (tracemalloc) -- growth of RSS that Python
does not see is C-level (SQLite's page caches, malloc fragmentation).  At the
end it prints the source lines whose allocations grew most since the
warm-up.  Diagnostics only: tracemalloc slows the daemon severalfold.
"""

import argparse
import os
import sys
import tempfile
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.load import PacedFeeders  # noqa: E402
from bench.proc import rss_mb  # noqa: E402
from bench.soak import plant_groups  # noqa: E402
from tests.daemon.harness import Daemon  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--warmup", type=float, default=2.0, help="minutes before the baseline snapshot")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)

    from twisted.internet import reactor

    from tsrmon.config import load_config
    from tsrmon.service import makeService

    tmp = tempfile.mkdtemp(prefix="tsrmon-memtrace-")
    # Daemon only writes the config file here (same keys as the soak); nothing is started.
    cfg = Daemon(tmp, overrides={"DATABASE": {"FLUSH": 10}})
    config = load_config(cfg.config_path)
    os.chdir(tmp)
    tracemalloc.start(1)
    top = makeService(config, reactor)
    top.startService()
    state = {"feeders": None, "base": None, "t0": time.time()}

    def line(label):
        cur, _peak = tracemalloc.get_traced_memory()
        print(f"{time.time() - state['t0']:6.0f} s {label}: RSS {rss_mb(os.getpid()):7.1f} MB, "
              f"Python-traced {cur / 2**20:7.1f} MB", flush=True)

    def start_feeders():
        groups = [g[:4] for g in plant_groups()]
        state["feeders"] = PacedFeeders("127.0.0.1", cfg.tcp_port, groups).start()
        line("feeders on")

    def baseline():
        state["base"] = tracemalloc.take_snapshot()
        line("baseline")

    def finish():
        line("end")
        snap = tracemalloc.take_snapshot()
        diffs = snap.compare_to(state["base"], "lineno")
        print(f"top {args.top} growth since the baseline (by source line):")
        for d in diffs[:args.top]:
            print(f"  {d.size_diff / 1024:+9.1f} KiB {d.count_diff:+8d} blocks  {d.traceback[0]}")
        state["feeders"].stop()
        top.stopService().addBoth(lambda _: reactor.stop())

    reactor.callLater(0.5, start_feeders)
    reactor.callLater(args.warmup * 60, baseline)
    for k in range(1, int(args.minutes) + 1):
        reactor.callLater(k * 60, line, "tick")
    reactor.callLater(args.minutes * 60, finish)
    reactor.run()
    print(f"work folder: {tmp}")


if __name__ == "__main__":
    main()
