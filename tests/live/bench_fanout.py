"""Measure (not a test): server-side cost of one ``update`` tick to N clients
with NS sensors (env, default 4), and of the hot ``LiveService.second`` call.
Run it with several NS to see whether the per-client cost stays flat as
sensors are added.

    [NS=32] .venv/bin/python tests/live/bench_fanout.py [clients] [updates]

ROOT (env) runs another checkout's tsrmon (with PYTHONPATH=ROOT), for a before/after.
"""

import os
import subprocess
import sys
import tempfile
import time
import timeit

ROOT = os.environ.get("ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from twisted.internet import reactor, task  # noqa: E402

from tests.live.conftest import FakeDAQ, LiveServer, make_config  # noqa: E402
from tsrmon.stats.sums import PartialSums  # noqa: E402

NS = int(os.environ.get("NS", "4"))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    updates = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    clock = task.Clock()
    clock.advance(1_800_000_000)
    import pathlib
    server = LiveServer(make_config(pathlib.Path(tempfile.mkdtemp()), live={"INTERVAL": 1}), clock).start()
    server.hub.claim("m1", FakeDAQ())
    sums = PartialSums.of([0.1] * 30)
    per_call = min(timeit.repeat(lambda: server.live.second("m1", "vib1", "VIB", 0.0, sums), number=100_000, repeat=3)) / 100_000
    server.live.namespace("m1").windows.clear()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/live/many_clients.py"),
                             str(server.port.getHost().port), str(n), str(updates)],
                            stdout=subprocess.PIPE, text=True)
    ticks = []

    def wait_ready():
        line = proc.stdout.readline()
        assert line.strip() == "READY", line
        reactor.callFromThread(run)

    def run():
        for i in range(updates):
            for s in range(NS):
                server.bus.second("m1", f"s{s}", "VIB", clock.seconds(), sums)
            t = time.perf_counter()
            if i == updates - 1 and os.environ.get("PROFILE"):
                import cProfile
                cProfile.runctx("clock.advance(1)", globals(), {"clock": clock}, sort="tottime")
            else:
                clock.advance(1)  # 4 updates broadcast to every client
            ticks.append(time.perf_counter() - t)
        reactor.callInThread(finish)

    def finish():
        out = proc.stdout.read()
        proc.wait()
        reactor.callFromThread(report, out)

    def report(out):
        best = min(ticks)
        print(f"LiveService.second: {per_call * 1e6:.2f} us/call")
        print(f"tick ({NS} updates x {n} clients): best {best * 1e3:.2f} ms, "
              f"median {sorted(ticks)[len(ticks) // 2] * 1e3:.2f} ms "
              f"= {best / (NS * n) * 1e6:.2f} us per client message; clients rc={proc.returncode}")
        reactor.stop()

    reactor.callInThread(wait_ready)
    reactor.run()


if __name__ == "__main__":
    main()
