"""Measure (not a test): server-side cost of one ``update`` tick to N clients
with NS sensors (env, default 4), and of the hot ``LiveService.second`` call:
the tick itself, and from its start until every client's bytes are in the
kernel (wall time and the reactor thread's CPU time; the reactor turns in
between, so bytes the tick only buffered count when its doWrite sent them).
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
                             str(server.port.getHost().port), str(n), str(updates * NS)],
                            stdout=subprocess.PIPE, text=True)
    ticks = []  # (tick wall, tick CPU, to every client's bytes in the kernel: wall, CPU)

    def wait_ready():
        line = proc.stdout.readline()
        assert line.strip() == "READY", line
        reactor.callFromThread(reactor.callLater, 0.3, run, 0)

    def run(i):
        if i == updates:
            reactor.callInThread(finish)
            return
        for s in range(NS):
            server.bus.second("m1", f"s{s}", "VIB", clock.seconds(), sums)
        transports = [s.ws.transport for s in server.live.engine.sessions.values() if s.ws is not None]
        t, c = time.perf_counter(), time.thread_time()
        if i == updates - 1 and os.environ.get("PROFILE"):
            import cProfile
            cProfile.runctx("clock.advance(1)", globals(), {"clock": clock}, sort="tottime")
        else:
            clock.advance(1)  # NS updates broadcast to every client
        tick = (time.perf_counter() - t, time.thread_time() - c)

        def drained():
            # Twisted's buffers empty: every byte of the tick is in the kernel
            # (sent in the tick, or by the reactor's doWrite passes since).
            if any(x.connected and (x._tempDataLen or x.offset != len(x.dataBuffer)) for x in transports):
                reactor.callLater(0, drained)
                return
            ticks.append(tick + (time.perf_counter() - t, time.thread_time() - c))
            reactor.callLater(0.2, run, i + 1)  # the clients read it meanwhile
        drained()

    def finish():
        out = proc.stdout.read()
        proc.wait()
        reactor.callFromThread(report, out)

    def report(out):
        def ms(k):
            v = sorted(x[k] for x in ticks)
            return f"best {v[0] * 1e3:.2f} / median {v[len(v) // 2] * 1e3:.2f} ms"
        print(f"LiveService.second: {per_call * 1e6:.2f} us/call")
        print(f"tick ({NS} updates x {n} clients): wall {ms(0)}, CPU {ms(1)}; clients rc={proc.returncode}")
        print(f"tick to every client's bytes in the kernel: wall {ms(2)}, CPU {ms(3)}")
        reactor.stop()

    reactor.callInThread(wait_ready)
    reactor.run()


if __name__ == "__main__":
    main()
